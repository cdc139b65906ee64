"""Verifying a proposed FL payload by re-running its round.

Three outcomes besides acceptance, kept apart because only one of them may cost anybody stake:

* :class:`BadPayload`: provably wrong on every correct machine, whatever its CPU: malformed, wrong
  rule or base, an inadmissible, repeated or equivocator's update listed, bad equivocation
  evidence, a skip where none is allowed, an ``evaluate`` value outside the tolerance, or a
  different model hash although the re-run reached the same decisions. It is kept as a fault and
  its producer penalized.
* :class:`Disagreement`: the re-run reached other decisions or other scores. Kernels of another
  CPU can cause that, so nobody is punished; the block is not voted for, and if the height stays
  open the next proposer skips the round (``consensus.app.BlockContext.retry``).
* ``LookupError``: an update or the model is not available here. Not a fault either.

Rules that call ``evaluate`` (accuracy on the public evaluation set; BLAS kernels differ per CPU)
are re-run with the proposer's recorded values: the verifier re-evaluates each candidate itself,
accepts a value within :data:`EVAL_TOLERANCE_SAMPLES` samples of the set (beyond
:data:`EVAL_FAULT_SAMPLES` it is a fault, in between only not agreed), and feeds the rule the
proposer's value, so the rule's decisions are the proposer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from consensus.app import BlockContext
from consensus.header import SignedHeader
from gossip.codec import DecodeError, pack
from gossip.crypto import sha256
from node.fl.round import NOT_AGREED, Payload, RoundResult, scores_agree
from node.fl.update import ModelUpdate
from node.fl.window import BaseKey

EVAL_TOLERANCE_SAMPLES = 2
"""How many public evaluation samples a re-evaluated accuracy may differ by (CPU kernels differ)."""
EVAL_FAULT_SAMPLES = 4
"""Beyond this many samples a recorded accuracy is a fault. Between the two it is only not agreed:
two honest verifiers on different CPUs may then never disagree on whether a value is a fault."""


FAULT_CARRY_HEIGHTS = 8
"""A proven fault rides on a delegate's proposals for this many heights after its own. Its producer
may hold the next slot too (the last of one cycle and the first of the next) and decide the height
itself with a retry that leaves the fault out; the next honest proposal of a later height then
carries it. An earlier height's fault is checked against the verifier's own proof of it, so what a
node keeps is bounded by heights, delegates and ``node.fl.app.MAX_FAULT_BYTES``."""


def fault_key(header_wire: list) -> tuple[int, str] | None:
    """(height, producer) of a listed fault's signed header; None if the header is malformed."""
    try:
        h = SignedHeader.from_wire(header_wire).header
    except DecodeError:
        return None
    return h.height, h.producer


class BadPayload(Exception):
    """A payload that is provably wrong (not merely unverifiable or not agreed)."""


class Disagreement(Exception):
    """A re-run that differs in a way the hardware can explain: reject, punish nobody."""


class EvalReplay:
    """The verifier's ``evaluate``: checks each candidate against the proposer's recorded value
    and answers with that value, so the rule decides exactly as it did for the proposer."""

    def __init__(self, evaluate: Callable[[np.ndarray], float], recorded: tuple[float, ...], set_size: int) -> None:
        self.evaluate = evaluate
        self.recorded = recorded
        self.sample = 1.0 / max(1, set_size)
        self.calls = 0
        self.worst = (0.0, "")  # largest difference seen, in samples, and where

    def __call__(self, vector: np.ndarray) -> float:
        i, self.calls = self.calls, self.calls + 1
        own = float(self.evaluate(vector))
        if i >= len(self.recorded):
            return own
        off = abs(own - self.recorded[i]) / self.sample
        if off > self.worst[0]:
            self.worst = (off, f"evaluation {i} recorded as {self.recorded[i]:.4f}, re-evaluated {own:.4f}")
        return self.recorded[i]

    def check(self) -> None:
        off, where = self.worst
        if off > EVAL_FAULT_SAMPLES + 1e-6:
            raise BadPayload(f"an evaluate value is out of tolerance: {where}")
        if off > EVAL_TOLERANCE_SAMPLES + 1e-6:
            raise Disagreement(f"round not agreed: an evaluate value is near the tolerance: {where}")
        if self.calls != len(self.recorded):
            raise Disagreement(f"round not agreed: the rule asked for {self.calls} evaluations, "
                               f"the payload records {len(self.recorded)}")


class EvalLog:
    """The proposer's ``evaluate``: evaluates and records every value, in call order."""

    def __init__(self, evaluate: Callable[[np.ndarray], float]) -> None:
        self.evaluate = evaluate
        self.values: list[float] = []

    def __call__(self, vector: np.ndarray) -> float:
        value = float(self.evaluate(vector))
        self.values.append(value)
        return value


class PayloadChecks:
    """Mixin of :class:`node.fl.app.FLApp`: checking a payload by re-running its round, and the
    faults (proposals proven wrong) a proposal carries."""

    async def check_payload(self, ctx: BlockContext, payload: bytes) -> RoundResult:
        """The round a payload claims, re-run; raises BadPayload, Disagreement or LookupError."""
        try:
            p = Payload.decode(payload, self.max_message)
        except DecodeError as exc:
            raise BadPayload(f"malformed FL payload: {exc}") from exc
        if p.rule != self.settings.rule:
            raise BadPayload(f"payload uses rule {p.rule}, genesis says {self.settings.rule}")
        if p.base_hash != self.model_hash:
            raise BadPayload("payload does not build on the current global model")
        if p.skipped == NOT_AGREED:
            if ctx.attempt < 1:
                raise BadPayload("a round may be skipped as not agreed only after a failed attempt")
            if p.new_hash != p.base_hash or p.considered or p.evals or p.equivocations:
                raise BadPayload("a round skipped as not agreed changes and lists nothing")
            await self._check_faults(ctx, p)
            return RoundResult(p, self.model)
        senders = [c.sender for c in p.considered]
        if len(set(senders)) != len(senders):
            raise BadPayload("payload lists a sender twice")
        banned = await self._check_evidence(ctx, p)
        updates = await self._check_listed(ctx, p, banned)
        await self._check_faults(ctx, p)
        return await self.rerun(ctx, p, updates)

    async def rerun(self, ctx: BlockContext, p: Payload, updates: list[ModelUpdate]) -> RoundResult:
        """Re-run the whole round on the listed updates and compare it with the payload."""
        replay = EvalReplay(self.model_evaluator(), p.evals, len(self.data.public_eval))
        result = await self.run_round_async(updates, ctx.height, self.trust_of(ctx.state, updates), replay)
        mine = result.payload
        replay.check()
        if mine.skipped != p.skipped or [c.decision() for c in mine.considered] != [c.decision() for c in p.considered]:
            raise Disagreement("round not agreed: re-running the aggregation reaches other decisions")
        if mine.new_hash != p.new_hash:
            raise BadPayload("re-running the aggregation gives a different model hash")
        if mine.partials != p.partials:
            raise BadPayload("re-running the aggregation gives other cluster partials")
        if not all(scores_agree(a.score, b.score) for a, b in zip(mine.considered, p.considered)):
            raise Disagreement("round not agreed: suspicion scores differ beyond the tolerance")
        return RoundResult(p, result.model)

    async def _check_evidence(self, ctx: BlockContext, p: Payload) -> set[BaseKey]:
        """Check each equivocation; returns the (sender, base) pairs it bans from this round."""
        banned: set[BaseKey] = set()
        for e in p.equivocations:
            key = (e.sender, e.base_height)
            if key in banned or key in self.window.punished:
                raise BadPayload(f"equivocation of {e.sender[:12]}... at base {e.base_height} is already punished")
            base = self.window.recent.get(e.base_height)
            if base is None or e.first == e.second:
                raise BadPayload("equivocation evidence is not two updates for a base in the window")
            for uid in (e.first, e.second):
                u = await self.obtain(uid, ctx.producer)
                if (u.chain_id, u.sender, u.base_height, u.base_hash) != (self.chain_id, e.sender, e.base_height, base) \
                        or not u.verify_signature():
                    raise BadPayload("equivocation evidence is not two signed updates of its sender for one base")
            banned.add(key)
        return banned

    async def _check_listed(self, ctx: BlockContext, p: Payload, banned: set[BaseKey]) -> list[ModelUpdate]:
        """The listed updates, each admissible and neither repeated nor an equivocator's."""
        await self.prefetch([c.update_id for c in p.considered], ctx.producer)
        updates = []
        for c in p.considered:
            u = await self.obtain(c.update_id, ctx.producer)
            reason = self.check_update(u, ctx.state)
            if reason:
                raise BadPayload(f"payload lists an inadmissible update: {reason}")
            if (u.sender, u.base_height) != (c.sender, c.base_height):
                raise BadPayload("payload names the wrong sender or base for an update")
            if u.base_key in self.window.claims:
                raise BadPayload("payload lists an update of a sender already aggregated for that base")
            if u.base_key in banned or u.base_key in self.window.punished:
                raise BadPayload("payload aggregates an update of an equivocator")
            updates.append(u)
        return updates

    def _faults_to_carry(self, ctx: BlockContext) -> tuple[tuple[list, bytes], ...]:
        """The faults this node proved that no final block punished: the height's own, and those of
        earlier heights. A retry (a proposal of the height failed) carries the height's own only,
        because only those every delegate can re-check: one that did not see an earlier height's
        fault cannot check it, and refuses the block."""
        return tuple(f for (h, _), f in sorted(self._faults.items())
                     if h == ctx.height or (h < ctx.height and not ctx.retry))

    async def _check_faults(self, ctx: BlockContext, p: Payload) -> None:
        """Each listed fault; a repeated (height, producer) is refused before any is re-run."""
        keys = [k for k in (fault_key(w) for w, _ in p.faults) if k is not None]
        if len(set(keys)) != len(keys):
            raise BadPayload("payload lists two faults of one producer at one height")
        for header_wire, fault_payload in p.faults:
            await self._check_fault(ctx, header_wire, fault_payload)

    async def _check_fault(self, ctx: BlockContext, header_wire: list, fault_payload: bytes) -> None:
        try:
            sh = SignedHeader.from_wire(header_wire)
        except DecodeError as exc:
            raise BadPayload(f"fault header malformed: {exc}") from exc
        h = sh.header
        if h.chain_id != self.chain_id or not ctx.height - FAULT_CARRY_HEIGHTS <= h.height <= ctx.height:
            raise BadPayload("fault is not a signed proposal of this height")
        if h.height < ctx.height:  # the proof is of these very bytes, their signature checked then
            self._check_carried_fault(header_wire, fault_payload, h.height, h.producer)
            return
        if (h.parent_hash != ctx.parent_hash or h.producer not in ctx.state.delegates
                or h.payload_hash != sha256(fault_payload) or not sh.verify_signature()):
            raise BadPayload("fault is not a signed proposal of this height")
        parent_slot = ctx.slot - ctx.attempt - 1
        fault_ctx = replace(ctx, slot=h.slot, producer=h.producer, signed_header=None,
                            attempt=h.slot - parent_slot - 1, retry=False)
        try:
            await self.check_payload(fault_ctx, fault_payload)
        except BadPayload:
            return
        raise BadPayload("a listed fault is a valid payload")

    def _check_carried_fault(self, header_wire: list, fault_payload: bytes, height: int, producer: str) -> None:
        """A fault of an earlier height is checked against this node's own proof of it: re-running
        it would need that height's model, window and chain state. Lacking a proof (this node did
        not see the proposal, restarted since, or a final block already punished it) it cannot be
        checked here: unavailable, nobody punished. A retry leaves such faults out, so the chain
        goes on even when too few delegates hold the proof."""
        proof = self._faults.get((height, producer))
        if proof is None or proof[1] != fault_payload or pack(proof[0]) != pack(header_wire):
            raise LookupError(f"a fault of height {height} that this node did not prove cannot be checked here")

    @staticmethod
    def trust_of(state: Any, updates: list[ModelUpdate]) -> dict[str, float]:
        return {u.sender: state.trust(u.sender) for u in updates}
