"""Property: the total supply changes only by rewards, penalties and slashes, whatever blocks do."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as hs

from consensus.state import ChainState
from consensus.tx import TX_KINDS
from tests.consensus.helpers import IDS, KEYS, OUTSIDER, block_hash, double_precommit, state, tx

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
