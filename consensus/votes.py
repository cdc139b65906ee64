"""Vote bookkeeping for the height being decided.

Votes are kept per round (a round is a slot) and per kind, one per voter: a second, different
vote of one kind in one round from the same voter is an equivocation, returned as evidence (the
first vote stays counted). Tallies are updated as votes arrive, so adding a vote costs O(1)
whatever the number of rounds or voters.

Memory is bounded by the caller's round window (a vote is only offered for rounds the clock
allows) and by :attr:`HeightVotes.max_rounds`: when more rounds are held, the oldest round that
nothing refers to any more is forgotten. Rounds the protocol may still need (the lock's round,
the valid block's round, a proposal's POL round) are kept: :meth:`HeightVotes.keep` names them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from consensus.equivocation import Evidence
from consensus.messages import Commit, Vote

MAX_ROUNDS = 64
"""Rounds of one height held at once (more only while the protocol refers to them)."""


@dataclass
class _Tally:
    """One kind of vote in one round: each voter's vote and the count per block hash."""

    by_voter: dict[str, Vote] = field(default_factory=dict)
    count: Counter = field(default_factory=Counter)

    def add(self, vote: Vote) -> Vote | None:
        """Record ``vote``; returns the voter's earlier, different vote if there is one."""
        prior = self.by_voter.get(vote.voter)
        if prior is not None:
            return prior if prior.block_hash != vote.block_hash else None
        self.by_voter[vote.voter] = vote
        self.count[vote.block_hash] += 1
        return None


@dataclass
class RoundVotes:
    prevotes: _Tally = field(default_factory=_Tally)
    precommits: _Tally = field(default_factory=_Tally)

    def tally(self, kind: str) -> _Tally:
        return self.prevotes if kind == "prevote" else self.precommits


class HeightVotes:
    """Prevotes and precommits at one height from a fixed voter set."""

    def __init__(self, height: int, voters: list[str], quorum: int, max_rounds: int = MAX_ROUNDS) -> None:
        self.height = height
        self.voters = frozenset(voters)
        self.quorum = quorum
        self.max_rounds = max_rounds
        self._rounds: dict[int, RoundVotes] = {}
        self._keep: frozenset[int] = frozenset()
        self._certified: dict[tuple[str, int, bytes], list[Vote]] = {}

    def keep(self, rounds: set[int]) -> None:
        """Rounds that must not be forgotten while they are referred to (lock, valid, POL)."""
        self._keep = frozenset(r for r in rounds if r >= 0)

    def add(self, vote: Vote) -> tuple[bool, Evidence | None]:
        """Record ``vote``; returns (whether it was new, equivocation evidence if any).

        Votes from non-voters or for another height are not recorded. The signature is the
        caller's to check, before calling (votes arrive through gossip validation).
        """
        if vote.voter not in self.voters or vote.height != self.height:
            return False, None
        rv = self._rounds.get(vote.round)
        if rv is None:
            rv = self._rounds[vote.round] = RoundVotes()
            self._evict()
        tally = rv.tally(vote.kind)
        known = vote.voter in tally.by_voter
        prior = tally.add(vote)
        if prior is not None:
            return False, Evidence(f"double_{vote.kind}", prior, vote)
        return not known, None

    def _evict(self) -> None:
        while len(self._rounds) > self.max_rounds:
            victims = [r for r in self._rounds if r not in self._keep]
            if not victims:
                return
            del self._rounds[min(victims)]

    def has(self, vote: Vote) -> bool:
        """True if this very vote (same voter, kind, round and block) is already recorded."""
        rv = self._rounds.get(vote.round)
        prior = rv.tally(vote.kind).by_voter.get(vote.voter) if rv is not None else None
        return prior is not None and prior.block_hash == vote.block_hash

    def count(self, kind: str, rnd: int, block_hash: bytes) -> int:
        rv = self._rounds.get(rnd)
        return rv.tally(kind).count[block_hash] if rv is not None else 0

    def total(self, kind: str, rnd: int) -> int:
        """How many voters cast a vote of ``kind`` in round ``rnd`` (any block, nil included)."""
        rv = self._rounds.get(rnd)
        return len(rv.tally(kind).by_voter) if rv is not None else 0

    def certify(self, kind: str, rnd: int, block_hash: bytes, votes: list[Vote]) -> bool:
        """Accept a quorum of votes for one block offered as a whole (a re-proposal's proof of its
        polka), even where this node holds a conflicting vote of an equivocator among them: the
        quorum is a fact whichever copy reached us first. The caller verified the signatures."""
        voters = {v.voter for v in votes if v.kind == kind and v.height == self.height and v.round == rnd
                  and v.block_hash == block_hash and v.voter in self.voters}
        if len(voters) < self.quorum:
            return False
        self._certified[(kind, rnd, block_hash)] = sorted(votes, key=lambda v: v.voter)
        return True

    def has_quorum(self, kind: str, rnd: int, block_hash: bytes) -> bool:
        return self.count(kind, rnd, block_hash) >= self.quorum or (kind, rnd, block_hash) in self._certified

    def quorum_for(self, kind: str, rnd: int) -> bytes | None:
        """The block (or nil) that a quorum of ``kind`` votes in round ``rnd`` is for, if any."""
        rv = self._rounds.get(rnd)
        if rv is None:
            return None
        for block_hash, n in rv.tally(kind).count.items():
            if n >= self.quorum:
                return block_hash
        return None

    def rounds(self) -> list[int]:
        return sorted(self._rounds)

    def own(self, voter: str, kind: str, rnd: int) -> Vote | None:
        """``voter``'s vote of ``kind`` in round ``rnd``, if recorded."""
        rv = self._rounds.get(rnd)
        return rv.tally(kind).by_voter.get(voter) if rv is not None else None

    def for_block(self, kind: str, rnd: int, block_hash: bytes) -> list[Vote]:
        """The recorded votes of ``kind`` for ``block_hash`` in round ``rnd`` (e.g. a polka's
        prevotes, which a re-proposal carries as proof), sorted by voter."""
        rv = self._rounds.get(rnd)
        tallied = [] if rv is None else [v for v in rv.tally(kind).by_voter.values() if v.block_hash == block_hash]
        if len(tallied) < self.quorum and (kind, rnd, block_hash) in self._certified:
            return self._certified[(kind, rnd, block_hash)]
        return sorted(tallied, key=lambda v: v.voter)

    def commit(self, rnd: int, block_hash: bytes) -> Commit | None:
        """A commit for ``block_hash`` from round ``rnd``'s precommits, if they reach a quorum."""
        rv = self._rounds.get(rnd)
        if rv is None or rv.precommits.count[block_hash] < self.quorum:
            return None
        sigs = sorted((v.voter, v.signature) for v in rv.precommits.by_voter.values() if v.block_hash == block_hash)
        return Commit(self.height, rnd, block_hash, tuple(sigs))
