"""Mempool: pending nonces, duplicates, capacity, reap order and eviction after a block."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from consensus.mempool import Mempool
from consensus.tx import Tx
from gossip.codec import pack
from tests.consensus.helpers import IDS, KEYS, OUTSIDER, run_block, state, tx

A, B, C = KEYS[:3]


def _size(t: Tx) -> int:
    return len(pack(t.to_wire()))


def test_a_sender_may_queue_consecutive_nonces():
    st, pool = state(), Mempool()
    txs = [tx(A, "stake", [10], nonce=n) for n in (1, 2, 3)]
    for t in txs:
        assert pool.add(t, st) is None
    assert "nonce 5 is not the sender's next nonce 4" in pool.add(tx(A, "stake", [10], nonce=5), st)
    assert "next nonce 4" in pool.add(tx(A, "stake", [11], nonce=1), st)  # reuses a pending nonce
    assert len(pool) == 3 and pool.reap(10, 10**6) == txs


def test_pending_spending_is_counted():
    st, pool = state(), Mempool()
    assert pool.add(tx(A, "transfer", [IDS[1], 600]), st) is None
    assert pool.add(tx(A, "stake", [500], nonce=2), st) == "stale: balance 400 is less than the amount 500"
    assert pool.add(tx(A, "stake", [400], nonce=2), st) is None


def test_duplicates_and_invalid_are_refused():
    st, pool = state(), Mempool()
    t = tx(A, "stake", [10])
    assert pool.add(t, st) is None
    assert pool.add(t, st) == "duplicate: already in the mempool"
    assert pool.add(replace(tx(B, "stake", [10]), args=[11]), st) == "invalid: bad signature"
    assert pool.add(tx(A, "stake", [10], chain_id="x"), st).startswith("invalid: wrong chain id")
    assert pool.add(Tx("stake", "test-chain", A.node_id, 1, [object()]), st).startswith("invalid: transaction cannot")
    assert len(pool) == 1


def test_signature_is_verified_once_per_transaction(monkeypatch):
    st, pool = state(), Mempool()
    calls = []
    real = Tx.verify_signature
    monkeypatch.setattr(Tx, "verify_signature", lambda self: calls.append(self.hash) or real(self))
    bad = replace(tx(B, "stake", [10]), args=[11])
    good = tx(A, "stake", [10], nonce=2)  # a nonce gap: valid signature, invalid for now
    for _ in range(3):
        assert pool.add(bad, st) == "invalid: bad signature"
        assert pool.add(good, st).startswith("stale: nonce")
    assert calls == [bad.hash, good.hash]
    assert pool.is_verified(good.hash) and not pool.is_verified(bad.hash)
    pool.add(tx(A, "stake", [10]), st)
    assert pool.add(good, st) is None and len(calls) == 3


def test_too_big_and_full():
    st = state()
    big = tx(A, "vote", [sorted(IDS[:4])])
    small_limit = state(max_tx_bytes=400, max_votes=2)
    pool = Mempool(max_txs=2)
    assert pool.add(tx(A, "stake", [1]), small_limit) is None
    assert pool.add(big, small_limit) == f"invalid: {_size(big)} bytes exceeds max_tx_bytes (400)"
    assert pool.add(tx(B, "stake", [1]), st) is None
    assert pool.add(tx(C, "stake", [1]), st).startswith("full: 2 transactions")
    t1 = tx(A, "stake", [1])
    pool = Mempool(max_bytes=_size(t1) + 10)
    assert pool.add(t1, st) is None
    assert pool.add(tx(B, "stake", [1]), st).startswith("full: 1 transactions")
    assert pool.total_bytes == _size(t1)


def test_reap_orders_by_arrival_and_nonce_and_respects_limits():
    st, pool = state(), Mempool()
    order = [tx(A, "stake", [1]), tx(B, "stake", [1]), tx(A, "vote", [IDS[:3]], nonce=2), tx(C, "stake", [1]),
             tx(B, "stake", [2], nonce=2)]
    for t in order:
        assert pool.add(t, st) is None
    assert pool.reap(10, 10**6) == order
    assert pool.reap(2, 10**6) == order[:2]
    limit = _size(order[0]) + _size(order[1]) + _size(order[3])  # A's bigger second tx does not fit
    assert _size(order[2]) > _size(order[3])
    assert pool.reap(10, limit) == [order[0], order[1], order[3]]
    # once A's nonce 2 is skipped, nothing later of A can follow; B's nonce 2 still fits later on
    assert pool.reap(10, limit + _size(order[4])) == [order[0], order[1], order[3], order[4]]
    assert pool.reap(0, 10**6) == [] and Mempool().reap(5, 10**6) == []


def test_reap_leaves_out_what_depends_on_a_skipped_transaction():
    st, pool = state(), Mempool()
    fund = tx(A, "transfer", [OUTSIDER.node_id, 50])
    spend = tx(OUTSIDER, "stake", [50])
    assert pool.add(fund, st) is None
    assert pool.add(spend, st) is None  # valid only after the transfer
    assert pool.reap(10, 10**6) == [fund, spend]
    assert pool.reap(10, _size(spend)) == []  # the transfer does not fit, so the stake cannot apply


def test_update_evicts_committed_and_now_invalid():
    st, pool = state(), Mempool()
    a1, a2, a3 = (tx(A, "stake", [100], nonce=n) for n in (1, 2, 3))
    b1 = tx(B, "transfer", [IDS[2], 900])
    c1 = tx(C, "unstake", [100])
    for t in (a1, a2, a3, b1, c1):
        assert pool.add(t, st) is None
    # the block carries a1 and a different tx of B's that spends its balance and takes its nonce 1
    other_b1 = tx(B, "stake", [950])
    run_block(st, txs=[a1, other_b1])
    pool.update([a1, other_b1], st)
    assert [t.hash for t in pool.reap(10, 10**6)] == [a2.hash, a3.hash, c1.hash]
    assert pool.get(b1.hash) is None and pool.get(a2.hash) == a2
    assert b1.hash not in pool and a1.hash not in pool
    # a2 goes in through another node's block: a3 stays valid; c1's unstake is spent by a penalty
    run_block(st, txs=[a2], stake_changes=[(IDS[2], -100, "penalty")])
    pool.update([a2], st)
    assert [t.hash for t in pool.reap(10, 10**6)] == [a3.hash]
    assert pool.total_bytes == _size(a3)


def test_dropping_a_nonce_drops_the_senders_queue_behind_it():
    st, pool = state(), Mempool()
    a1, a2 = tx(A, "unstake", [100]), tx(A, "stake", [50], nonce=2)
    assert pool.add(a1, st) is None and pool.add(a2, st) is None
    run_block(st, producer=IDS[1], stake_changes=[(IDS[0], -50, "penalty")])
    pool.update([], st)
    assert len(pool) == 0 and pool.total_bytes == 0  # a1 no longer applies, and a2 cannot precede it


def test_list_and_get_are_json_ready():
    st, pool = state(), Mempool()
    t = tx(A, "vote", [[IDS[1]]])
    pool.add(t, st)
    listed = pool.list()
    assert listed == [{**t.to_json(), "size": _size(t)}]
    json.dumps(listed)
    assert pool.get(t.hash) == t and pool.get(b"\x00" * 32) is None


def test_limits_must_be_positive():
    with pytest.raises(ValueError):
        Mempool(max_txs=0)


def test_pending_transactions_are_gossiped_again_with_a_growing_wait_and_within_limits():
    st, pool = state(), Mempool()
    h = st.height
    txs = [tx(A, "stake", [10], nonce=1), tx(B, "stake", [10], nonce=1)]
    for t in txs:
        assert pool.add(t, st) is None
    assert pool.due_for_gossip(h + 1, 10, 10**6) == []  # just gossiped on arrival
    assert pool.due_for_gossip(h + 2, 10, 10**6) == txs
    assert pool.due_for_gossip(h + 5, 10, 10**6) == []  # the wait doubled to 4 blocks
    assert pool.due_for_gossip(h + 6, 1, 10**6) == txs[:1]  # at most one this time
    assert pool.due_for_gossip(h + 6, 10, _size(txs[1]) - 1) == []  # the bytes do not allow B's
    assert pool.due_for_gossip(h + 6, 10, 10**6) == txs[1:]
    waits = []
    last = h + 6
    for height in range(h + 7, h + 400):
        if pool.due_for_gossip(height, 10, 10**6):
            waits.append(height - last)
            last = height
    assert waits[:4] == [8, 16, 32, 64] and set(waits[4:]) == {64}  # the wait stops growing at 64
