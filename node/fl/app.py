"""Federated learning as the chain's application.

The global model advances one block at a time. A proposing delegate aggregates the admitted
updates with the genesis rule and names, in its payload, every update considered (weight,
accepted or rejected and why), the values the rule's ``evaluate`` asked for, equivocation
evidence and the new model's hash. Every other delegate fetches the updates it lacks, re-runs the
same round and votes for the block only if it reaches the same decisions and model hash
(:mod:`node.fl.verify`). A proposal that provably fails this check is kept as a fault; the next
proposal of this node carries it (for ``FAULT_CARRY_HEIGHTS`` heights, until a final block
punishes it), and its producer loses stake. A round that cannot produce a
finite model, or that delegates could not agree on (``BlockContext.retry``), is skipped with the
reason on record: the chain never stops for the application. The app hash is the model's hash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from consensus.app import BlockContext, BlockOutcome, PayloadVerdict
from gossip.codec import DecodeError, pack, unpack
from gossip.crypto import sha256
from learning.client import norm_bound
from learning.dense import DenseNet
from learning.models import Net, build_model, feature_groups, get_flat, set_flat
from learning.round import WITNESS_HORIZON, drift, holds_after, witness_after
from learning.standing import applies, standing_after
from learning.train import evaluate
from node.fl.blobs import BlobError, BlobStore, model_bytes, parse_model
from node.fl.data import NodeData
from node.fl.hierarchy_check import HierarchyChecks
from node.fl.intake import UpdateIntake
from node.fl.pool import UpdatePool
from node.fl.round import NOT_AGREED, Equivocation, Payload, RoundResult, block_round
from node.fl.settings import FLSettings
from node.fl.task import Task
from node.fl.update import ModelUpdate
from node.fl.verify import FAULT_CARRY_HEIGHTS, BadPayload, Disagreement, EvalLog, EvalReplay, fault_key
from node.fl.window import Window
from node.fl.witness import FeatureWitness, witnessed

log = logging.getLogger("fedchain.fl")

TOPIC_UPDATE = "fl/update"
KEY_MODEL = b"fl/model"
KEY_WINDOW = b"fl/window"
RESULTS_PER_HEIGHT = 16
"""Re-run rounds kept per height (a proposer may sign many payloads; a missing one is re-run)."""
MAX_FAULT_BYTES = 32 * 1024
"""A bad payload larger than this is refused but not carried as a fault: the faults a block carries
(at most one per delegate and height) must leave room in it for everything else."""

Fetch = Callable[[bytes, str], Awaitable[bytes | None]]
FetchModel = Callable[[bytes], Awaitable[bytes | None]]


def round_key(height: int) -> bytes:
    """Application record of what the block at ``height`` considered (served by ``/fl/updates``)."""
    return b"fl/round/" + height.to_bytes(8, "big")


class FLApp(UpdateIntake, HierarchyChecks, FeatureWitness):
    def __init__(self, settings: FLSettings, chain_id: str, data: NodeData, blobs: BlobStore, *,
                 fetch: Fetch | None = None, fetch_model: FetchModel | None = None, max_message: int = 8 << 20,
                 model_retention: int = 64, update_retention: int = 0, node_id: str = "") -> None:
        self.settings = settings
        self.node_id = node_id  # picks the clusters of a hierarchical round this node re-runs
        self.task = Task.from_dict(settings.task) if settings.task else None
        self.chain_id = chain_id
        self.data = data
        self.blobs = blobs
        self.fetch = fetch
        self.fetch_model = fetch_model
        self.max_message = max_message
        self.model_retention = model_retention  # heights of past global models kept
        self.update_retention = update_retention  # heights of updates kept; 0 = all (new nodes verify history)
        self.pool = UpdatePool()
        self.early: dict[tuple[str, int], ModelUpdate] = {}  # updates on the next model, kept until it is final here
        self.early_bytes = 0
        self.window = Window()
        self.metrics: Counter[str] = Counter()
        self.state_view: Callable[[], Any] | None = None  # set by the node: the chain's final state
        self._nets = threading.local()  # one evaluation network per thread (see accuracy)
        net = self.new_net()
        # one BLAS thread and one torch thread: room for many daemons per core (OpenBLAS's idle
        # threads spin, at the main thread's priority); an operator's OPENBLAS_NUM_THREADS wins
        if not (os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")):
            threadpool_limits(1, user_api="blas")
        if not isinstance(net, DenseNet):  # a torch model (the dense ones are numpy)
            import torch
            torch.set_num_threads(1)
        self.model = get_flat(net)
        self.groups = feature_groups(net)  # the model's layout, for the rule's feature clip
        self._witness_norms = {}           # update id -> its feature-group norms (node.fl.witness)
        self._round_norms = {}
        self.model_hash = b""
        self.model_height = 0
        self.model_missing = False  # the chain moved to a model whose weights this node has yet to fetch
        self.norm_bound = norm_bound(settings, self.dim)
        self.model_since_s: dict[int, float] = {}
        self.listeners: list[Callable[[], None]] = []
        self._results: dict[int, OrderedDict[bytes, RoundResult]] = {}
        self._faults: dict[tuple[int, str], tuple[list, bytes]] = {}
        self._oldest: tuple[bytes, np.ndarray] | None = None  # the window's oldest base (hash, weights)

    # ----- model helpers ------------------------------------------------------------------
    def new_net(self) -> Net:
        s, d = self.settings, self.data
        if self.task is not None:
            return self.task.build(s.seed)
        return build_model(s.model, d.input_shape, d.num_classes, s.seed)

    @property
    def dim(self) -> int:
        return int(self.model.size)

    def accuracy(self, vector: np.ndarray, which: str = "test") -> tuple[float, float]:
        """(accuracy, loss) of ``vector`` on the node's ``val``, the ``test`` or the ``public_eval`` set.

        A proposer's round, a verifier's re-run and the evaluation of each new model call this
        from their own threads, several times a block; a network built once per thread and loaded
        with ``vector`` on each call spares a model construction (a seeded initialisation) per call."""
        net = getattr(self._nets, "net", None)
        if net is None:
            net = self._nets.net = self.new_net()
        set_flat(net, vector)
        ds = getattr(self.data, which)
        return evaluate(net, ds.x, ds.y)

    def model_evaluator(self) -> Callable[[np.ndarray], float]:
        """The round's ``evaluate``: accuracy of a candidate global model on the public set."""
        return lambda vector: self.accuracy(vector, "public_eval")[0]

    async def round_reference(self) -> np.ndarray | None:
        """The round's reference (:func:`learning.round.drift`): the current model minus the oldest
        base of the window, fetched from a peer if this node lacks it; LookupError if nobody has it."""
        oldest = self._oldest_base()
        if oldest != self.model_hash and (self._oldest is None or self._oldest[0] != oldest):
            vector = await self._vector(oldest)
            if vector is not None:
                self._oldest = (oldest, vector)
        return self._reference_here()

    def _oldest_base(self) -> bytes:
        return self.window.recent[min(self.window.recent)] if self.window.recent else self.model_hash

    def _reference_here(self) -> np.ndarray | None:
        """The round's reference from what this node holds; LookupError if it lacks the oldest base.
        Every node derives it from the same final blocks, so proposer and verifiers agree on it."""
        oldest = self._oldest_base()
        if oldest == self.model_hash:
            return None
        if self._oldest is None or self._oldest[0] != oldest:
            vector = self._local_vector(oldest)
            if vector is None:
                raise LookupError(f"global model {oldest.hex()[:12]}, the oldest base of the window, is not available")
            self._oldest = (oldest, vector)
        return drift(self.model, self._oldest[1])

    async def run_round_async(self, updates: list[ModelUpdate], height: int, trust: dict[str, float],
                              evaluate: Callable[[np.ndarray], float]) -> RoundResult:
        """The round on the current model, in a worker thread (the model is taken before it starts);
        a model it produces is on disk before this returns, so it can be named by a final block."""
        reference = await self.round_reference()
        witness = await self.round_witness(updates)
        args = (self.settings, self.model, self.model_height, self.model_hash, updates, trust, height, evaluate,
                self.groups, reference, self.window.held, witness, self.window.standing)
        result = await asyncio.to_thread(block_round, *args)
        await self.remember_round(updates, {c.update_id for c in result.payload.considered if c.accepted})
        for partial in result.partials:  # served by hash, like models, to verifiers that do not re-run its cluster
            if partial is not None:
                self.blobs.put("model", model_bytes(partial), height)
        if result.payload.new_hash != result.payload.base_hash:
            await self.blobs.put_durable("model", model_bytes(result.model), height)
        return result

    async def _ensure_model(self) -> None:
        """Fetch the current model's weights if this node only knows their hash; LookupError if no
        peer serves them."""
        if not self.model_missing:
            return
        want = self.model_hash
        raw = await self.fetch_model(want) if self.fetch_model else None
        try:
            vector = parse_model(raw, self.max_message) if raw is not None and sha256(raw) == want else None
        except BlobError:
            vector = None
        if vector is None or vector.size != self.dim:
            raise LookupError(f"global model {want.hex()[:12]} is not available from peers")
        if self.model_hash == want:
            self.blobs.put("model", raw, self.model_height)
            self.model, self.model_missing = vector, False
            log.info("fetched global model %s from a peer", want.hex()[:12])

    # ----- Application interface ----------------------------------------------------------
    def init_chain(self, app_state: dict, records: Mapping[bytes, bytes]) -> None:
        if KEY_MODEL in records:
            self.model_hash, self.model_height = unpack(records[KEY_MODEL], 1024)
            self.window = Window.decode(records[KEY_WINDOW])
            blob = self.blobs.get(self.model_hash, "model")
            if blob is None:
                self.model_missing = True
                log.warning("global model %s at height %d is missing from the blob store; fetching it from peers",
                            self.model_hash.hex()[:12], self.model_height)
            else:
                self.model = parse_model(blob, self.max_message)
        else:
            self.model_hash = self.blobs.put("model", model_bytes(self.model), 0)
            self.window = Window(recent={0: self.model_hash})
        now = time.monotonic()
        self.model_since_s = {h: now for h in self.window.recent}
        log.info("global model %s at height %d (%d parameters)", self.model_hash.hex()[:12], self.model_height, self.dim)

    def app_hash(self) -> bytes:
        return self.model_hash

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        await self._ensure_model()
        faults = self._faults_to_carry(ctx)
        if ctx.retry and ctx.attempt >= 1:
            log.warning("height %d: an earlier proposal did not finalize; proposing to skip the round", ctx.height)
            base = self.model_hash
            result = RoundResult(Payload(self.settings.rule, base, base, (), faults=faults, skipped=NOT_AGREED),
                                 self.model)
        else:
            result = await self._aggregate(ctx, faults)
        data = result.payload.encode()
        self._remember(ctx.height, sha256(data), result)
        return data

    async def _aggregate(self, ctx: BlockContext, faults: tuple) -> RoundResult:
        st, s = ctx.state, self.settings
        evidence = self._evidence_to_carry()
        updates = self.pool.select(self.window.recent, st.is_member, self.window.punished.__contains__,
                                   self.model_height, s.max_updates, s.selection, st.trust, ctx.height,
                                   self.model_since_s)
        recorder = EvalLog(self.model_evaluator())
        result = await self.run_round_async(updates, ctx.height, self.trust_of(st, updates), recorder)
        return RoundResult(replace(result.payload, evals=tuple(recorder.values), equivocations=evidence,
                                   faults=faults), result.model, result.partials)

    def _evidence_to_carry(self) -> tuple[Equivocation, ...]:
        """Known equivocations whose base is still in the window and that nobody punished yet."""
        found = [Equivocation(sender, h, first, second.id) for (sender, h), first, second in self.pool.evidence()
                 if (sender, h) not in self.window.punished and self.window.recent.get(h) == second.base_hash]
        return tuple(found[:self.settings.max_updates])

    async def verify_payload(self, ctx: BlockContext, payload: bytes) -> PayloadVerdict:
        key = sha256(payload)
        if key in self._results.get(ctx.height, {}):
            return PayloadVerdict(True)
        try:
            await self._ensure_model()
            result = await self.check_payload(ctx, payload)
        except BadPayload as exc:
            self.metrics["bad_payloads"] += 1
            # a proposal checked after its height was decided here fails on the base: not a fault
            if ctx.signed_header is not None and len(payload) <= MAX_FAULT_BYTES \
                    and ctx.height == self.model_height + 1:
                self._faults[(ctx.height, ctx.producer)] = (ctx.signed_header.to_wire(), payload)
            return PayloadVerdict(False, str(exc))
        except Disagreement as exc:
            self.metrics["payloads_not_agreed"] += 1
            log.warning("height %d: %s", ctx.height, exc)
            return PayloadVerdict(False, str(exc))
        except LookupError as exc:
            self.metrics["payloads_unavailable"] += 1
            return PayloadVerdict(False, str(exc))
        self._remember(ctx.height, key, result)
        return PayloadVerdict(True)

    def finalize_block(self, ctx: BlockContext, payload: bytes) -> BlockOutcome:
        """Apply a final payload. It is final, so it is applied even if this node never verified
        it (its result is then re-run from local updates, or the model is fetched later)."""
        h, s = ctx.height, self.settings
        result = self._results.get(h, {}).get(sha256(payload)) or self._recompute(ctx, payload)
        p = result.payload if result is not None else self._decode_final(payload)
        if result is not None:
            # queued (a model this node computed while verifying is on disk already); also keeps an
            # unchanged model from being pruned while it is current
            self.blobs.put("model", model_bytes(result.model), h)
            self.model, self.model_missing = result.model, False
        elif p.new_hash != self.model_hash:
            self.model_missing = True
            self.metrics["models_to_fetch"] += 1
            log.error("height %d: cannot re-run the final round here; its model %s will be fetched from peers",
                      h, p.new_hash.hex()[:12])
        self.model_hash, self.model_height = p.new_hash, h
        claims = {(c.sender, c.base_height): c.update_id for c in p.considered}
        punished = {(e.sender, e.base_height) for e in p.equivocations}
        self.window.advance(h, p.new_hash, s.max_staleness, claims, punished)
        self.window.held = holds_after(self.window.held, [c.sender for c in p.considered],
                                       [c.accepted for c in p.considered], [c.reason for c in p.considered], h)
        if witnessed(s):
            self.window.witness = witness_after(self.window.witness, [c.sender for c in p.considered],
                                                [c.update_id for c in p.considered],
                                                [c.accepted for c in p.considered], h)
            self.forget_lapsed_witnesses()
        if applies(s):
            self.window.standing = standing_after(self.window.standing, [c.sender for c in p.considered],
                                                  [c.accepted for c in p.considered], [c.score for c in p.considered], h)
        self.pool.settle(claims, punished)
        self.pool.prune(h - s.max_staleness)
        if self.state_view is not None:
            self.admit_early()
        self.model_since_s = {k: v for k, v in self.model_since_s.items() if k in self.window.recent}
        self.model_since_s[h] = time.monotonic()
        self._results = {k: v for k, v in self._results.items() if k > h}
        faulted = {fault_key(w) for w, _ in p.faults}
        self._faults = {k: v for k, v in self._faults.items() if k[0] > h - FAULT_CARRY_HEIGHTS and k not in faulted}
        self.blobs.prune("model", h - self.model_retention)
        if self.update_retention:  # a witness's body is kept while it may stand (based up to max_staleness before)
            self.blobs.prune("update", h - max(self.update_retention, WITNESS_HORIZON + s.max_staleness))
        changes = self._stake_changes(p)
        accepted = sum(c.accepted for c in p.considered)
        self.metrics["updates_accepted"] += accepted
        self.metrics["updates_rejected"] += len(p.considered) - accepted
        self.metrics["faults_punished"] += len(p.faults)
        self.metrics["equivocations_punished"] += len(p.equivocations)
        self.metrics["rounds_skipped"] += bool(p.skipped)
        writes = [(KEY_MODEL, pack([p.new_hash, h])), (KEY_WINDOW, self.window.encode()),
                  (round_key(h), json.dumps(p.to_json(), sort_keys=True).encode())]
        for listener in self.listeners:
            listener()
        event = {"type": "fl_round", "height": h, "model_hash": p.new_hash.hex(), "accepted": accepted,
                 "rejected": len(p.considered) - accepted, "faults": len(p.faults),
                 "equivocations": len(p.equivocations), "skipped": p.skipped or None}
        return BlockOutcome(app_hash=p.new_hash, stake_changes=changes, events=[event], writes=writes)

    def _stake_changes(self, p: Payload) -> list[tuple[str, int, str]]:
        """Rewards and penalties of a final payload (a skipped round rewards and penalizes no
        update; faults and equivocations are punished all the same)."""
        s = self.settings
        changes = [] if p.skipped else [
            (c.sender, s.reward_accepted, "update accepted") if c.accepted
            else (c.sender, -s.penalty_rejected, f"update rejected: {c.reason}") for c in p.considered]
        for header_wire, _ in p.faults:
            key = fault_key(header_wire)
            if key is not None:  # None only in a final payload this node could not verify
                changes.append((key[1], -s.penalty_bad_block, "proposed a wrong model"))
        changes += [(e.sender, -s.penalty_equivocation, "equivocated: two updates for one base")
                    for e in p.equivocations]
        return changes

    # ----- results of re-run rounds -------------------------------------------------------
    def _remember(self, height: int, key: bytes, result: RoundResult) -> None:
        if height <= self.model_height:
            return  # the height was decided while the round ran
        kept = self._results.setdefault(height, OrderedDict())
        kept[key] = result
        kept.move_to_end(key)
        while len(kept) > RESULTS_PER_HEIGHT:
            kept.popitem(last=False)

    def _recompute(self, ctx: BlockContext, payload: bytes) -> RoundResult | None:
        """Re-run a final round from updates held here, with the recorded evaluations (the block is
        final: no tolerance applies). None when it cannot be reproduced here."""
        try:
            p = Payload.decode(payload, self.max_message)
        except DecodeError:
            return None
        if self.model_missing or p.base_hash != self.model_hash:
            return None
        if p.new_hash == p.base_hash:
            return RoundResult(p, self.model)
        updates = [self.local_update(c.update_id) for c in p.considered]
        if any(u is None for u in updates):
            return None
        try:
            reference, witness = self._reference_here(), self.witness_here(updates)
        except LookupError:
            return None
        self.metrics["rounds_rerun_at_finalize"] += 1
        replay = EvalReplay(self.model_evaluator(), p.evals, len(self.data.public_eval))  # final: not checked
        result = block_round(self.settings, self.model, self.model_height, self.model_hash, updates,
                             self.trust_of(ctx.state, updates), ctx.height, replay, self.groups, reference,
                             self.window.held, witness, self.window.standing)
        return RoundResult(p, result.model) if result.payload.new_hash == p.new_hash else None

    def _decode_final(self, payload: bytes) -> Payload:
        """A final payload this node could not re-run; one it cannot even decode changes nothing."""
        try:
            return Payload.decode(payload, self.max_message)
        except DecodeError as exc:
            self.metrics["unreadable_final_payloads"] += 1
            log.error("a final FL payload cannot be decoded (%s); the model stays", exc)
            return Payload(self.settings.rule, self.model_hash, self.model_hash, ())
