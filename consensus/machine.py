"""Tendermint consensus for one height, as a pure state machine.

This is Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic, 2018)
with rounds aligned to DPoS slots: round ``r`` is slot ``r``, its proposer is the delegate the
schedule names for slot ``r``, and a round starts when the clock reaches its slot (the driver
calls :meth:`HeightMachine.start_round`) instead of on a precommit timeout. The rest is the
paper's algorithm, and so is its safety argument:

* a delegate prevotes a fresh proposal only if it is valid and the delegate is not locked on
  another block; a re-proposed block (with the round ``vr`` of its polka) only if it is valid and
  the delegate's lock is not newer than ``vr`` (the *unlock* rule that keeps the chain live after
  a split precommit);
* a quorum of prevotes for the round's valid proposal (a *polka*) locks the delegate on it and it
  precommits it; the block becomes the *valid* block that this delegate re-proposes later;
* a quorum of precommits for a valid block in any round decides it; for a block this node lacks
  or refused, the driver applies it under the chain's rules alone (a quorum checked its payload).

The machine does no I/O and reads no clock: every input carries the time, and every effect is an
action for the driver (:mod:`consensus.engine`) to carry out: sign and send a vote, propose, arm
a timer, decide, report an equivocation, fetch a block the network decided. Unit tests drive it
on a simulated clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from consensus.equivocation import Evidence
from consensus.header import EMPTY_HASH
from consensus.messages import Commit, Vote
from consensus.votes import HeightVotes

PROPOSE = "propose"
PREVOTE = "prevote"


class Step(IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


@dataclass(frozen=True)
class Timeouts:
    """How long a delegate waits, in ms: for a valid proposal after a round starts, and after a
    quorum of (split) prevotes before it precommits nil."""

    propose_ms: int
    prevote_ms: int

    @classmethod
    def for_slot(cls, slot_ms: int) -> "Timeouts":
        """Half a slot for the proposal (its payload may take long to verify), a quarter more
        for prevotes; what is left of the slot is for precommits to arrive."""
        return cls(propose_ms=slot_ms // 2, prevote_ms=slot_ms // 4)


@dataclass(frozen=True)
class Propose:
    """Our turn: propose ``block_hash`` again with its polka round, or a fresh block if None."""

    round: int
    block_hash: bytes | None
    pol_round: int


@dataclass(frozen=True)
class CastVote:
    kind: str
    round: int
    block_hash: bytes  # EMPTY_HASH for nil


@dataclass(frozen=True)
class ArmTimeout:
    kind: str  # PROPOSE | PREVOTE
    round: int
    at_ms: int


@dataclass(frozen=True)
class Decide:
    block_hash: bytes
    commit: Commit


@dataclass(frozen=True)
class FetchDecided:
    """A quorum precommitted a block this node does not hold as valid (never saw it, is still
    checking it, or its application objected): it is decided; the driver applies it under the
    chain's rules alone, fetching it by hash if it is not held."""

    block_hash: bytes
    commit: Commit


@dataclass(frozen=True)
class Equivocation:
    evidence: Evidence


Action = Propose | CastVote | ArmTimeout | Decide | FetchDecided | Equivocation


class HeightMachine:
    """The consensus of one height. Feed it inputs; carry out the actions it returns."""

    def __init__(self, height: int, voters: list[str], quorum: int, proposer_of: Callable[[int], str],
                 me: str | None, timeouts: Timeouts, lock: tuple[int, bytes] | None = None) -> None:
        self.height = height
        self.votes = HeightVotes(height, voters, quorum)
        self.quorum = quorum
        self.proposer_of = proposer_of
        self.me = me
        self.voting = me is not None and me in self.votes.voters
        self.timeouts = timeouts
        self.round = -1
        self.step = Step.PROPOSE
        self.locked_round, self.locked_hash = lock if lock is not None else (-1, None)
        self.valid_round: int = -1
        self.valid_hash: bytes | None = None
        self.proposals: dict[int, tuple[bytes, int]] = {}  # round -> (block hash, pol round)
        self.validity: dict[bytes, bool] = {}
        self.decision: bytes | None = None
        self._commits: dict[bytes, Commit] = {}  # verified commits offered whole, by block
        self._done: set[tuple[str, int]] = set()  # one-shot rules already fired, per round
        self._asked: set[bytes] = set()
        self._keep()

    # ----- inputs -----------------------------------------------------------------------------
    def start_round(self, rnd: int, now_ms: int) -> list[Action]:
        """The clock reached slot ``rnd``: enter that round (never an earlier one)."""
        if rnd <= self.round or self.decision is not None:
            return []
        self.round, self.step = rnd, Step.PROPOSE
        acts: list[Action] = []
        if self.voting and self.proposer_of(rnd) == self.me:
            acts.append(Propose(rnd, self.valid_hash, self.valid_round if self.valid_hash is not None else -1))
        if self.voting:
            acts.append(ArmTimeout(PROPOSE, rnd, now_ms + self.timeouts.propose_ms))
        return acts + self._rules(now_ms)

    def on_proposal(self, rnd: int, block_hash: bytes, pol_round: int, now_ms: int,
                    proof: list[Vote] | tuple = ()) -> list[Action]:
        """The round's proposer put ``block_hash`` forward (the driver checked who signed it).

        A re-proposal may carry ``proof``: the prevotes of its polka round, signatures verified
        by the driver, so that a delegate that missed them can still follow the unlock rule.
        """
        if rnd in self.proposals or self.decision is not None:
            return []
        if pol_round >= 0 and proof:
            self.votes.certify(PREVOTE, pol_round, block_hash, list(proof))
        self.proposals[rnd] = (block_hash, pol_round)
        self._keep()
        return self._rules(now_ms)

    def on_validity(self, block_hash: bytes, ok: bool, now_ms: int) -> list[Action]:
        """The driver finished validating a block (header, body, state, payload)."""
        if block_hash in self.validity:
            return []
        self.validity[block_hash] = ok
        return self._rules(now_ms)

    def on_vote(self, vote: Vote, now_ms: int) -> list[Action]:
        """A prevote or precommit of this height with a verified signature."""
        new, evidence = self.votes.add(vote)
        acts: list[Action] = [Equivocation(evidence)] if evidence is not None else []
        return acts + self._rules(now_ms) if new else acts

    def on_commit(self, commit: Commit, now_ms: int) -> list[Action]:
        """A quorum of precommits for one block in one round, verified by the driver as a whole
        (e.g. the last commit a next-height proposal carries). It decides the height even where
        this node holds a conflicting vote from an equivocator among its signers: two commits for
        different blocks at one height would need a third of the voters to double-sign."""
        if self.decision is not None or commit.height != self.height:
            return []
        self._commits.setdefault(commit.block_hash, commit)
        if self.validity.get(commit.block_hash):
            self.decision = commit.block_hash
            return [Decide(commit.block_hash, commit)]
        if commit.block_hash not in self._asked:
            self._asked.add(commit.block_hash)
            return [FetchDecided(commit.block_hash, commit)]
        return []

    def on_timeout(self, kind: str, rnd: int, now_ms: int) -> list[Action]:
        if rnd != self.round or self.decision is not None:
            return []
        if kind == PROPOSE and self.step == Step.PROPOSE:
            return self._vote(PREVOTE, EMPTY_HASH) + self._rules(now_ms)
        if kind == PREVOTE and self.step == Step.PREVOTE:
            return self._vote("precommit", EMPTY_HASH) + self._rules(now_ms)
        return []

    # ----- the upon-rules ---------------------------------------------------------------------
    def _rules(self, now_ms: int) -> list[Action]:
        acts = self._decide()
        if self.decision is not None or self.round < 0 or not self.voting:
            return acts
        r, v = self.round, self.votes
        proposal = self.proposals.get(r)
        valid = self.validity.get(proposal[0]) if proposal else None
        if self.step == Step.PROPOSE and proposal is not None and valid is not None:
            block_hash, vr = proposal
            if vr == -1:
                free = self.locked_round == -1 or self.locked_hash == block_hash
                acts += self._vote(PREVOTE, block_hash if valid and free else EMPTY_HASH)
            elif vr < r and v.has_quorum(PREVOTE, vr, block_hash):
                free = self.locked_round <= vr or self.locked_hash == block_hash
                acts += self._vote(PREVOTE, block_hash if valid and free else EMPTY_HASH)
        if self.step == Step.PREVOTE and v.total(PREVOTE, r) >= self.quorum and self._first("prevote_timer", r):
            acts.append(ArmTimeout(PREVOTE, r, now_ms + self.timeouts.prevote_ms))
        if (proposal is not None and valid and self.step >= Step.PREVOTE
                and v.has_quorum(PREVOTE, r, proposal[0]) and self._first("polka", r)):
            if self.step == Step.PREVOTE:
                self.locked_round, self.locked_hash = r, proposal[0]
                acts += self._vote("precommit", proposal[0])
            self.valid_round, self.valid_hash = r, proposal[0]
            self._keep()
        if self.step == Step.PREVOTE and v.has_quorum(PREVOTE, r, EMPTY_HASH):
            acts += self._vote("precommit", EMPTY_HASH)
        return acts

    def _decide(self) -> list[Action]:
        if self.decision is not None:
            return []
        for block_hash, commit in self._commits.items():
            if self.validity.get(block_hash):
                self.decision = block_hash
                return [Decide(block_hash, commit)]
        for rnd in self.votes.rounds():
            block_hash = self.votes.quorum_for("precommit", rnd)
            if block_hash is None or block_hash == EMPTY_HASH:
                continue
            commit = self.votes.commit(rnd, block_hash)
            assert commit is not None
            if self.validity.get(block_hash):
                self.decision = block_hash
                return [Decide(block_hash, commit)]
            if block_hash not in self._asked:
                self._asked.add(block_hash)
                return [FetchDecided(block_hash, commit)]
        return []

    def _vote(self, kind: str, block_hash: bytes) -> list[Action]:
        self.step = Step.PREVOTE if kind == PREVOTE else Step.PRECOMMIT
        return [CastVote(kind, self.round, block_hash)]

    def _first(self, rule: str, rnd: int) -> bool:
        if (rule, rnd) in self._done:
            return False
        self._done.add((rule, rnd))
        return True

    def _keep(self) -> None:
        self.votes.keep({self.locked_round, self.valid_round, *(vr for _, vr in self.proposals.values())})
