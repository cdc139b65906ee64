"""State roots and snapshots: deterministic roots, independent copies, round trips, and a clear
error for every kind of corrupt snapshot."""

from __future__ import annotations

import pytest

from consensus.snapshot import StateError
from consensus.state import ChainState
from gossip.codec import pack, unpack
from tests.consensus.helpers import IDS, KEYS, history, run_block, state, tx

A = KEYS[0]


def test_root_is_deterministic():
    assert history(state()).root() == history(state()).root()
    assert history(state()).root() != history(state(), amount=31).root()
    assert state(4).root() != state(4, slot_ms=3000).root()  # the genesis is part of the state


def test_copy_is_independent():
    st = history(state())
    stake = st.account(IDS[0]).stake
    twin = st.copy()
    assert twin.root() == st.root()
    run_block(twin, txs=[tx(A, "stake", [1], nonce=2)])
    assert twin.root() != st.root() and st.height == 3
    assert st.account(IDS[0]).stake == stake and twin.account(IDS[0]).stake == stake + 1 + 10
    st.account(IDS[0]).unbonding.append([1, 1])  # account() hands out copies
    assert st.account(IDS[0]).unbonding == []


def test_snapshot_round_trip():
    st = history(state())
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
    st = history(state())
    data = st.to_bytes()
    with pytest.raises(StateError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        ChainState.from_bytes(mangle(data, unpack(data)), st.genesis)
