"""HeightVotes: quorums per round and kind, one vote per voter per round and kind, equivocation
evidence for either kind, commits that verify, and memory bounded however many rounds pass."""

from __future__ import annotations

import pytest

from consensus.election import quorum
from consensus.header import EMPTY_HASH
from consensus.messages import Vote
from consensus.votes import HeightVotes
from gossip.crypto import sha256
from tests.consensus.helpers import CHAIN, IDS, KEYS, OUTSIDER

H = 5
A, B = sha256(b"block a"), sha256(b"block b")
VOTERS = IDS[:4]  # quorum(4) == 3


def vote(kind: str, i: int, rnd: int, block: bytes, height: int = H) -> Vote:
    return Vote(kind, CHAIN, height, rnd, block, IDS[i]).signed(KEYS[i])


@pytest.fixture
def votes() -> HeightVotes:
    return HeightVotes(H, VOTERS, quorum(len(VOTERS)))


@pytest.mark.parametrize("kind", ["prevote", "precommit"])
def test_quorum_per_round_and_kind(votes: HeightVotes, kind: str) -> None:
    for i in range(2):
        assert votes.add(vote(kind, i, 2, A)) == (True, None)
    assert not votes.has_quorum(kind, 2, A) and votes.quorum_for(kind, 2) is None
    votes.add(vote(kind, 2, 2, A))
    assert votes.has_quorum(kind, 2, A) and votes.quorum_for(kind, 2) == A
    other = "precommit" if kind == "prevote" else "prevote"
    assert votes.quorum_for(other, 2) is None and votes.quorum_for(kind, 3) is None
    assert votes.total(kind, 2) == 3 and votes.count(kind, 2, A) == 3


def test_split_votes_make_no_quorum_but_count_in_the_total(votes: HeightVotes) -> None:
    votes.add(vote("prevote", 0, 1, A))
    votes.add(vote("prevote", 1, 1, B))
    votes.add(vote("prevote", 2, 1, EMPTY_HASH))
    assert votes.total("prevote", 1) == 3 and votes.quorum_for("prevote", 1) is None


def test_nil_can_have_a_quorum(votes: HeightVotes) -> None:
    for i in range(3):
        votes.add(vote("prevote", i, 4, EMPTY_HASH))
    assert votes.quorum_for("prevote", 4) == EMPTY_HASH


def test_outsiders_and_other_heights_are_not_recorded(votes: HeightVotes) -> None:
    stranger = Vote("prevote", CHAIN, H, 1, A, OUTSIDER.node_id).signed(OUTSIDER)
    assert votes.add(stranger) == (False, None)
    assert votes.add(vote("prevote", 0, 1, A, height=H + 1)) == (False, None)
    assert votes.total("prevote", 1) == 0


def test_a_repeat_is_not_new_and_not_evidence(votes: HeightVotes) -> None:
    v = vote("precommit", 0, 1, A)
    assert votes.add(v) == (True, None)
    assert votes.add(v) == (False, None)
    assert votes.has(v) and not votes.has(vote("precommit", 0, 1, B))


@pytest.mark.parametrize("kind", ["prevote", "precommit"])
@pytest.mark.parametrize("second", [B, EMPTY_HASH])
def test_two_votes_of_a_kind_in_a_round_are_evidence(votes: HeightVotes, kind: str, second: bytes) -> None:
    first = vote(kind, 1, 3, A)
    votes.add(first)
    new, ev = votes.add(vote(kind, 1, 3, second))
    assert not new and ev is not None and ev.kind == f"double_{kind}"
    assert ev.offender == IDS[1] and ev.check(CHAIN) is None
    assert votes.count(kind, 3, A) == 1 and votes.count(kind, 3, second) == 0  # the first stays counted


def test_votes_in_different_rounds_are_no_evidence(votes: HeightVotes) -> None:
    votes.add(vote("precommit", 1, 3, A))
    assert votes.add(vote("precommit", 1, 4, B)) == (True, None)


def test_commit_from_one_round_at_quorum_verifies(votes: HeightVotes) -> None:
    for i in range(2):
        votes.add(vote("precommit", i, 7, A))
    votes.add(vote("precommit", 2, 6, A))  # another round's precommit does not count for round 7
    assert votes.commit(7, A) is None
    votes.add(vote("precommit", 3, 7, A))
    commit = votes.commit(7, A)
    assert commit is not None and (commit.height, commit.round, commit.block_hash) == (H, 7, A)
    assert [v for v, _ in commit.signatures] == sorted([IDS[0], IDS[1], IDS[3]])
    assert commit.verify(CHAIN, VOTERS, 3) is None
    assert commit.verify("other-chain", VOTERS, 3) is not None


def test_rounds_are_bounded_but_kept_rounds_survive() -> None:
    votes = HeightVotes(H, VOTERS, 3, max_rounds=8)
    for i in range(3):
        votes.add(vote("prevote", i, 1, A))
    votes.keep({1})
    for rnd in range(2, 40):
        votes.add(vote("prevote", 0, rnd, B))
    assert len(votes.rounds()) == 8 and 1 in votes.rounds()
    assert votes.has_quorum("prevote", 1, A)


def test_many_rounds_keep_a_bounded_number_of_vote_sets() -> None:
    """A delegate voting in 20,000 rounds of one height (100,000 once made each vote cost 121 ms,
    as every vote re-tallied every round) leaves at most ``max_rounds`` rounds held."""
    votes = HeightVotes(H, VOTERS, 3)
    template = vote("prevote", 0, 0, A)
    for rnd in range(20_000):
        votes.add(Vote("prevote", CHAIN, H, rnd, A, IDS[0], template.signature))
    assert len(votes.rounds()) == votes.max_rounds
    assert votes.rounds()[0] == 20_000 - votes.max_rounds
