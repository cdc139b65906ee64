"""ChainState from genesis and through blocks: rewards, heights, unbonding, the block call order,
application stake changes and trust."""

from __future__ import annotations

import pytest

from tests.consensus.helpers import IDS, KEYS, OUTSIDER, block_hash, genesis, run_block, state, tx

A = KEYS[0]


def test_from_genesis():
    st = state(4)
    assert (st.height, st.epoch) == (0, 0)
    assert st.last_block_hash == genesis(4).hash
    assert st.delegates == IDS[:4]
    assert st.members == IDS[:4]
    assert st.total_stake == 400 and st.total_supply == 4400
    assert st.account(IDS[0]).name == "node0"
    assert st.account(OUTSIDER.node_id) is None


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
