"""Federated learning as the chain's application.

The global model advances one block at a time. A proposing delegate aggregates the admitted
updates with the genesis rule and names, in its payload, every update considered (weight,
accepted or rejected and why) and the new model's hash. Every other delegate fetches the updates
it lacks, re-runs the same deterministic round, and votes for the block only if it gets the same
result. A proposal that provably fails this check is kept as a fault; the block that decides the
height carries it, and its producer loses stake. The app hash is the global model's hash.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter, OrderedDict
from dataclasses import replace
from typing import Any, Awaitable, Callable

import numpy as np
import torch

from consensus.app import BlockContext, BlockOutcome, PayloadVerdict
from consensus.types import SignedHeader
from gossip import Verdict
from gossip.codec import DecodeError, pack, unpack
from gossip.crypto import sha256
from learning.models import build_model, get_flat, set_flat
from learning.train import evaluate
from node.fl.blobs import BlobStore, model_bytes, parse_model
from node.fl.data import NodeData
from node.fl.pool import UpdatePool
from node.fl.round import Payload, RoundResult, run_round
from node.fl.settings import FLSettings
from node.fl.update import ModelUpdate

log = logging.getLogger("fedchain.fl")

TOPIC_UPDATE = "fl/update"
KEY_MODEL = b"fl/model"
KEY_RECENT = b"fl/recent"

UPDATES_TABLE = ("CREATE TABLE IF NOT EXISTS fl_updates (height INTEGER NOT NULL, idx INTEGER NOT NULL, "
                 "id BLOB NOT NULL, sender TEXT NOT NULL, weight REAL NOT NULL, accepted INTEGER NOT NULL, "
                 "reason TEXT NOT NULL, score REAL, PRIMARY KEY (height, idx))")

Fetch = Callable[[bytes, str], Awaitable[bytes | None]]


class BadPayload(Exception):
    """A payload that is provably wrong (not merely unverifiable for lack of an update)."""


class FLApp:
    def __init__(self, settings: FLSettings, chain_id: str, data: NodeData, blobs: BlobStore, *,
                 fetch: Fetch | None = None, wrong_model: bool = False, max_message: int = 8 << 20,
                 model_retention: int = 64, update_retention: int = 0) -> None:
        torch.set_num_threads(1)  # determinism of re-run rounds, and room for many daemons per core
        self.settings = settings
        self.chain_id = chain_id
        self.data = data
        self.blobs = blobs
        self.fetch = fetch
        self.wrong_model = wrong_model
        self.max_message = max_message
        self.model_retention = model_retention  # heights of past global models kept
        self.update_retention = update_retention  # heights of updates kept; 0 = all (new nodes verify history)
        self.pool = UpdatePool()
        self.metrics: Counter[str] = Counter()
        self.state_view: Callable[[], Any] | None = None  # set by the node: the chain's final state
        self.model = np.zeros(0, dtype=np.float32)
        self.model_hash = b""
        self.model_height = 0
        self.recent: dict[int, bytes] = {}
        self.model_since_s: dict[int, float] = {}
        self.listeners: list[Callable[[], None]] = []
        self._results: OrderedDict[bytes, RoundResult] = OrderedDict()
        self._faults: dict[tuple[int, str], tuple[list, bytes]] = {}

    # ----- model helpers ------------------------------------------------------------------
    def new_net(self) -> torch.nn.Module:
        s, d = self.settings, self.data
        return build_model(s.model, d.input_shape, d.num_classes, s.seed)

    @property
    def dim(self) -> int:
        return int(self.model.size)

    def accuracy(self, vector: np.ndarray, which: str = "test") -> tuple[float, float]:
        """(accuracy, loss) of ``vector`` on the node's ``val``, the ``test`` or the ``public_eval`` set."""
        net = self.new_net()
        set_flat(net, vector)
        ds = getattr(self.data, which)
        return evaluate(net, ds.x, ds.y)

    def _round(self, updates: list[ModelUpdate], height: int, trust: dict[str, float]) -> RoundResult:
        model = self.model
        lr = np.float32(self.settings.server_lr)

        def evaluate_delta(delta: np.ndarray) -> float:
            return self.accuracy(model + lr * delta, "public_eval")[0]

        return run_round(self.settings, model, self.model_height, self.model_hash, updates, trust, height,
                         evaluate_delta)

    # ----- Application interface ----------------------------------------------------------
    def init_chain(self, app_state: dict, restored: dict[bytes, bytes]) -> None:
        if KEY_MODEL in restored:
            mhash, height = unpack(restored[KEY_MODEL], 1024)
            blob = self.blobs.get(mhash)
            if blob is None:
                raise RuntimeError(f"global model {mhash.hex()[:12]} at height {height} is missing from the blob "
                                   "store; the data dir is inconsistent (move data/ away to resync)")
            self.model, self.model_hash, self.model_height = parse_model(blob, self.max_message), mhash, height
            self.recent = {h: bytes(v) for h, v in unpack(restored[KEY_RECENT], 1 << 20)}
        else:
            self.model = get_flat(self.new_net())
            self.model_hash = self.blobs.put("model", model_bytes(self.model), 0)
            self.recent = {0: self.model_hash}
        now = time.monotonic()
        self.model_since_s = {h: now for h in self.recent}
        log.info("global model %s at height %d (%d parameters)", self.model_hash.hex()[:12], self.model_height, self.dim)

    def app_hash(self) -> bytes:
        return self.model_hash

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        st = ctx.state
        s = self.settings
        updates = self.pool.select(self.recent, st.is_member, self.model_height, s.max_updates, s.selection,
                                   st.trust, ctx.height, self.model_since_s)
        result = await asyncio.to_thread(self._round, updates, ctx.height, self._trust(st, updates))
        faults = tuple(f for (h, _), f in sorted(self._faults.items()) if h == ctx.height)
        payload = replace(result.payload, faults=faults)
        if self.wrong_model:
            log.warning("FAULT wrong_model: proposing a wrong model hash at height %d", ctx.height)
            payload = replace(payload, new_hash=sha256(b"wrong" + payload.new_hash))
        data = payload.encode()
        self._remember(sha256(data), RoundResult(payload, result.model))
        return data

    async def verify_payload(self, ctx: BlockContext, payload: bytes) -> PayloadVerdict:
        key = sha256(payload)
        if key in self._results:
            return PayloadVerdict(True)
        try:
            result = await self._check(ctx, payload)
        except BadPayload as exc:
            self.metrics["bad_payloads"] += 1
            if ctx.signed_header is not None:
                self._faults[(ctx.height, ctx.producer)] = (ctx.signed_header.to_wire(), payload)
            return PayloadVerdict(False, str(exc))
        except LookupError as exc:
            return PayloadVerdict(False, str(exc))
        self._remember(key, result)
        return PayloadVerdict(True)

    def finalize_block(self, ctx: BlockContext, payload: bytes) -> BlockOutcome:
        result = self._results.get(sha256(payload))
        if result is None:
            raise RuntimeError("finalizing an FL payload that was never verified")
        p = result.payload
        s = self.settings
        self.blobs.put("model", model_bytes(result.model), ctx.height)
        self.model, self.model_hash, self.model_height = result.model, p.new_hash, ctx.height
        self.recent = {h: v for h, v in self.recent.items() if h >= ctx.height - s.max_staleness}
        self.recent[ctx.height] = p.new_hash
        self.model_since_s = {h: v for h, v in self.model_since_s.items() if h in self.recent}
        self.model_since_s[ctx.height] = time.monotonic()
        changes = [(c.sender, s.reward_accepted, "update accepted") if c.accepted
                   else (c.sender, -s.penalty_rejected, f"update rejected: {c.reason}") for c in p.considered]
        for header_wire, _ in p.faults:
            producer = SignedHeader.from_wire(header_wire).header.producer
            changes.append((producer, -s.penalty_bad_block, "proposed a wrong model"))
        self.pool.remove([c.update_id for c in p.considered])
        self.pool.prune(ctx.height - s.max_staleness)
        self._faults = {k: v for k, v in self._faults.items() if k[0] > ctx.height}
        self.blobs.prune("model", ctx.height - self.model_retention)
        if self.update_retention:
            self.blobs.prune("update", ctx.height - self.update_retention)
        accepted = sum(c.accepted for c in p.considered)
        self.metrics["updates_accepted"] += accepted
        self.metrics["updates_rejected"] += len(p.considered) - accepted
        self.metrics["faults_punished"] += len(p.faults)
        recent_wire = pack(sorted([h, v] for h, v in self.recent.items()))
        model_wire = pack([p.new_hash, ctx.height])
        rows = [(ctx.height, i, c.update_id, c.sender, c.weight, int(c.accepted), c.reason,
                 c.score if np.isfinite(c.score) else None) for i, c in enumerate(p.considered)]

        def writes(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO app_kv(key, value) VALUES (?, ?)", (KEY_MODEL, model_wire))
            conn.execute("INSERT OR REPLACE INTO app_kv(key, value) VALUES (?, ?)", (KEY_RECENT, recent_wire))
            conn.execute(UPDATES_TABLE)
            conn.executemany("INSERT OR REPLACE INTO fl_updates VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

        for listener in self.listeners:
            listener()
        event = {"type": "fl_round", "height": ctx.height, "model_hash": p.new_hash.hex(),
                 "accepted": accepted, "rejected": len(p.considered) - accepted, "faults": len(p.faults)}
        return BlockOutcome(app_hash=p.new_hash, stake_changes=changes, events=[event], writes=writes)

    # ----- checking payloads and updates --------------------------------------------------
    @staticmethod
    def _trust(state: Any, updates: list[ModelUpdate]) -> dict[str, float]:
        return {u.sender: state.trust(u.sender) for u in updates}

    def _remember(self, key: bytes, result: RoundResult) -> None:
        self._results[key] = result
        while len(self._results) > 64:
            self._results.popitem(last=False)

    async def _check(self, ctx: BlockContext, payload: bytes) -> RoundResult:
        """Re-run the round a payload claims; raises BadPayload if it is provably wrong."""
        try:
            p = Payload.decode(payload, self.max_message)
        except DecodeError as exc:
            raise BadPayload(f"malformed FL payload: {exc}") from exc
        if p.rule != self.settings.rule:
            raise BadPayload(f"payload uses rule {p.rule}, genesis says {self.settings.rule}")
        if p.base_hash != self.model_hash:
            raise BadPayload("payload does not build on the current global model")
        senders = [c.sender for c in p.considered]
        if len(set(senders)) != len(senders):
            raise BadPayload("payload lists a sender twice")
        updates = []
        for c in p.considered:
            update = await self._obtain(c.update_id, ctx.producer)
            reason = self.check_update(update, ctx.state)
            if reason:
                raise BadPayload(f"payload lists an inadmissible update: {reason}")
            if update.sender != c.sender:
                raise BadPayload("payload names the wrong sender for an update")
            updates.append(update)
        for header_wire, fault_payload in p.faults:
            await self._check_fault(ctx, header_wire, fault_payload)
        result = await asyncio.to_thread(self._round, updates, ctx.height, self._trust(ctx.state, updates))
        if result.payload.considered != p.considered or result.payload.new_hash != p.new_hash:
            raise BadPayload("re-running the aggregation gives a different model hash")
        return RoundResult(p, result.model)

    async def _check_fault(self, ctx: BlockContext, header_wire: list, fault_payload: bytes) -> None:
        try:
            sh = SignedHeader.from_wire(header_wire)
        except DecodeError as exc:
            raise BadPayload(f"fault header malformed: {exc}") from exc
        h = sh.header
        if (h.chain_id != self.chain_id or h.height != ctx.height or h.parent_hash != ctx.parent_hash
                or h.payload_hash != sha256(fault_payload) or not sh.verify_signature()
                or h.producer not in ctx.state.delegates):
            raise BadPayload("fault is not a signed proposal of this height")
        fault_ctx = replace(ctx, slot=h.slot, producer=h.producer, signed_header=None)
        try:
            await self._check(fault_ctx, fault_payload)
        except BadPayload:
            return
        raise BadPayload("a listed fault is a valid payload")

    async def _obtain(self, update_id: bytes, producer: str) -> ModelUpdate:
        update = self.pool.get(update_id)
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
        self.admit(update)
        return update

    def admit(self, update: ModelUpdate) -> str | None:
        """Take a checked update into the pool and the blob store (peers fetch it by id)."""
        refused = self.pool.add(update)
        if refused is None:
            self.blobs.put("update", update.encode(), update.base_height)
        return refused

    def update_blob(self, update_id: bytes) -> bytes | None:
        pending = self.pool.get(update_id)
        return pending.encode() if pending is not None else self.blobs.get(update_id)

    def decode_update(self, raw: bytes) -> ModelUpdate:
        if len(raw) > self.settings.max_update_bytes:
            raise DecodeError(f"update of {len(raw)} bytes exceeds {self.settings.max_update_bytes}")
        return ModelUpdate.from_wire(unpack(raw, self.settings.max_update_bytes), self.dim)

    def check_update(self, u: ModelUpdate, state: Any) -> str | None:
        """Why ``u`` may not be aggregated now (None if it may): the admission rules."""
        if u.chain_id != self.chain_id:
            return "wrong_chain"
        if u.sparse.dim != self.dim:
            return "wrong_shape"
        if not state.is_member(u.sender):
            return "unregistered"
        if u.base_height > self.model_height:
            return "unknown_base"
        if u.base_height < self.model_height - self.settings.max_staleness:
            return "stale_base"
        if self.recent.get(u.base_height) != u.base_hash:
            return "unknown_base"
        if not u.verify_signature():
            return "bad_signature"
        return None

    async def validate_update_msg(self, env: Any) -> Verdict:
        """Gossip validator of ``fl/update``: forward only what a delegate could aggregate."""
        try:
            update = self.decode_update(env.body)
        except DecodeError as exc:
            reason = "oversized" if "exceeds" in str(exc) else "non_finite" if "finite" in str(exc) else "malformed"
            self.metrics[f"update_rejected:{reason}"] += 1
            return Verdict.REJECT
        reason = self.check_update(update, self.state_view())
        if reason == "unknown_base" and update.base_height > self.model_height:
            return Verdict.IGNORE  # we are behind; not the sender's fault
        if reason:
            self.metrics[f"update_rejected:{reason}"] += 1
            return Verdict.IGNORE if reason == "stale_base" else Verdict.REJECT
        refused = self.admit(update)
        if refused == "duplicate":
            return Verdict.IGNORE
        if refused:
            self.metrics["update_rejected:duplicate_for_base" if refused.startswith("conflict") else
                         "update_rejected:pool_full"] += 1
            return Verdict.REJECT
        self.metrics["updates_received"] += 1
        return Verdict.ACCEPT

    async def deliver_update(self, env: Any) -> None:
        """Updates enter the pool during validation; nothing more to do on delivery."""
