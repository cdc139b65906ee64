"""Consensus messages arriving by gossip: decode once, check the cheap things first, hand them on.

A topic validator decides whether a message may be forwarded; it must be quick, and a stranger
must not be able to make it expensive. So each one checks, in order of cost: shape and chain id;
height (only the height being decided is forwarded; the next height's messages from current
voters are kept in a small per-sender buffer and replayed when the node gets there; anything else
is dropped); the round window (no round before the parent block's slot, none beyond the clock's
slot plus one); the sender's role (a voter, the round's proposer); duplicates; and only then the
signatures. Malformed or forged messages are REJECTed (they cost the forwarding peer score),
timing-dependent ones (stale, early, a relay's clock) are IGNOREd. Every refusal is counted.

The decoded object travels from the validator to the delivery callback in a small map keyed by
the envelope, bounded in bytes; only ACCEPTed messages enter it.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict, deque
from typing import Any, Protocol

from consensus.block import Block
from consensus.equivocation import Evidence
from consensus.evidence import EvidencePool
from consensus.executor import BlockExecutor
from consensus.machine import HeightMachine
from consensus.mempool import Mempool
from consensus.messages import Commit, Proposal, Vote
from consensus.tx import Tx
from gossip.codec import DecodeError, pack, unpack
from gossip.envelope import Verdict

HANDOFF_BYTES = 64 * 1024 * 1024
"""Decoded messages waiting between validation and delivery, at most (bytes of their bodies)."""
FUTURE_PER_SENDER = 8
"""Next-height messages kept per voter until this node reaches that height."""
EARLY_ROUNDS = 16
"""How many rounds ahead of this node's clock a proposal may still be a sample of its clock check."""


def decode_proposal(obj: Any) -> tuple[Proposal, Block, list[Vote]]:
    """``[proposal, block, polka prevotes]``; the prevotes prove a re-proposal's polka round."""
    if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[2], list) and len(obj[2]) <= 1024):
        raise DecodeError("proposal message must be [proposal, block, [prevote, ...]]")
    return Proposal.from_wire(obj[0]), Block.from_wire(obj[1]), [Vote.from_wire(v) for v in obj[2]]


def encode_proposal(proposal: Proposal, block: Block, proof: list[Vote]) -> bytes:
    return pack([proposal.to_wire(), block.to_wire(), [v.to_wire() for v in proof]])


class Consensus(Protocol):
    """What the validators read of the running engine, and where they hand accepted messages."""

    genesis: Any
    config: Any
    executor: BlockExecutor
    machine: HeightMachine
    mempool: Mempool
    evidence: EvidencePool
    metrics: Counter

    @property
    def height(self) -> int: ...
    def now_ms(self) -> int: ...
    def current_slot(self) -> int: ...
    def has_proposal(self, proposal: Proposal) -> bool: ...
    def take_commit(self, commit: Commit) -> None: ...
    def behind(self) -> None: ...
    async def take_proposal(self, proposal: Proposal, block: Block, proof: list[Vote]) -> None: ...
    async def take_vote(self, vote: Vote) -> None: ...
    def evidence_seen(self, ev: Evidence) -> None: ...


class Inbound:
    """The gossip validators and delivery callbacks of the consensus topics."""

    def __init__(self, engine: Consensus) -> None:
        self.e = engine
        self._handoff: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._handoff_bytes = 0
        self.future: dict[str, deque] = defaultdict(lambda: deque(maxlen=FUTURE_PER_SENDER))
        self._early: deque[tuple[int, int]] = deque(maxlen=EARLY_ROUNDS)

    # ----- handoff between validate and deliver -------------------------------------------------
    def _hand(self, env: Any, obj: Any) -> Verdict:
        size = len(env.body)
        self._handoff[id(env)] = (obj, size)
        self._handoff_bytes += size
        while self._handoff_bytes > HANDOFF_BYTES and self._handoff:
            _, (_, dropped) = self._handoff.popitem(last=False)
            self._handoff_bytes -= dropped
        return Verdict.ACCEPT

    def _take(self, env: Any) -> Any:
        entry = self._handoff.pop(id(env), None)
        if entry is None:
            return None
        self._handoff_bytes -= entry[1]
        return entry[0]

    def _drop(self, reason: str, verdict: Verdict) -> Verdict:
        self.e.metrics[f"rejected:{reason}" if verdict is Verdict.REJECT else f"ignored:{reason}"] += 1
        return verdict

    def _buffer(self, sender: str, kind: str, obj: Any) -> Verdict:
        """Keep a next-height message from a current voter for later; never forward it. A key
        that could not be a voter at the next height either (no delegate, no stake) is junk."""
        if sender in self.e.executor.voters:
            self.future[sender].append((kind, obj))
            return Verdict.IGNORE
        if not self.e.executor.state.could_vote(sender):
            return self._drop("not_a_candidate", Verdict.REJECT)
        return Verdict.IGNORE

    def replay(self) -> list[tuple[str, Any]]:
        """The buffered next-height messages, oldest first per sender; the buffer is emptied."""
        items = [item for q in self.future.values() for item in q]
        self.future.clear()
        return items

    def _other_height(self, height: int, sender: str) -> Verdict:
        """Neither this height nor the next: dropped; from a voter and ahead, a hint that this
        node is behind (the syncer checks by fetching verified blocks, and paces itself)."""
        if height > self.e.height and sender in self.e.executor.voters:
            self.e.behind()
        return self._drop("other_height", Verdict.IGNORE)

    def _round_problem(self, rnd: int) -> Verdict | None:
        """None if ``rnd`` may be a round of this height. A round not after the parent block's
        slot is impossible for an honest sender (the parent is final: everyone agrees on its
        slot), so it is junk; one ahead of our clock by more than a slot may be a relay's clock."""
        if rnd <= self.e.executor.parent_slot:
            return self._drop("round_before_parent", Verdict.REJECT)
        if rnd > self.e.current_slot() + 1:
            return self._drop("round_ahead", Verdict.IGNORE)
        return None

    # ----- proposals ----------------------------------------------------------------------------
    async def validate_proposal(self, env: Any) -> Verdict:
        e = self.e
        try:
            proposal, block, proof = decode_proposal(unpack(env.body, e.config.max_message))
        except DecodeError:
            return self._drop("block_malformed", Verdict.REJECT)
        if proposal.chain_id != e.genesis.chain_id or block.header.chain_id != e.genesis.chain_id:
            return self._drop("wrong_chain", Verdict.REJECT)
        if proposal.height != block.height or proposal.block_hash != block.hash:
            return self._drop("block_malformed", Verdict.REJECT)
        if proposal.height == e.height + 1:
            return self._next_height(proposal, block, proof)
        if proposal.height != e.height:
            return self._other_height(proposal.height, proposal.proposer)
        if (refused := self._round_problem(proposal.round)) is not None:
            if proposal.round > e.executor.parent_slot:
                self._early_sample(proposal, block)
            return refused
        if proposal.proposer != e.executor.schedule.proposer(proposal.round):
            return self._drop("wrong_producer", Verdict.REJECT)
        if e.has_proposal(proposal):
            return self._drop("duplicate", Verdict.IGNORE)
        if not proposal.verify_signature() or not block.verify_signature():
            return self._drop("bad_signature", Verdict.REJECT)
        now = e.now_ms()
        if proposal.pol_round < 0:  # a re-proposed block keeps the stamp of the slot it was built in
            e.clock_check.observe(proposal.proposer, now, block.header.timestamp_ms)
        if block.header.timestamp_ms > now + e.genesis.max_clock_drift_ms:
            # judged by this node's clock, which may be the one that is off: the peer that
            # relayed it may be honest, so it is not penalized
            return self._drop("future_timestamp", Verdict.IGNORE)
        if proposal.pol_round >= 0 and not all(v.chain_id == e.genesis.chain_id and v.verify_signature()
                                                for v in proof):
            return self._drop("bad_signature", Verdict.REJECT)
        return self._hand(env, (proposal, block, proof if proposal.pol_round >= 0 else []))

    def _early_sample(self, proposal: Proposal, block: Block) -> None:
        """A proposal of a round ahead of this node's clock is refused, yet it is what tells a
        clock that runs behind by more than a slot: to such a clock every proposal is early, and
        the check never heard of one. The first proposal of each round up to :data:`EARLY_ROUNDS`
        ahead, from that round's proposer, has its signature checked and is a sample; one check a
        round at most, whatever anyone sends."""
        e, rnd = self.e, proposal.round
        key = (proposal.height, rnd)
        if rnd > e.current_slot() + EARLY_ROUNDS or key in self._early or proposal.pol_round >= 0:
            return
        if proposal.proposer != e.executor.schedule.proposer(rnd):
            return
        self._early.append(key)
        if proposal.verify_signature() and block.verify_signature():
            e.clock_check.observe(proposal.proposer, e.now_ms(), block.header.timestamp_ms)

    def _next_height(self, proposal: Proposal, block: Block, proof: list[Vote]) -> Verdict:
        """A proposal one height ahead, from a current voter: keep it for later, and if it carries
        a commit for our height, that commit decides our height now (signatures checked once)."""
        e = self.e
        if proposal.proposer not in e.executor.voters:
            return self._buffer(proposal.proposer, "proposal", (proposal, block, proof))
        commit = block.last_commit
        if (commit is not None and commit.height == e.height and not e.machine.decision
                and proposal.verify_signature() and e.executor.check_commit_only(commit) is None):
            e.take_commit(commit)
        return self._buffer(proposal.proposer, "proposal", (proposal, block, proof))

    async def deliver_proposal(self, env: Any) -> None:
        item = self._take(env)
        if item is not None:
            await self.e.take_proposal(*item)

    # ----- votes --------------------------------------------------------------------------------
    async def validate_vote(self, env: Any) -> Verdict:
        e = self.e
        try:
            vote = Vote.from_wire(unpack(env.body, 4096))
        except DecodeError:
            return self._drop("vote_malformed", Verdict.REJECT)
        if vote.chain_id != e.genesis.chain_id:
            return self._drop("wrong_chain", Verdict.REJECT)
        if vote.height == e.height + 1:
            return self._buffer(vote.voter, "vote", vote)
        if vote.height != e.height:
            return self._other_height(vote.height, vote.voter)
        if vote.voter not in e.executor.voters:
            return self._drop("vote_not_delegate", Verdict.REJECT)
        if (refused := self._round_problem(vote.round)) is not None:
            return refused
        if e.machine.votes.has(vote):
            return self._drop("duplicate", Verdict.IGNORE)
        if not vote.verify_signature():
            return self._drop("vote_bad_signature", Verdict.REJECT)
        return self._hand(env, vote)

    async def deliver_vote(self, env: Any) -> None:
        vote = self._take(env)
        if vote is not None:
            await self.e.take_vote(vote)

    # ----- transactions and evidence --------------------------------------------------------------
    async def validate_tx(self, env: Any) -> Verdict:
        e = self.e
        try:
            tx = Tx.from_wire(unpack(env.body, e.genesis.max_tx_bytes))
        except DecodeError:
            return self._drop("tx_malformed", Verdict.REJECT)
        reason = e.mempool.add(tx, e.executor.state)
        if reason is None:
            return Verdict.ACCEPT
        e.metrics[f"tx_rejected:{reason.split(':')[0]}"] += 1
        # Only a forged or malformed tx is the forwarding peer's fault: a full pool, a tx that is
        # merely stale for our state, or one we already hold costs nobody anything.
        return Verdict.REJECT if reason.startswith("invalid:") else Verdict.IGNORE

    async def validate_evidence(self, env: Any) -> Verdict:
        e = self.e
        try:
            ev = Evidence.from_wire(unpack(env.body, e.config.max_message))
        except DecodeError:
            return self._drop("evidence_malformed", Verdict.REJECT)
        reason = e.evidence.add(ev, e.executor.state)
        if reason is None:
            e.evidence_seen(ev)
            return Verdict.ACCEPT
        if reason == "duplicate":
            return self._drop("evidence_duplicate", Verdict.IGNORE)
        if "too old" in reason or "older than" in reason or "already punished" in reason or "ahead of" in reason:
            return self._drop("evidence_unusable", Verdict.IGNORE)  # a matter of our height, nobody's fault
        return self._drop("evidence_invalid", Verdict.REJECT)  # forged, malformed, or against a stranger

    async def deliver_noop(self, env: Any) -> None:
        """Transactions and evidence enter their pools during validation."""
