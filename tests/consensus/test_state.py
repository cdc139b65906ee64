"""ChainState: every transaction kind, blocks, jailing, slashing, roots and snapshots."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from consensus.equivocation import Evidence
from consensus.header import EMPTY_HASH
from consensus.messages import Proposal, Vote
from consensus.state import ChainState, InvalidTx, StateError
from consensus.tx import TX_KINDS, Tx
from gossip.codec import pack, unpack
from tests.consensus.helpers import (
    CHAIN,
    IDS,
    KEYS,
    OUTSIDER,
    block_hash,
    double_precommit,
    genesis,
    run_block,
    state,
    tx,
)

A, B, C, D = KEYS[:4]


def test_from_genesis():
    st = state(4)
    assert (st.height, st.epoch) == (0, 0)
    assert st.last_block_hash == genesis(4).hash
    assert st.delegates == IDS[:4]
    assert st.members == IDS[:4]
    assert st.total_stake == 400 and st.total_supply == 4400
    assert st.account(IDS[0]).name == "node0"
    assert st.account(OUTSIDER.node_id) is None


# -- valid transactions -----------------------------------------------------------------------------

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


# -- invalid transactions ---------------------------------------------------------------------------

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


# -- blocks: rewards, unbonding, missed slots -------------------------------------------------------

def test_block_reward_height_and_hash():
    st = state()
    assert run_block(st, producer=IDS[2]) is False
    assert (st.height, st.last_block_hash) == (1, block_hash(1))
    acc = st.account(IDS[2])
    assert (acc.stake, acc.rewards_total, acc.produced) == (110, 10, 1)


def test_unbonding_released_at_the_right_height():
    st = state(unbonding_blocks=10)
    run_block(st, txs=[tx(A, "unstake", [40])])  # block 1: release at 11
    for _ in range(9):
        run_block(st, producer=IDS[1])
    assert st.height == 10
    assert st.account(A.node_id).unbonding == [[40, 11]] and st.account(A.node_id).balance == 1000
    run_block(st, producer=IDS[1])
    acc = st.account(A.node_id)
    assert acc.unbonding == [] and acc.balance == 1040


def test_three_missed_turns_in_a_row_jail():
    st = state()
    for _ in range(2):
        run_block(st, producer=IDS[0], missed=[IDS[1]])
    acc = st.account(IDS[1])
    assert (acc.missed_in_row, acc.stake, acc.jailed_until) == (2, 98, 0)
    run_block(st, producer=IDS[0], missed=[IDS[1]])
    acc = st.account(IDS[1])
    assert (acc.missed_in_row, acc.missed_total, acc.penalties_total) == (0, 3, 3)
    assert acc.stake == 97 and acc.jailed_until == 3 + st.genesis.jail_blocks
    assert IDS[1] not in st.proposers(4)
    assert IDS[1] in st.voters(4)  # jailed, but the voter set never falls below min_delegates (4)
    assert IDS[1] in st.proposers(23) and IDS[1] in st.delegates


def test_producing_resets_the_missed_streak():
    st = state()
    run_block(st, producer=IDS[0], missed=[IDS[1]])
    run_block(st, producer=IDS[0], missed=[IDS[1]])
    run_block(st, producer=IDS[1])
    run_block(st, producer=IDS[0], missed=[IDS[1]])
    acc = st.account(IDS[1])
    assert (acc.missed_in_row, acc.missed_total, acc.jailed_until) == (1, 3, 0)


def test_missed_penalty_floors_at_zero():
    st = state(missed_slot_penalty=60)
    run_block(st, producer=IDS[0], missed=[IDS[1], IDS[1]])
    acc = st.account(IDS[1])
    assert acc.stake == 0 and acc.penalties_total == 100


def test_block_call_order_is_enforced():
    st = state()
    with pytest.raises(RuntimeError, match="end_block without begin_block"):
        st.end_block()
    with pytest.raises(ValueError, match="expected block 1, got 2"):
        st.begin_block(2, block_hash(2), IDS[0], [])
    with pytest.raises(ValueError, match="unknown producer"):
        st.begin_block(1, block_hash(1), OUTSIDER.node_id, [])
    with pytest.raises(ValueError, match="unknown producer or missed"):
        st.begin_block(1, block_hash(1), IDS[0], [OUTSIDER.node_id])
    with pytest.raises(ValueError, match="32 bytes"):
        st.begin_block(1, b"short", IDS[0], [])
    st.begin_block(1, block_hash(1), IDS[0], [])
    with pytest.raises(RuntimeError, match="block 1 is still open"):
        st.begin_block(2, block_hash(2), IDS[0], [])
    with pytest.raises(RuntimeError, match="cannot snapshot"):
        st.root()


# -- application stake changes ----------------------------------------------------------------------

def test_stake_changes_rewards_and_penalties():
    st = state()
    run_block(st, stake_changes=[(IDS[1], 25, "accepted update"), (IDS[2], -150, "rejected update"),
                                 (OUTSIDER.node_id, 5, "reward"), ("ab" * 32, -5, "unknown")])
    b, c = st.account(IDS[1]), st.account(IDS[2])
    assert (b.stake, b.rewards_total) == (125, 25)
    assert (c.stake, c.penalties_total) == (0, 100)
    assert st.account(OUTSIDER.node_id).stake == 5
    assert st.account("ab" * 32) is None


@pytest.mark.parametrize("bad", [[("zz", 5, "r")], [(IDS[1], 1.0, "r")], [(IDS[1], True, "r")],
                                 [(IDS[1], 5)], [(IDS[1], 5, None)]])
def test_malformed_stake_changes_change_nothing(bad):
    st = state()
    before = st.root()
    with pytest.raises(ValueError, match="stake change"):
        st.apply_stake_changes([(IDS[0], 5, "ok"), *bad])
    assert st.root() == before


def test_trust_is_stake_share():
    st = state()
    st.apply_tx(tx(A, "stake", [200]))
    assert st.trust(IDS[0]) == pytest.approx(300 / 600)
    assert st.trust(OUTSIDER.node_id) == 0.0
    st.apply_stake_changes([(i, -1000, "wipe") for i in IDS[:4]])
    assert st.total_stake == 0 and st.trust(IDS[0]) == 0.0


# -- evidence ---------------------------------------------------------------------------------------

def test_evidence_slashes_ten_percent_and_jails():
    st = state()
    run_block(st)
    st.begin_block(2, block_hash(2), IDS[0], [])
    assert st.apply_evidence(double_precommit(B, 1)) is None
    acc = st.account(IDS[1])
    assert (acc.stake, acc.slashed_total, acc.jailed_until) == (90, 10, 2 + st.genesis.jail_blocks)
    st.end_block()
    assert IDS[1] not in st.proposers(3)


def test_same_offence_is_punished_once():
    st = state()
    run_block(st)
    ev = double_precommit(B, 1)
    st.begin_block(2, block_hash(2), IDS[0], [])
    assert st.apply_evidence(ev) is None
    assert "already punished" in st.apply_evidence(ev)
    assert "already punished" in st.apply_evidence(Evidence(ev.kind, ev.second, ev.first))
    other_pair = Evidence(ev.kind, ev.first, replace(ev.second, block_hash=b"\x01" * 32).signed(B))
    assert other_pair.hash != ev.hash
    assert "already punished" in st.apply_evidence(other_pair)
    assert st.account(IDS[1]).stake == 90
    assert st.apply_evidence(double_precommit(B, 2)) is None  # another height is another offence
    assert st.account(IDS[1]).stake == 81


def test_inapplicable_evidence_gives_reasons():
    st = state(unbonding_blocks=10)
    for _ in range(12):
        run_block(st)
    st.begin_block(13, block_hash(13), IDS[0], [])
    assert "older than unbonding_blocks (10)" in st.apply_evidence(double_precommit(B, 2))
    assert "is ahead of block 13" in st.apply_evidence(double_precommit(B, 14))
    assert "has no account" in st.apply_evidence(double_precommit(OUTSIDER, 12))
    assert st.apply_evidence(double_precommit(B, 12, chain_id="other")) == "evidence from another chain"
    ev = double_precommit(B, 12)
    forged = Evidence(ev.kind, ev.first, replace(ev.second, signature=b"\x00" * 64))
    assert st.apply_evidence(forged) == "evidence signature invalid"
    assert st.apply_evidence("junk") == "not evidence"
    assert st.account(IDS[1]).slashed_total == 0
    assert st.apply_evidence(double_precommit(B, 3)) is None  # exactly unbonding_blocks old is still in


def test_slash_rounding_and_unbonding_after_the_offence():
    st = state(unbonding_blocks=10)
    run_block(st, txs=[tx(B, "unstake", [95])])  # block 1, before the offence at height 2
    run_block(st)
    run_block(st, txs=[tx(C, "unstake", [50])])  # block 3, after C's offence at height 2
    st.begin_block(4, block_hash(4), IDS[0], [])
    assert st.apply_evidence(double_precommit(B, 2)) is None
    assert st.apply_evidence(double_precommit(C, 2)) is None
    b, c = st.account(IDS[1]), st.account(IDS[2])
    assert (b.stake, b.unbonding, b.slashed_total) == (4, [[95, 11]], 1)  # floor(0.5) -> at least 1
    assert (c.stake, c.unbonding, c.slashed_total) == (45, [[45, 13]], 10)


def test_punished_records_are_pruned_after_the_window():
    st = state(unbonding_blocks=10)
    run_block(st)
    run_block(st, evidence=(double_precommit(B, 1),))
    assert len(unpack(st.to_bytes())[8]) == 1
    for _ in range(9):
        run_block(st)
    assert st.height == 11 and len(unpack(st.to_bytes())[8]) == 0


# -- determinism, copies, snapshots -----------------------------------------------------------------

def _history(st: ChainState, amount: int = 30) -> ChainState:
    run_block(st, txs=[tx(A, "transfer", [OUTSIDER.node_id, amount]), tx(B, "vote", [[IDS[2], IDS[3]]])])
    run_block(st, producer=IDS[1], missed=[IDS[2]], txs=[tx(C, "unstake", [10])],
              stake_changes=[(IDS[3], 7, "update"), (IDS[0], -2, "rejected")])
    run_block(st, producer=IDS[2], evidence=(double_precommit(D, 2),))
    return st


def test_root_is_deterministic():
    assert _history(state()).root() == _history(state()).root()
    assert _history(state()).root() != _history(state(), amount=31).root()
    assert state(4).root() != state(4, slot_ms=3000).root()  # the genesis is part of the state


def test_copy_is_independent():
    st = _history(state())
    stake = st.account(IDS[0]).stake
    twin = st.copy()
    assert twin.root() == st.root()
    run_block(twin, txs=[tx(A, "stake", [1], nonce=2)])
    assert twin.root() != st.root() and st.height == 3
    assert st.account(IDS[0]).stake == stake and twin.account(IDS[0]).stake == stake + 1 + 10
    st.account(IDS[0]).unbonding.append([1, 1])  # account() hands out copies
    assert st.account(IDS[0]).unbonding == []


def test_snapshot_round_trip():
    st = _history(state())
    data = st.to_bytes()
    back = ChainState.from_bytes(data, st.genesis)
    assert back.to_bytes() == data and back.root() == st.root()
    assert (back.height, back.epoch, back.delegates, back.members) == (st.height, st.epoch, st.delegates, st.members)
    run_block(back, producer=IDS[2])
    run_block(st, producer=IDS[2])
    assert back.root() == st.root()


@pytest.mark.parametrize("mangle,expected", [
    (lambda d, o: b"\xc1garbage", "chain state snapshot is corrupt: malformed message"),
    (lambda d, o: d[:-3], "chain state snapshot is corrupt: truncated message"),
    (lambda d, o: b"", "corrupt: empty message"),
    (lambda d, o: pack([1, 2]), "not a 9-element array"),
    (lambda d, o: pack([9, *o[1:]]), "unsupported format 9"),
    (lambda d, o: pack([o[0], b"\x00" * 32, *o[2:]]), "belongs to a different genesis"),
    (lambda d, o: pack([*o[:2], -1, *o[3:]]), "bad height"),
    (lambda d, o: pack([*o[:5], [["zz"]], *o[6:]]), "account must be a fixed-length array"),
    (lambda d, o: pack([*o[:5], [[*o[5][0][:2], -5, *o[5][0][3:]]], *o[6:]]), "amounts and counters must be uints"),
    (lambda d, o: pack([*o[:6], list(reversed(o[6])), *o[7:]]), "not in canonical form"),
    (lambda d, o: pack([*o[:7], ["ab" * 32], o[8]]), "a delegate has no account"),
    (lambda d, o: pack([*o[:8], [[b"x", IDS[0], 1]]]), "punished entries must be"),
    (lambda d, o: pack([*o[:6], [IDS[0]], *o[7:]]), "members must be [node id, declared samples] pairs"),
])
def test_corrupt_snapshots_raise_clear_errors(mangle, expected):
    st = _history(state())
    data = st.to_bytes()
    with pytest.raises(StateError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        ChainState.from_bytes(mangle(data, unpack(data)), st.genesis)


def test_json_views():
    st = _history(state())
    view = st.account_json(IDS[0])
    assert view["id"] == IDS[0] and view["delegate"] and view["member"]
    assert isinstance(view["trust"], float) and view["jailed"] is False
    assert st.account_json(OUTSIDER.node_id)["balance"] == 30
    assert st.account_json("ab" * 32) is None
    dj = st.delegates_json()
    assert [d["id"] for d in dj] == st.delegates and dj[3]["jailed"] is True
    assert st.status_json()["height"] == 3
    json.dumps([view, dj, st.status_json()])


# -- property: supply changes only by rewards, penalties and slashes -------------------------------

_ACTORS = [*KEYS[:5], OUTSIDER]
_tx_op = hs.tuples(hs.integers(0, 5), hs.sampled_from(TX_KINDS), hs.integers(1, 60) | hs.integers(1, 1500),
                   hs.integers(0, 5))
_block_op = hs.fixed_dictionaries({
    "producer": hs.integers(0, 3),
    "missed": hs.lists(hs.integers(0, 3), max_size=3),
    "txs": hs.lists(_tx_op, max_size=6),
    "evidence": hs.none() | hs.integers(0, 3),
    "changes": hs.lists(hs.tuples(hs.integers(0, 5), hs.integers(-60, 60)), max_size=3),
})


def _args(kind: str, amount: int, target: int) -> list:
    tid = _ACTORS[target].node_id
    return {"transfer": [tid, amount], "vote": [sorted({tid, _ACTORS[(target + 1) % 6].node_id})],
            "register": [tid]}.get(kind, [amount])


def _ledger(st: ChainState) -> tuple[int, int]:
    accounts = [st.account(i) for i in st.account_ids()]
    assert all(v >= 0 for a in accounts for v in (a.balance, a.stake, *(e[0] for e in a.unbonding)))
    flows = sum(a.rewards_total - a.penalties_total - a.slashed_total for a in accounts)
    return st.total_supply, flows


def _play(blocks: list[dict]) -> ChainState:
    st = state(5, epoch_length=5, unbonding_blocks=3, max_delegates=3, min_delegates=2, members=IDS[:2])
    supply0, flows0 = _ledger(st)
    for blk in blocks:
        height = st.height + 1
        st.begin_block(height, block_hash(height), IDS[blk["producer"]], [IDS[m] for m in blk["missed"]])
        if blk["evidence"] is not None:
            st.apply_evidence(double_precommit(KEYS[blk["evidence"]], height))
        for sender, kind, amount, target in blk["txs"]:
            acc = st.account(_ACTORS[sender].node_id)
            t = tx(_ACTORS[sender], kind, _args(kind, amount, target), nonce=(acc.nonce + 1) if acc else 1)
            if st.check_tx(t) is None:
                st.apply_tx(t)
        st.apply_stake_changes([(_ACTORS[i].node_id, d, "app") for i, d in blk["changes"]])
        st.end_block()
        supply, flows = _ledger(st)
        assert supply - supply0 == flows - flows0
    return st


@settings(max_examples=60, deadline=None)
@given(hs.lists(_block_op, min_size=1, max_size=20))
def test_supply_is_conserved_except_rewards_penalties_slashes(blocks):
    st = _play(blocks)
    assert _play(blocks).root() == st.root()
    assert ChainState.from_bytes(st.to_bytes(), st.genesis).root() == st.root()
    assert 2 <= len(st.delegates) <= 3


@pytest.mark.parametrize("kind", ["prevote", "precommit"])
def test_double_votes_of_either_kind_in_a_round_are_slashable_nil_included(kind):
    st = state()
    run_block(st)
    a = Vote(kind, CHAIN, 2, 5, b"\x01" * 32, IDS[1]).signed(B)
    nil = Vote(kind, CHAIN, 2, 5, EMPTY_HASH, IDS[1]).signed(B)
    other_round = Vote(kind, CHAIN, 2, 6, EMPTY_HASH, IDS[1]).signed(B)
    st.begin_block(2, block_hash(2), IDS[0], [])
    assert "not by one voter at one height and round" in st.apply_evidence(Evidence(f"double_{kind}", a, other_round))
    assert st.apply_evidence(Evidence(f"double_{kind}", a, nil)) is None
    assert st.account(IDS[1]).slashed_total == 10


def test_double_proposals_in_a_round_are_slashable():
    st = state()
    run_block(st)
    a = Proposal(CHAIN, 2, 5, b"\x01" * 32, -1, IDS[1]).signed(B)
    b = Proposal(CHAIN, 2, 5, b"\x02" * 32, -1, IDS[1]).signed(B)
    st.begin_block(2, block_hash(2), IDS[0], [])
    assert st.apply_evidence(Evidence("double_proposal", a, a)) == "proposals are identical"
    assert st.apply_evidence(Evidence("double_proposal", a, b)) is None
    assert st.account(IDS[1]).slashed_total == 10


def test_evidence_against_a_key_without_stake_is_refused_before_its_signatures_are_checked(monkeypatch):
    st = state()
    run_block(st, txs=[tx(A, "transfer", [OUTSIDER.node_id, 5])])  # the outsider now has an account, no stake
    checks = []
    monkeypatch.setattr(Evidence, "check", lambda self, chain_id: checks.append(self) or None)
    st.begin_block(2, block_hash(2), IDS[0], [])
    assert "no stake and is no delegate" in st.apply_evidence(double_precommit(OUTSIDER, 1))
    assert checks == []


def test_the_voter_set_is_never_empty_and_never_below_min_delegates():
    st = state(missed_turns_to_jail=1)
    run_block(st, producer=IDS[0], missed=IDS[1:4])  # three of four delegates jailed at once
    assert st.proposers(2) == [IDS[0]]
    assert st.voters(2) == IDS[:4]  # no standby candidate: the jailed keep their vote
    run_block(st, producer=IDS[0], missed=[IDS[0]])  # and the last one too
    assert st.voters(3) == IDS[:4] and st.proposers(3) == IDS[:4]


def test_standby_candidates_step_in_before_jailed_delegates_keep_their_vote():
    st = state(5, max_delegates=4, missed_turns_to_jail=1)
    assert st.delegates == IDS[:4]
    run_block(st, producer=IDS[0], missed=[IDS[1]])
    assert st.voters(2) == sorted([IDS[0], IDS[2], IDS[3], IDS[4]])
