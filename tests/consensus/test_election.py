"""Stake-weighted approval voting: scoring, ties, jailing, and elections at epoch boundaries."""

from __future__ import annotations

import pytest

from consensus.account import Account
from consensus.election import approvals, elect, quorum
from tests.consensus.helpers import IDS, KEYS, run_block, state, tx


@pytest.mark.parametrize("n,q", [(1, 1), (2, 2), (3, 3), (4, 3), (6, 5), (7, 5), (21, 15)])
def test_quorum_is_more_than_two_thirds(n, q):
    assert quorum(n) == q
    assert 3 * q > 2 * n


def _book(*stakes: int, **votes: list[int]) -> dict[str, Account]:
    book = {IDS[i]: Account(stake=s) for i, s in enumerate(stakes)}
    for who, targets in votes.items():
        book[IDS[int(who[1:])]].votes = sorted(IDS[t] for t in targets)
    return book


def test_accounts_without_votes_approve_themselves():
    book = _book(50, 300, 10, 200)
    assert approvals(book, 0, 1) == {IDS[0]: 50, IDS[1]: 300, IDS[2]: 10, IDS[3]: 200}
    assert elect(book, 0, 2, 1) == sorted([IDS[1], IDS[3]])


def test_explicit_votes_replace_self_approval_with_full_stake_each():
    book = _book(50, 300, 10, 200, v1=[0, 2])  # 1 backs 0 and 2 with all 300, not itself
    assert approvals(book, 0, 1) == {IDS[0]: 350, IDS[1]: 0, IDS[2]: 310, IDS[3]: 200}
    assert elect(book, 0, 2, 1) == sorted([IDS[0], IDS[2]])
    book = _book(50, 300, 10, 200, v1=[1, 2])  # listing itself keeps its own backing
    assert approvals(book, 0, 1)[IDS[1]] == 300


def test_ties_are_broken_by_the_smaller_id():
    book = _book(100, 100, 100, 100)
    assert elect(book, 0, 3, 1) == IDS[:3]
    assert elect(book, 0, 1, 1) == [IDS[0]]


def test_jailed_low_stake_and_vote_targets_outside_the_candidates():
    book = _book(100, 100, 0, 100, 5, v3=[2, 4])
    book[IDS[1]].jailed_until = 11
    assert set(approvals(book, 10, 1)) == {IDS[0], IDS[3], IDS[4]}  # 1 jailed, 2 has no stake
    assert approvals(book, 10, 1)[IDS[4]] == 105
    assert IDS[1] in approvals(book, 11, 1)  # jailed while height < jailed_until
    assert set(approvals(book, 11, 6)) == {IDS[0], IDS[1], IDS[3]}  # min_candidate_stake


def test_stake_and_votes_change_the_set_only_at_the_epoch_boundary():
    st = state(6, max_delegates=4)
    assert st.delegates == IDS[:4]  # equal stakes: the four smallest ids
    st.apply_tx(tx(KEYS[5], "stake", [500]))
    for _ in range(18):
        assert run_block(st) is False
    assert st.height == 18 and IDS[5] not in st.delegates
    assert run_block(st) is False and st.epoch == 0
    assert run_block(st) is True  # height 20
    assert st.epoch == 1 and st.delegates == sorted([*IDS[:3], IDS[5]])
    for k in KEYS[:3]:
        st.apply_tx(tx(k, "vote", [[IDS[4], IDS[5]]]))
    for _ in range(20):
        run_block(st, producer=IDS[5])
    assert st.height == 40 and st.epoch == 2
    assert st.delegates == sorted([IDS[3], IDS[4], IDS[5], IDS[0]])
    assert st.candidate_approvals()[IDS[4]] > st.candidate_approvals()[IDS[1]]


def test_too_few_candidates_keep_the_current_set():
    st = state(4, epoch_length=5)
    for _ in range(3):
        run_block(st, producer=IDS[0], missed=[IDS[1]])  # IDS[1] jailed at height 3
    assert st.account(IDS[1]).jailed_until == 3 + 5
    run_block(st)
    assert run_block(st) is False  # height 5: only 3 eligible candidates < min_delegates 4
    assert st.epoch == 1 and st.delegates == IDS[:4]
    assert st.proposers(6) == [IDS[0], IDS[2], IDS[3]]
    assert st.voters(6) == IDS[:4]  # no standby candidate: the jailed delegate keeps its vote


def test_jailed_delegate_leaves_at_the_boundary_and_returns_later():
    st = state(5, epoch_length=5, max_delegates=4)
    assert st.delegates == IDS[:4]
    for _ in range(3):
        run_block(st, producer=IDS[0], missed=[IDS[1]])
    run_block(st)
    assert run_block(st) is True  # height 5: IDS[1] jailed until 8, IDS[4] takes its place
    assert st.delegates == [IDS[0], IDS[2], IDS[3], IDS[4]]
    for _ in range(5):
        run_block(st, producer=IDS[4])
    # height 10: IDS[1] is free again, but lost stake to missed slots; IDS[4] earned block rewards
    assert st.height == 10 and st.delegates == [IDS[0], IDS[2], IDS[3], IDS[4]]
