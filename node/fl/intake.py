"""Updates coming in: decoding, the admission rules, the gossip validator, fetching by id.

Admission is what every node checks before it forwards, pools or aggregates an update, and what a
verifier re-checks for every update a payload lists, so every rule here is computed identically
on every CPU (integer comparisons, and the exactly rounded norm of :mod:`learning.bounds`). Cheap
checks run before costly ones: the signature is checked last.

Bounds: an update's sample count may not exceed what its sender declared when it registered
(capped by the genesis ``max_samples``; genesis members and registrations without a count
declare the cap), since it is the update's averaging weight; its L2 norm may not exceed what an
honest node's clipped, noised, compressed update can reach
(:func:`learning.bounds.update_norm_bound`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gossip import Verdict
from gossip.codec import DecodeError, unpack
from node.fl.pool import EQUIVOCATION
from node.fl.update import ModelUpdate

log = logging.getLogger("fedchain.fl")

FETCHES_AT_ONCE = 8
"""Updates a verifier fetches from its peers at the same time."""

EARLY_BYTES = 8 << 20
"""Bytes of updates kept for a model this node has yet to finalize (one per sender)."""


class UpdateIntake:
    """Mixin of :class:`node.fl.app.FLApp`: the update side of the application."""

    def decode_update(self, raw: bytes) -> ModelUpdate:
        if len(raw) > self.settings.max_update_bytes:
            raise DecodeError(f"update of {len(raw)} bytes exceeds {self.settings.max_update_bytes}")
        return ModelUpdate.from_wire(unpack(raw, self.settings.max_update_bytes), self.dim)

    def sample_bound(self, state: Any, sender: str) -> int | None:
        """The most samples an update of ``sender`` may claim (None: not a member)."""
        declared = state.member_samples(sender)
        if declared is None:
            return None
        cap = self.settings.max_samples
        return min(declared, cap) if declared else cap

    def check_update(self, u: ModelUpdate, state: Any, *, base: bool = True) -> str | None:
        """Why ``u`` may not be aggregated now (None if it may): the admission rules (``base=False``
        leaves out the base model, for an update on a model this node has yet to finalize)."""
        if u.chain_id != self.chain_id:
            return "wrong_chain"
        if u.sparse.dim != self.dim:
            return "wrong_shape"
        bound = self.sample_bound(state, u.sender)
        if bound is None:
            return "unregistered"
        problem = base and self.window.base_problem(u.base_height, u.base_hash, self.model_height,
                                                     self.settings.max_staleness)
        if problem:
            return problem
        if u.num_samples > bound:
            return "too_many_samples"
        if u.norm > self.norm_bound:
            return "norm_bound"
        if not u.verify_signature():
            return "bad_signature"
        return None

    def _keep_early(self, update: ModelUpdate) -> None:
        """Keep an update on the next model (this node is one block behind) that passes every other
        check: one per sender, within :data:`EARLY_BYTES`; :meth:`admit_early` takes it in once
        that block is final here, so a proposal listing it needs no fetch from a peer."""
        size = len(update.encode())
        if (update.base_height != self.model_height + 1 or update.base_key in self.early
                or self.early_bytes + size > EARLY_BYTES or self.check_update(update, self.state_view(), base=False)):
            return
        self.early[update.base_key] = update
        self.early_bytes += size

    def admit_early(self) -> None:
        """After a final block: admit the kept updates whose base this node now knows."""
        ready = [u for u in self.early.values() if u.base_height <= self.model_height]
        for u in ready:
            del self.early[u.base_key]
            self.early_bytes -= len(u.encode())
            if self.check_update(u, self.state_view()) is None and self.admit(u) is None:
                self.metrics["updates_kept_until_base_final"] += 1

    def admit(self, update: ModelUpdate) -> str | None:
        """Take a checked update into the pool (or, if it equivocates, keep it as evidence) and the
        blob store, where peers fetch it by id. Returns the pool's refusal, if any."""
        refused = self.pool.add(update, self.window.claims.get(update.base_key))
        if refused is None or refused == EQUIVOCATION:
            self.blobs.put("update", update.encode(), update.base_height)
        if refused == EQUIVOCATION:
            log.warning("%s... equivocates: two different updates for base %d", update.sender[:12], update.base_height)
        return refused

    def awaits_round(self, update: ModelUpdate) -> bool:
        """True while ``update`` can still be aggregated: its base is usable and no final block
        considered an update of its sender for that base yet."""
        s = self.settings
        return (self.window.base_problem(update.base_height, update.base_hash, self.model_height,
                                         s.max_staleness) is None
                and update.base_key not in self.window.claims)

    def update_blob(self, update_id: bytes) -> bytes | None:
        pending = self.pool.get(update_id)
        return pending.encode() if pending is not None else self.blobs.get(update_id, "update")

    def local_update(self, update_id: bytes) -> ModelUpdate | None:
        """An update this node holds (pending, evidence, or stored), or None."""
        update = self.pool.get(update_id)
        if update is not None:
            return update
        raw = self.blobs.get(update_id, "update")
        return self.decode_update(raw) if raw is not None else None

    def update_seq(self, update_id: bytes) -> int | None:
        """The creation time (``seq``, microseconds) of an update this node holds, or None.

        Read from the stored message's header alone: the update was checked when it was admitted,
        and decoding its sparse body (what :meth:`local_update` does) costs most of a millisecond
        per update on the event loop, once for every update of every final block."""
        update = self.pool.get(update_id)
        if update is not None:
            return update.seq
        raw = self.blobs.get(update_id, "update")
        if raw is None:
            return None
        try:
            return ModelUpdate.seq_of_wire(unpack(raw, self.settings.max_update_bytes))
        except DecodeError:
            return None

    async def prefetch(self, update_ids: list[bytes], producer: str) -> None:
        """Fetch the listed updates this node lacks, :data:`FETCHES_AT_ONCE` at a time. A node back
        from an outage or a partition may lack every update a block lists, and fetched one after
        another each costs a round trip while the block's check holds the chain's lock (a
        verifier then misses the round). Once one is not to be had the block fails its check
        anyway, so no more are fetched (a proposer listing made-up ids costs us a few fetches, not
        one per id); :meth:`obtain` reports it."""
        missing = [u for u in dict.fromkeys(update_ids)
                   if self.pool.get(u) is None and not self.blobs.has(u, "update")]
        gate, unavailable = asyncio.Semaphore(FETCHES_AT_ONCE), asyncio.Event()

        async def one(update_id: bytes) -> None:
            async with gate:
                if unavailable.is_set():
                    return
                try:
                    await self.obtain(update_id, producer)
                except LookupError:
                    unavailable.set()

        await asyncio.gather(*(one(u) for u in missing))

    async def obtain(self, update_id: bytes, producer: str) -> ModelUpdate:
        """The update ``update_id``, fetched from peers (the producer first) if this node lacks it;
        raises LookupError when no peer serves it (unavailability is nobody's provable fault)."""
        update = self.local_update(update_id)
        if update is not None:
            return update
        raw = await self.fetch(update_id, producer) if self.fetch else None
        if raw is None:
            raise LookupError(f"update {update_id.hex()[:12]} is not available from peers")
        try:
            update = self.decode_update(raw)
        except DecodeError as exc:
            raise LookupError(f"update {update_id.hex()[:12]} fetched malformed: {exc}") from exc
        if update.id != update_id:
            raise LookupError(f"peer served another update for {update_id.hex()[:12]}")
        self.blobs.put("update", raw, update.base_height)
        return update

    def screen_update(self, sender: str, size: int) -> Verdict:
        """Whether an announced update is worth pulling: only members submit updates (its size
        is bounded by the topic's ``max_body``); everything else is checked on the body."""
        return Verdict.ACCEPT if self.state_view().member_samples(sender) is not None else Verdict.REJECT

    async def validate_update_msg(self, env: Any) -> Verdict:
        """Gossip validator of ``fl/update``: forward only what a delegate could aggregate, and a
        first proof of equivocation (so the evidence spreads); never penalize a relay for an
        update it could not have judged differently."""
        try:
            update = self.decode_update(env.body)
        except DecodeError as exc:
            reason = "oversized" if "exceeds" in str(exc) else "non_finite" if "finite" in str(exc) else "malformed"
            self.metrics[f"update_rejected:{reason}"] += 1
            return Verdict.REJECT
        if self.pool.get(update.id) is not None or self.window.claims.get(update.base_key) == update.id:
            return Verdict.IGNORE  # a repeat (e.g. a re-announcement): no need to check it again
        reason = self.check_update(update, self.state_view())
        if reason == "unknown_base" and update.base_height > self.model_height:
            self._keep_early(update)
            return Verdict.IGNORE  # we are behind; not the sender's fault
        if reason:
            self.metrics[f"update_rejected:{reason}"] += 1
            return Verdict.IGNORE if reason == "stale_base" else Verdict.REJECT
        refused = self.admit(update)
        if refused == EQUIVOCATION:
            self.metrics["update_rejected:equivocation"] += 1
            return Verdict.ACCEPT
        if refused:  # a repeat, known evidence, or our pool is full: nothing the relay did wrong
            if refused == "full":
                self.metrics["update_rejected:pool_full"] += 1
            return Verdict.IGNORE
        self.metrics["updates_received"] += 1
        return Verdict.ACCEPT

    async def deliver_update(self, env: Any) -> None:
        """Updates enter the pool during validation; nothing more to do on delivery."""
