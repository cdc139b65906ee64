"""Model updates in the simulation: the FL application's data path without the learning.

Training and aggregation would cost each simulated node seconds of CPU per round, so the
simulated application keeps what decides dissemination and inclusion and drops the arithmetic:

* A trainer publishes its update as a signed gossip message on a pulled topic (a body of
  ``size`` bytes whose first 8 say the height it was trained on): announce-then-pull, as
  ``fl/update``.
* Every node pools the newest update of each sender (as ``node.fl.pool``), refusing one based
  more than ``STALE_HEIGHTS`` heights back.
* The proposing delegate names the pooled updates no block took yet in its payload (at most
  ``MAX_PER_BLOCK``); another delegate votes for it only if it holds every named update or can
  fetch it (an ``/fl/updates/{id}``-like fetch over the simulated link: from the block's producer
  first, then from its peers, as ``FLService.fetch_update``), checks the sender's signature and
  the id, and that no update is named twice or already in a recent block. The payload also
  extends :class:`consensus.app.CounterApp`'s digest chain (over the ids), so a disagreeing
  payload changes the app hash.
* Every update a node admitted or fetched is kept in a store that survives a crash (the FL
  daemon's blob store), for ``SERVED_HEIGHTS`` heights: a producer that restarts still serves
  the updates its proposal named, which delegates locked on that proposal re-propose.

:class:`UpdateLedger` follows every honest update to its fate for the invariant "every honest
update is in a final block or was dropped with a reason".
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from consensus.app import BlockContext, BlockOutcome, PayloadVerdict
from gossip import Envelope, Verdict
from gossip.codec import DecodeError, pack, unpack
from gossip.crypto import sha256, verify
from gossip.envelope import Announcement
from node.fl.intake import FETCHES_AT_ONCE

TOPIC = "sim/update"
MAX_PER_BLOCK = 64
STALE_HEIGHTS = 8
"""An update trained on a height more than this far below the block being built is stale (the
FL app's staleness bound plays this part)."""
MAX_BODY = 1 << 20
SERVED_HEIGHTS = 256
"""Heights a node keeps the updates it admitted or fetched, to serve them (a node syncing a block
re-verifies its payload and fetches the updates it lacks, as FL nodes do from blob stores)."""

FetchUpdate = Callable[[str, bytes], Awaitable[Envelope | None]]
"""(producer node id, update id) -> the update's envelope from the producer or a peer, or None."""
Stored = dict[bytes, tuple[int, Envelope]]
"""Update id -> (the height the node was at when it stored it, the update): the durable store."""
OnFinal = Callable[[int, list[bytes]], None]
"""(height, ids of the updates the final block took)."""


def base_of(body: bytes) -> int:
    return int.from_bytes(body[:8], "big")


def announcement(env: Envelope) -> Announcement:
    """The signed announcement a pulled body arrived under (its signature is ``env``'s)."""
    return Announcement(env.topic, env.sender, env.seq, sha256(env.body), len(env.body), env.signature)


class UpdateApp:
    """The simulated nodes' application (see the module docstring)."""

    KEY_DIGEST = b"sim/digest"
    KEY_HEIGHT = b"sim/height"

    def __init__(self, chain_id: str, fetch: FetchUpdate, shelf: Callable[[bytes], bytes] = bytes,
                 stored: Stored | None = None) -> None:
        """``shelf`` stores a body and returns the copy to keep (the simulation shares one copy
        of each body among its nodes, as if each had it on disk); ``stored`` is the node's durable
        update store (the same dict after a restart)."""
        self.chain_id = chain_id
        self.fetch = fetch
        self.shelf = shelf
        self.pool: dict[str, tuple[bytes, Envelope]] = {}
        """sender -> (id, update): its newest not yet in a block (one per sender: bounded by members)."""
        self.included: dict[bytes, int] = {}
        """id -> height, for the last ``STALE_HEIGHTS`` heights (older updates are stale anyway)."""
        self.stored: Stored = {} if stored is None else stored
        self._fetching = asyncio.Semaphore(FETCHES_AT_ONCE)
        self.height = 0
        self.listeners: list[OnFinal] = []
        self._digest = b""

    # ----- gossip side --------------------------------------------------------------------------

    async def validate(self, env: Envelope) -> Verdict:
        if len(env.body) < 8:
            return Verdict.REJECT
        base = base_of(env.body)
        if not self._fresh(base, self.height + 1) or base > self.height + 2:  # nodes finalize a little apart
            return Verdict.IGNORE
        self.offer(env)
        return Verdict.ACCEPT

    async def deliver(self, env: Envelope) -> None:
        """Pooled on validation."""

    def offer(self, env: Envelope) -> None:
        """Pool ``env`` unless its sender's pooled update is newer or it was already taken."""
        uid = announcement(env).msg_id(self.chain_id)
        held = self.pool.get(env.sender)
        if uid in self.included or (held is not None and held[1].seq >= env.seq):
            return
        self.pool[env.sender] = (uid, self._store(uid, env))

    def _store(self, uid: bytes, env: Envelope) -> Envelope:
        kept = Envelope(env.topic, env.sender, env.seq, self.shelf(env.body), env.signature)
        self.stored[uid] = (self.height, kept)
        return kept

    @staticmethod
    def _fresh(base: int, height: int) -> bool:
        return base >= height - STALE_HEIGHTS

    # ----- consensus side -----------------------------------------------------------------------

    def init_chain(self, app_state: dict, records: Mapping[bytes, bytes]) -> None:
        self._digest = records.get(self.KEY_DIGEST) or sha256(str(app_state.get("seed", "netsim")).encode())
        raw = records.get(self.KEY_HEIGHT)
        self.height = int.from_bytes(raw, "big") if raw else 0
        for h in range(max(1, self.height - STALE_HEIGHTS), self.height + 1):
            for uid in unpack(records.get(self._key(h)) or pack([])):
                self.included[uid] = h

    def app_hash(self) -> bytes:
        return self._digest

    @staticmethod
    def _key(height: int) -> bytes:
        return b"sim/included/" + height.to_bytes(8, "big")

    def _next(self, height: int, ids: list[bytes]) -> bytes:
        return sha256(self._digest + height.to_bytes(8, "big") + b"".join(ids))

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        ids = sorted(uid for uid, e in self.pool.values() if self._fresh(base_of(e.body), ctx.height))
        ids = [i for i in ids if i not in self.included][:MAX_PER_BLOCK]
        return pack([ctx.height, self._next(ctx.height, ids), ids])

    async def verify_payload(self, ctx: BlockContext, payload: bytes) -> PayloadVerdict:
        try:
            height, digest, ids = unpack(payload, max_size=64 + 40 * MAX_PER_BLOCK)
        except (DecodeError, ValueError, TypeError) as exc:
            return PayloadVerdict(False, f"update payload: {exc}")
        if height != ctx.height or not isinstance(ids, list) or len(ids) > MAX_PER_BLOCK:
            return PayloadVerdict(False, "update payload: wrong height or too many updates")
        if len(set(ids)) != len(ids) or any(i in self.included for i in ids):
            return PayloadVerdict(False, "update payload names an update twice")
        missing = [uid for uid in ids if uid not in self.stored]
        fetched = await asyncio.gather(*(self._fetch_one(ctx.producer, uid) for uid in missing))
        for uid, env in zip(missing, fetched):
            if env is None or not self._authentic(env, uid):
                return PayloadVerdict(False, f"update {uid.hex()[:12]} unavailable or not what it claims")
            self._store(uid, env)
        senders = set()
        for uid in ids:
            env = self.stored[uid][1]
            if env.sender in senders or not self._fresh(base_of(env.body), ctx.height):
                return PayloadVerdict(False, f"update {uid.hex()[:12]}: a second one of its sender, or stale")
            senders.add(env.sender)
        if digest != self._next(ctx.height, ids):
            return PayloadVerdict(False, "update payload does not extend the digest chain")
        return PayloadVerdict(True)

    async def _fetch_one(self, producer: str, uid: bytes) -> Envelope | None:
        async with self._fetching:
            return await self.fetch(producer, uid)

    def finalize_block(self, ctx: BlockContext, payload: bytes) -> BlockOutcome:
        _, _, ids = unpack(payload, max_size=64 + 40 * MAX_PER_BLOCK)
        self._digest = self._next(ctx.height, ids)
        self.height = ctx.height
        for uid in ids:
            self.included[uid] = ctx.height
        self.included = {u: h for u, h in self.included.items() if h > ctx.height - STALE_HEIGHTS}
        taken = set(ids)
        for uid in [u for u, (h, _) in self.stored.items() if h <= ctx.height - SERVED_HEIGHTS]:
            del self.stored[uid]
        self.pool = {s: (u, e) for s, (u, e) in self.pool.items()
                     if u not in taken and self._fresh(base_of(e.body), ctx.height + 1)}
        for listener in self.listeners:
            listener(ctx.height, ids)
        writes = [(self.KEY_DIGEST, self._digest), (self.KEY_HEIGHT, ctx.height.to_bytes(8, "big")),
                  (self._key(ctx.height), pack(ids))]
        if ctx.height > STALE_HEIGHTS + 1:
            writes.append((self._key(ctx.height - STALE_HEIGHTS - 1), None))
        return BlockOutcome(app_hash=self._digest, writes=writes)

    def _authentic(self, env: Envelope, uid: bytes) -> bool:
        ann = announcement(env)
        return (env.topic == TOPIC and ann.msg_id(self.chain_id) == uid
                and verify(env.sender, ann.signing_bytes(self.chain_id), env.signature))

    def held(self, uid: bytes) -> Envelope | None:
        """What the ``/fl/updates/{id}`` route would serve: an update this node stored."""
        kept = self.stored.get(uid)
        return kept[1] if kept is not None else None


class DissentingApp(UpdateApp):
    """An application that objects to every payload it did not build, as a node does that lacks
    what checking one needs (an update nobody serves it, a proof it lost in a restart). It votes
    against every other proposal; the blocks a quorum commits must still become final here."""

    async def verify_payload(self, ctx: BlockContext, payload: bytes) -> PayloadVerdict:
        return PayloadVerdict(False, "this node cannot check the payload")


@dataclass
class Published:
    publisher: int
    at_ms: int
    base: int
    chain_height: int
    """The highest height any node held as final when it was published."""
    superseded_at_ms: int | None = None
    final_at_ms: int | None = None
    """When its publisher's node held the block that took it as final."""
    height: int | None = None


@dataclass
class UpdateLedger:
    """The fate of every honest update: taken by a final block, or dropped for a reason.

    A drop reason only counts while the update had no fair chance yet: an update that
    ``STALE_HEIGHTS`` final blocks passed by (counted from two slots after it was published,
    time for it to reach the proposers) before it was superseded, its sender went down or the run
    ended, is ``lost`` whatever else happened to it.
    """

    slot_ms: int
    updates: dict[bytes, Published] = field(default_factory=dict)
    first_final_ms: dict[int, int] = field(default_factory=dict)
    """height -> when the first node held it as final."""
    _latest: dict[int, bytes] = field(default_factory=dict)
    down: dict[int, list[int]] = field(default_factory=dict)
    """node -> when it crashed (each time)."""

    def published(self, uid: bytes, publisher: int, at_ms: int, base: int) -> None:
        previous = self._latest.get(publisher)
        if previous is not None and self.updates[previous].height is None:
            self.updates[previous].superseded_at_ms = at_ms
        self._latest[publisher] = uid
        self.updates[uid] = Published(publisher, at_ms, base, max(self.first_final_ms, default=0))

    def taken(self, node: int, height: int, ids: list[bytes], at_ms: int) -> None:
        self.first_final_ms.setdefault(height, at_ms)
        for uid in ids:
            update = self.updates.get(uid)
            if update is None:
                continue
            update.height = height
            if node == update.publisher and update.final_at_ms is None:
                update.final_at_ms = at_ms

    def crashed(self, node: int, at_ms: int) -> None:
        self.down.setdefault(node, []).append(at_ms)

    def _passed_by(self, u: Published, until_ms: int) -> int:
        return sum(1 for at in self.first_final_ms.values() if u.at_ms + 2 * self.slot_ms < at <= until_ms)

    def fate(self, uid: bytes, end_ms: int) -> str:
        """``included``, or why not: ``stale`` (trained on a height already past the staleness
        bound), ``superseded`` (its sender published a newer one: pools keep one per sender),
        ``sender_down`` (its publisher crashed within a slot, before the announcement got out),
        ``pending`` (the run ended first); ``lost`` when none of these holds or when
        ``STALE_HEIGHTS`` final blocks passed it by first (a violation)."""
        u = self.updates[uid]
        if u.height is not None:
            return "included"
        if u.base + STALE_HEIGHTS < u.chain_height + 1:
            return "stale"
        crash = next((t for t in self.down.get(u.publisher, []) if u.at_ms <= t <= u.at_ms + self.slot_ms), None)
        reason, until = ("superseded", u.superseded_at_ms) if u.superseded_at_ms is not None else \
            ("sender_down", crash) if crash is not None else ("pending", end_ms)
        assert until is not None
        return "lost" if self._passed_by(u, until) >= STALE_HEIGHTS else reason

    def fates(self, end_ms: int) -> dict[bytes, str]:
        return {uid: self.fate(uid, end_ms) for uid in self.updates}

    def to_final_ms(self) -> list[float]:
        return [float(u.final_at_ms - u.at_ms) for u in self.updates.values() if u.final_at_ms is not None]
