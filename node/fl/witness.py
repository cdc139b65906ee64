"""The default rule's feature-clip witnesses on a chain.

The feature clip takes its medians with one row per recent sender (:mod:`learning.round`): a
sender none of whose updates a round accepts stands by the feature-group norms of its last
accepted update. Whose update that is comes from final blocks alone (``Window.witness``: sender ->
(height, update id)), so every node agrees on it whatever it holds; the rows themselves are
computed from the updates' bodies, which a node holds (every update it admitted or fetched to
check a block) or fetches from peers like any update a block names. They are cached by id, at most
one per witnessed sender, so a round costs a dictionary lookup per sender, not a pass over its
update; a node that ran the round whose block made them witnesses computed their rows then, from
the bodies that round had decoded. A node that can obtain a body neither locally nor from a peer
cannot re-run the round: that is a LookupError, unavailability rather than anyone's fault, as for a
missing model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from learning.aggregation import WitnessRows
from learning.aggregation.clustering import DEFAULT_FEATURE_CLIP
from learning.round import feature_norms, witness_rows
from learning.settings import FLSettings
from node.fl.update import ModelUpdate


def witnessed(settings: FLSettings) -> bool:
    """Does the genesis rule clip feature by feature (the default rule with its feature clip on)?
    Only then does the chain keep witnesses."""
    return settings.rule == "clustering" and float(settings.rule_params.get("feature_clip", DEFAULT_FEATURE_CLIP)) > 0


class FeatureWitness:
    """Mixin of :class:`node.fl.app.FLApp`: the witness rows a round's rule gets."""

    window: Any
    groups: np.ndarray
    settings: FLSettings
    _witness_norms: dict[bytes, np.ndarray]
    _round_norms: dict[bytes, np.ndarray]  # the rows of the updates the last round run here accepted

    async def round_witness(self, updates: list[ModelUpdate], producer: str = "") -> WitnessRows | None:
        """The round's witness rows; bodies this node lacks are fetched (``producer`` first), and the
        norms of new ones are computed (stored bodies decoded too) in a worker thread, as the round
        itself is."""
        book = self.window.witness           # a final block may replace the record meanwhile
        bodies: dict[bytes, ModelUpdate | bytes] = {}
        for _, uid in book.values():
            if uid not in self._witness_norms:
                bodies[uid] = (self.pool.get(uid) or self.blobs.get(uid, "update")  # type: ignore[attr-defined]
                               or await self.obtain(uid, producer))  # type: ignore[attr-defined]
        rows = await asyncio.to_thread(lambda: {uid: self._norms_of(u) for uid, u in bodies.items()})
        self._witness_norms.update(rows)
        if self.window.witness is not book:  # a block became final meanwhile: the new record, from what is here
            return self.witness_here(updates)
        return self._rows(book, updates)

    def witness_here(self, updates: list[ModelUpdate]) -> WitnessRows | None:
        """The round's witness rows from what this node holds; LookupError if it lacks a body."""
        for _, uid in self.window.witness.values():
            if uid not in self._witness_norms:
                update = self.local_update(uid)  # type: ignore[attr-defined]
                if update is None:
                    raise LookupError(f"update {uid.hex()[:12]}, a feature-clip witness, is not available")
                self._witness_norms[uid] = self._norms_of(update)
        return self._rows(self.window.witness, updates)

    def _rows(self, book: dict[str, tuple[int, bytes]], updates: list[ModelUpdate]) -> WitnessRows | None:
        rows = {s: (h, self._witness_norms[uid]) for s, (h, uid) in book.items()}
        return witness_rows(rows, [u.sender for u in updates])

    async def remember_round(self, updates: list[ModelUpdate], accepted: set[bytes]) -> None:
        """Keep the rows of the updates a round just run here accepted (computed in a worker thread
        from the bodies the round decoded): once its block is final they are witnesses, and a node
        that ran the round need not decode them again. One round's rows at most."""
        if witnessed(self.settings):
            self._round_norms = await asyncio.to_thread(
                lambda: {u.id: self._norms_of(u) for u in updates if u.id in accepted})

    def forget_lapsed_witnesses(self) -> None:
        """Keep the cached rows of the current witnesses only (taking those the last round run here
        computed)."""
        current = {uid for _, uid in self.window.witness.values()}
        known = {**self._round_norms, **self._witness_norms}
        self._witness_norms = {uid: row for uid, row in known.items() if uid in current}
        self._round_norms = {}

    def _norms_of(self, update: ModelUpdate | bytes) -> np.ndarray:
        """The feature-group norms of an update, or of a stored one's bytes (decoded here, which
        :meth:`round_witness` runs in a worker thread: a sparse body costs most of a millisecond
        to decode, and a round has a new witness per sender the block before it accepted)."""
        if isinstance(update, bytes):
            update = self.decode_update(update)  # type: ignore[attr-defined]
        return feature_norms(update.dense()[None, :], self.groups)[0]
