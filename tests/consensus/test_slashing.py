"""Evidence of equivocation in the state: who is slashed and jailed, once per offence, and why
evidence is refused."""

from __future__ import annotations

from dataclasses import replace

import pytest

from consensus.equivocation import Evidence
from consensus.header import EMPTY_HASH
from consensus.messages import Proposal, Vote
from gossip.codec import unpack
from tests.consensus.helpers import CHAIN, IDS, KEYS, OUTSIDER, block_hash, double_precommit, run_block, state, tx

A, B, C = KEYS[:3]


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
