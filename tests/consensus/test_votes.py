"""HeightVotes: polkas per slot at quorum, one precommit per delegate per height, commits that
verify, and evidence when a delegate precommits two blocks."""

from __future__ import annotations

import pytest

from consensus.election import quorum
from consensus.types import EMPTY_HASH, Commit, Vote
from consensus.votes import HeightVotes, Polka
from gossip.crypto import sha256
from tests.consensus.helpers import CHAIN, IDS, KEYS, OUTSIDER

H = 5
A, B = sha256(b"block a"), sha256(b"block b")
VOTERS = IDS[:4]  # quorum(4) == 3


def prevote(i: int, slot: int, block: bytes, height: int = H) -> Vote:
    return Vote("prevote", CHAIN, height, slot, block, IDS[i]).signed(KEYS[i])


def precommit(i: int, block: bytes, height: int = H) -> Vote:
    return Vote("precommit", CHAIN, height, 0, block, IDS[i]).signed(KEYS[i])


@pytest.fixture
def votes() -> HeightVotes:
    return HeightVotes(H, VOTERS, quorum(len(VOTERS)))


def test_polka_only_at_quorum(votes: HeightVotes) -> None:
    assert votes.add_prevote(prevote(0, 2, A)) is None
    assert votes.add_prevote(prevote(1, 2, A)) is None
    assert votes.best_polka is None and votes.polkas() == []
    assert votes.add_prevote(prevote(2, 2, A)) == Polka(2, A)
    assert votes.best_polka == Polka(2, A)
    assert votes.polkas() == [Polka(2, A)]
    assert votes.add_prevote(prevote(3, 2, A)) == Polka(2, A)  # a fourth vote still reports the polka


def test_prevotes_count_per_slot(votes: HeightVotes) -> None:
    assert votes.add_prevote(prevote(0, 1, A)) is None
    assert votes.add_prevote(prevote(1, 1, A)) is None
    assert votes.add_prevote(prevote(2, 2, A)) is None  # same block, other slot: no polka
    assert votes.polkas() == []


def test_split_prevotes_make_no_polka(votes: HeightVotes) -> None:
    for i, block in enumerate([A, A, B, B]):
        assert votes.add_prevote(prevote(i, 0, block)) is None
    assert votes.polkas() == [] and votes.best_polka is None


def test_nil_prevotes_are_recorded_but_never_a_polka(votes: HeightVotes) -> None:
    for i in range(4):
        assert votes.add_prevote(prevote(i, 0, EMPTY_HASH)) is None
        assert votes.prevoted(0, IDS[i])
    assert votes.polkas() == []


def test_non_voters_and_other_heights_are_ignored(votes: HeightVotes) -> None:
    assert votes.add_prevote(prevote(0, 0, A)) is None
    assert votes.add_prevote(prevote(4, 0, A)) is None                 # not a voter
    assert votes.add_prevote(Vote("prevote", CHAIN, H, 0, A, OUTSIDER.node_id).signed(OUTSIDER)) is None
    assert votes.add_prevote(prevote(1, 0, A, height=H + 1)) is None   # another height
    assert votes.add_prevote(prevote(2, 0, A, height=H - 1)) is None
    assert not votes.prevoted(0, IDS[4]) and not votes.prevoted(0, IDS[1])
    assert votes.add_prevote(prevote(1, 0, A)) is None                 # only 2 counted so far
    assert votes.add_prevote(prevote(2, 0, A)) == Polka(0, A)


def test_repeat_prevote_in_a_slot_is_ignored(votes: HeightVotes) -> None:
    assert votes.add_prevote(prevote(0, 3, A)) is None
    assert votes.add_prevote(prevote(0, 3, A)) is None
    assert votes.add_prevote(prevote(0, 3, B)) is None   # a change of mind in the slot is not counted
    assert votes.add_prevote(prevote(1, 3, A)) is None   # two distinct voters for A, not three
    assert votes.add_prevote(prevote(1, 3, B)) is None
    assert votes.add_prevote(prevote(2, 3, B)) is None   # voter 0 and 1 voted A first; B has one vote
    assert votes.polkas() == []
    assert votes.add_prevote(prevote(3, 3, A)) == Polka(3, A)


def test_best_polka_is_the_highest_slot(votes: HeightVotes) -> None:
    for i in range(3):
        votes.add_prevote(prevote(i, 4, A))
    for i in range(3):
        votes.add_prevote(prevote(i, 1, B))
    assert votes.best_polka == Polka(4, A)
    assert votes.polkas() == [Polka(1, B), Polka(4, A)]
    for i in range(1, 4):
        votes.add_prevote(prevote(i, 6, B))
    assert votes.best_polka == Polka(6, B)


def test_double_precommit_returns_evidence_that_checks(votes: HeightVotes) -> None:
    first, second = precommit(0, A), precommit(0, B)
    assert votes.add_precommit(first) is None
    ev = votes.add_precommit(second)
    assert ev is not None and ev.kind == "double_precommit"
    assert ev.first == first and ev.second == second
    assert ev.offender == IDS[0] and ev.height == H
    assert ev.check(CHAIN) is None
    assert votes.precommit_count(A) == 1 and votes.precommit_count(B) == 0  # the first one stays counted


def test_repeat_precommit_for_the_same_block_is_not_evidence(votes: HeightVotes) -> None:
    assert votes.add_precommit(precommit(1, A)) is None
    assert votes.add_precommit(precommit(1, A)) is None
    assert votes.precommit_count(A) == 1


def test_precommits_from_non_voters_or_other_heights_are_ignored(votes: HeightVotes) -> None:
    assert votes.add_precommit(precommit(5, A)) is None
    assert votes.add_precommit(precommit(0, A, height=H + 1)) is None
    assert votes.precommit_count(A) == 0 and votes.most_precommitted() is None
    assert votes.add_precommit(precommit(0, B)) is None  # the other-height vote did not take voter 0's turn


def test_most_precommitted_breaks_ties_by_hash(votes: HeightVotes) -> None:
    assert votes.most_precommitted() is None
    votes.add_precommit(precommit(0, A))
    votes.add_precommit(precommit(1, B))
    assert votes.most_precommitted() == min(A, B)
    votes.add_precommit(precommit(2, max(A, B)))
    assert votes.most_precommitted() == max(A, B)


def test_commit_only_at_quorum_with_sorted_signatures_that_verify(votes: HeightVotes) -> None:
    for i in (3, 1):                      # arrive out of id order
        votes.add_precommit(precommit(i, A))
    votes.add_precommit(precommit(0, B))  # a precommit for another block does not count towards A
    assert votes.commit_for(A) is None
    votes.add_precommit(precommit(2, A))
    commit = votes.commit_for(A)
    assert isinstance(commit, Commit)
    assert commit.height == H and commit.block_hash == A
    assert [v for v, _ in commit.signatures] == sorted([IDS[1], IDS[2], IDS[3]])
    assert commit.verify(CHAIN, VOTERS, quorum(4)) is None
    assert Commit.from_wire(commit.to_wire()) == commit  # the wire form insists on sorted voters
    assert votes.commit_for(B) is None


def test_commit_signatures_are_bound_to_the_chain(votes: HeightVotes) -> None:
    for i in range(3):
        votes.add_precommit(precommit(i, A))
    commit = votes.commit_for(A)
    assert commit is not None
    assert "bad commit signature" in commit.verify("another-chain", VOTERS, 3)
