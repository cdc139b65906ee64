"""Missed slots: their penalty, jailing, and who votes and proposes while delegates are jailed."""

from __future__ import annotations

from tests.consensus.helpers import IDS, run_block, state


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
