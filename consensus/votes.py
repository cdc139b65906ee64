"""Vote bookkeeping for the height being decided.

Prevotes are counted per slot (a slot is a round); a *polka* is a quorum of prevotes for one block
in one slot. Precommits are counted per height: a delegate precommits at most once per height, so
two of its precommits for different blocks at one height are evidence of a double sign.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from consensus.types import EMPTY_HASH, Commit, Evidence, Vote


@dataclass(frozen=True)
class Polka:
    slot: int
    block_hash: bytes


class HeightVotes:
    """Prevotes and precommits at one height from the given voter set."""

    def __init__(self, height: int, voters: list[str], quorum: int) -> None:
        self.height = height
        self.voters = frozenset(voters)
        self.quorum = quorum
        self._prevotes: dict[int, dict[str, bytes]] = defaultdict(dict)
        self._precommits: dict[str, Vote] = {}
        self._best_polka: Polka | None = None

    def add_prevote(self, vote: Vote) -> Polka | None:
        """Record a prevote; return the polka it completes, if any. A repeat is ignored."""
        if vote.voter not in self.voters or vote.height != self.height:
            return None
        by_voter = self._prevotes[vote.slot]
        if vote.voter in by_voter:
            return None
        by_voter[vote.voter] = vote.block_hash
        if vote.block_hash == EMPTY_HASH:
            return None
        count = sum(1 for h in by_voter.values() if h == vote.block_hash)
        if count >= self.quorum:
            polka = Polka(vote.slot, vote.block_hash)
            if self._best_polka is None or polka.slot > self._best_polka.slot:
                self._best_polka = polka
            return polka
        return None

    def add_precommit(self, vote: Vote) -> Evidence | None:
        """Record a precommit; return double-sign evidence if the voter already precommitted
        another block at this height (the first precommit stays counted)."""
        if vote.voter not in self.voters or vote.height != self.height:
            return None
        prior = self._precommits.get(vote.voter)
        if prior is None:
            self._precommits[vote.voter] = vote
            return None
        if prior.block_hash != vote.block_hash:
            return Evidence("double_precommit", prior, vote)
        return None

    @property
    def best_polka(self) -> Polka | None:
        """The polka of the highest slot seen at this height."""
        return self._best_polka

    def polkas(self) -> list[Polka]:
        found = []
        for slot, by_voter in self._prevotes.items():
            tally: dict[bytes, int] = defaultdict(int)
            for h in by_voter.values():
                tally[h] += 1
            found += [Polka(slot, h) for h, c in tally.items() if h != EMPTY_HASH and c >= self.quorum]
        return sorted(found, key=lambda p: p.slot)

    def prevoted(self, slot: int, voter: str) -> bool:
        return voter in self._prevotes.get(slot, {})

    def precommit_count(self, block_hash: bytes) -> int:
        return sum(1 for v in self._precommits.values() if v.block_hash == block_hash)

    def most_precommitted(self) -> bytes | None:
        """The block with the most precommits so far (ties by hash), or None."""
        tally: dict[bytes, int] = defaultdict(int)
        for v in self._precommits.values():
            tally[v.block_hash] += 1
        if not tally:
            return None
        return min(tally, key=lambda h: (-tally[h], h))

    def commit_for(self, block_hash: bytes) -> Commit | None:
        """A commit for ``block_hash`` if a quorum of precommits for it is present."""
        sigs = sorted((v.voter, v.signature) for v in self._precommits.values() if v.block_hash == block_hash)
        if len(sigs) < self.quorum:
            return None
        return Commit(self.height, block_hash, tuple(sigs))
