"""ChainState transactions: every kind's effect, and a clear reason for every invalid one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.state import ChainState, InvalidTx
from consensus.tx import Tx
from tests.consensus.helpers import CHAIN, IDS, KEYS, OUTSIDER, run_block, state, tx

A, B, C = KEYS[:3]


def test_transfer_moves_balance_and_opens_recipient_account():
    st = state()
    t = tx(A, "transfer", [OUTSIDER.node_id, 300])
    assert st.check_tx(t) is None
    st.apply_tx(t)
    assert st.account(A.node_id).balance == 700
    assert st.account(A.node_id).nonce == 1
    assert st.account(OUTSIDER.node_id).balance == 300


def test_stake_and_unstake():
    st = state(unbonding_blocks=10)
    st.apply_tx(tx(A, "stake", [250]))
    acc = st.account(A.node_id)
    assert (acc.balance, acc.stake) == (750, 350)
    st.apply_tx(tx(A, "unstake", [50], nonce=2))
    acc = st.account(A.node_id)
    assert acc.stake == 300 and acc.unbonding == [[50, 1 + 10]]  # released at height 1 + unbonding_blocks


def test_vote_replaces_and_sorts_votes():
    st = state()
    st.apply_tx(tx(A, "vote", [[IDS[3], IDS[1]]]))
    assert st.account(A.node_id).votes == sorted([IDS[3], IDS[1]])
    st.apply_tx(tx(A, "vote", [[]], nonce=2))
    assert st.account(A.node_id).votes == []


def test_register_permissioned_by_admin_only():
    st = state()
    newcomer = OUTSIDER.node_id
    assert st.check_tx(tx(B, "register", [newcomer])) == "only the admin may register members"
    assert st.check_tx(tx(A, "register", [IDS[1]])).endswith("is already a member")
    st.apply_tx(tx(A, "register", [newcomer]))
    assert st.is_member(newcomer)


def test_register_without_admin_is_closed():
    st = state(admin=None)
    assert st.check_tx(tx(A, "register", [OUTSIDER.node_id])) == \
        "registration is closed: the genesis names no admin"


def test_register_open_admission_needs_self_and_bond():
    st = state(4, admission="open", members=IDS[:2], member_bond=150)
    assert st.check_tx(tx(C, "register", [IDS[3]])) == "with open admission a node registers itself"
    assert st.check_tx(tx(C, "register", [IDS[2]])) == "stake 100 is below the member bond 150"
    st.apply_tx(tx(C, "stake", [50]))
    st.apply_tx(tx(C, "register", [IDS[2]], nonce=2))
    assert st.is_member(IDS[2])


def test_register_declares_a_sample_count():
    st = state()
    assert st.member_samples(IDS[1]) == 0                 # genesis members declare none: the cap applies
    assert st.member_samples(OUTSIDER.node_id) is None
    assert st.check_tx(tx(A, "register", [OUTSIDER.node_id, 0])) == \
        "register declared_samples must be a positive integer (got 0)"
    st.apply_tx(tx(A, "register", [OUTSIDER.node_id, 250]))
    assert st.member_samples(OUTSIDER.node_id) == 250
    back = ChainState.from_bytes(st.to_bytes(), st.genesis)
    assert back.member_samples(OUTSIDER.node_id) == 250 and back.member_samples(IDS[1]) == 0


def test_open_membership_ends_when_the_bond_is_gone():
    """One bond, one identity: unstaking below the bond ends membership, so the same coins cannot
    register a second identity while the first stays a member."""
    st = state(4, admission="open", members=[], member_bond=100, unbonding_blocks=2)
    run_block(st, txs=[tx(C, "register", [IDS[2]])])
    assert st.is_member(IDS[2])
    run_block(st, txs=[tx(C, "unstake", [100], nonce=2)])
    assert not st.is_member(IDS[2])                       # the bond left with the stake
    run_block(st)
    run_block(st)                                         # unbonded: the coins are C's balance again
    fresh = OUTSIDER.node_id
    run_block(st, txs=[tx(C, "transfer", [fresh, 1100], nonce=3)])
    run_block(st, txs=[tx(OUTSIDER, "stake", [100]), tx(OUTSIDER, "register", [fresh], nonce=2)])
    assert st.is_member(fresh) and not st.is_member(IDS[2])
    assert [m for m in st.members if m in (IDS[2], fresh)] == [fresh]


def test_open_membership_ends_when_penalties_take_the_stake_below_the_bond():
    st = state(4, admission="open", members=IDS[:2], member_bond=100)
    run_block(st, producer=IDS[0], stake_changes=[(IDS[1], -1, "update rejected")])
    assert not st.is_member(IDS[1]) and st.is_member(IDS[0])


def test_permissioned_members_stay_whatever_their_stake():
    st = state(4, member_bond=100)
    run_block(st, txs=[tx(B, "unstake", [100])], stake_changes=[(IDS[2], -100, "penalty")])
    assert st.is_member(IDS[1]) and st.is_member(IDS[2])


def test_wrong_nonce_and_replay():
    st = state()
    assert "nonce 2 is not the sender's next nonce 1" in st.check_tx(tx(A, "stake", [1], nonce=2))
    t = tx(A, "stake", [1])
    st.apply_tx(t)
    assert "nonce 1 is not the sender's next nonce 2" in st.check_tx(t)
    with pytest.raises(InvalidTx, match="replayed or out of order"):
        st.apply_tx(t)


def test_insufficient_funds():
    st = state()
    assert st.check_tx(tx(A, "transfer", [IDS[1], 1001])) == "balance 1000 is less than the amount 1001"
    assert st.check_tx(tx(A, "stake", [1001])) == "balance 1000 is less than the amount 1001"
    assert st.check_tx(tx(A, "unstake", [101])) == "stake 100 is less than the amount 101"


def test_wrong_chain_bad_signature_unknown_sender():
    st = state()
    assert "wrong chain id 'other'" in st.check_tx(tx(A, "stake", [1], chain_id="other"))
    forged = replace(tx(A, "stake", [1]), args=[2])
    assert st.check_tx(forged) == "bad signature"
    assert st.check_tx(forged, verify_signature=False) is None
    assert "has no account" in st.check_tx(tx(OUTSIDER, "stake", [1]))
    assert "vote for unknown account" in st.check_tx(tx(A, "vote", [[OUTSIDER.node_id]]))


@pytest.mark.parametrize("kind,args,expected", [
    ("transfer", [IDS[1]], "transfer args must be [to, amount]"),
    ("transfer", ["zz", 5], "transfer recipient must be a node id"),
    ("transfer", [IDS[1], 0], "transfer amount must be a positive integer"),
    ("transfer", [IDS[1], -3], "transfer amount must be a positive integer"),
    ("transfer", [IDS[1], True], "transfer amount must be a positive integer"),
    ("transfer", [IDS[1], 1.5], "transfer amount must be a positive integer"),
    ("transfer", [IDS[1], 2**64], "transaction cannot be encoded"),
    ("stake", ["5"], "stake amount must be a positive integer"),
    ("stake", [], "stake args must be [amount]"),
    ("unstake", [0], "unstake amount must be a positive integer"),
    ("vote", [IDS[1]], "vote args must be [[candidate, ...]]"),
    ("vote", [[IDS[1], IDS[1]]], "vote candidates must be distinct"),
    ("vote", [["zz"]], "every vote candidate must be a node id"),
    ("vote", [IDS[:1] * 31], "more than max_votes (30)"),
    ("register", ["x"], "register args must be [member_id]"),
    ("register", [], "register args must be [member_id]"),
    ("register", [{"a": 1}], "register args must be [member_id]"),
    ("register", [IDS[0], -3], "register declared_samples must be a positive integer"),
    ("register", [IDS[0], 5, 6], "register args must be [member_id]"),
])
def test_bad_args_give_reasons_not_exceptions(kind, args, expected):
    st = state()
    t = Tx(kind, CHAIN, A.node_id, 1, args)
    assert expected in st.check_tx(t)
    with pytest.raises(InvalidTx):
        st.apply_tx(t)


@pytest.mark.parametrize("t,expected", [
    (Tx("mint", CHAIN, IDS[0], 1, [5]), "unknown transaction kind"),
    (Tx("stake", CHAIN, "nobody", 1, [5]), "sender must be a node id"),
    (Tx("stake", CHAIN, IDS[0], "1", [5]), "nonce must be a positive integer"),
    (Tx("stake", CHAIN, IDS[0], 0, [5]), "nonce must be a positive integer"),
    (Tx("stake", CHAIN, IDS[0], 1, (5,)), "args must be a list"),
    (Tx("stake", CHAIN, IDS[0], 1, [object()]), "transaction cannot be encoded"),
    (Tx("vote", CHAIN, IDS[0], 1, [["ab" * 32] * 30 + ["x" * 20000]]), "exceeds max_tx_bytes"),
    ("not a tx", "not a transaction"),
])
def test_malformed_transactions(t, expected):
    assert expected in state().check_tx(t)


def test_failed_apply_leaves_state_unchanged():
    st = state()
    before = st.root()
    with pytest.raises(InvalidTx):
        st.apply_tx(tx(A, "transfer", [IDS[1], 5000]))
    assert st.root() == before
