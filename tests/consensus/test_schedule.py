"""Slot arithmetic and the proposer schedule: every honest node must compute the same proposer for
a slot from final data only, and every active delegate must get exactly one turn per cycle."""

from __future__ import annotations

import pytest

from consensus.schedule import Schedule, cycle_order, slot_at, slot_start_ms
from gossip.crypto import sha256
from tests.consensus.helpers import IDS

ANCHOR = sha256(b"anchor")


def fixed(anchor: bytes):
    """An anchor lookup that returns the same final block hash for every cycle."""
    return lambda first_slot: anchor


@pytest.mark.parametrize("genesis_ms, slot_ms", [(0, 2000), (1_700_000_000_000, 2000), (5, 10)])
def test_slot_boundaries_round_trip(genesis_ms: int, slot_ms: int) -> None:
    for slot in range(50):
        start = slot_start_ms(slot, genesis_ms, slot_ms)
        assert start == genesis_ms + slot * slot_ms
        assert slot_at(start, genesis_ms, slot_ms) == slot
        assert slot_at(start + slot_ms - 1, genesis_ms, slot_ms) == slot
        if slot:
            assert slot_at(start - 1, genesis_ms, slot_ms) == slot - 1


def test_times_before_genesis_map_to_slot_zero() -> None:
    assert slot_at(0, 10_000, 2000) == 0
    assert slot_at(9_999, 10_000, 2000) == 0


def test_cycle_order_is_a_permutation_independent_of_input_order() -> None:
    order = cycle_order(IDS[:6], ANCHOR)
    assert sorted(order) == sorted(IDS[:6])
    assert cycle_order(list(reversed(IDS[:6])), ANCHOR) == order
    assert cycle_order(IDS[:6], ANCHOR) == order


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_each_active_delegate_proposes_exactly_once_per_cycle(n: int) -> None:
    sched = Schedule(IDS[:n], fixed(ANCHOR))
    for cycle in range(8):
        turns = [sched.proposer(s) for s in range(cycle * n, (cycle + 1) * n)]
        assert sorted(turns) == sorted(IDS[:n])
        assert turns == sched.order(cycle)


def test_same_anchor_gives_the_same_schedule_on_every_node() -> None:
    a = Schedule(IDS[:6], fixed(ANCHOR))
    b = Schedule(list(reversed(IDS[:6])), fixed(ANCHOR))  # another node lists the delegates differently
    assert a.active == b.active == sorted(IDS[:6])
    assert a.upcoming(0, 60) == b.upcoming(0, 60)


def test_a_different_anchor_reorders_the_cycle() -> None:
    orders = {tuple(Schedule(IDS[:8], fixed(sha256(bytes([i])))).order(0)) for i in range(6)}
    assert len(orders) > 1
    assert all(sorted(o) == sorted(IDS[:8]) for o in orders)


def test_cycles_are_reshuffled_even_with_one_anchor() -> None:
    sched = Schedule(IDS[:8], fixed(ANCHOR))
    assert len({tuple(sched.order(c)) for c in range(6)}) > 1


def test_anchor_is_asked_once_per_cycle_for_the_cycle_first_slot() -> None:
    asked: list[int] = []

    def anchor_for(first_slot: int) -> bytes:
        asked.append(first_slot)
        return ANCHOR

    sched = Schedule(IDS[:4], anchor_for)
    sched.upcoming(0, 12)
    assert asked == [0, 4, 8]
    sched.proposer(5)
    sched.order(2)
    assert asked == [0, 4, 8]  # orders are cached, so a cycle's order cannot change once computed


def test_anchor_decides_the_order_of_its_own_cycle_only() -> None:
    base = Schedule(IDS[:8], fixed(ANCHOR))
    other = sha256(b"another final block")
    changed = Schedule(IDS[:8], lambda first: other if first >= 8 else ANCHOR)
    assert changed.order(0) == base.order(0)
    assert changed.order(1) != base.order(1)


def test_upcoming_lists_slots_and_their_proposers() -> None:
    sched = Schedule(IDS[:4], fixed(ANCHOR))
    assert sched.upcoming(7, 3) == [(7, sched.proposer(7)), (8, sched.proposer(8)), (9, sched.proposer(9))]
    assert sched.upcoming(3, 0) == []


def test_a_single_delegate_proposes_every_slot() -> None:
    sched = Schedule(IDS[:1], fixed(ANCHOR))
    assert {p for _, p in sched.upcoming(0, 10)} == {IDS[0]}


def test_no_active_delegates_is_refused() -> None:
    with pytest.raises(ValueError, match="no active delegates"):
        Schedule([], fixed(ANCHOR))
