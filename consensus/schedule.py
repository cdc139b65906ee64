"""Who may propose in which slot.

Time is cut into slots of ``slot_ms`` from the genesis time. The active delegates (elected and not
jailed) take turns in *cycles* of ``n`` slots, one slot each, in an order shuffled per cycle with a
seed taken from a final block: the newest block on the chain whose slot lies before the cycle's
first slot (the genesis hash before there is one). Every input comes from the final chain, so all
honest nodes compute the same proposer for a slot, and nobody can steer the order of a cycle
after it has begun.
"""

from __future__ import annotations

import random
from typing import Callable

from gossip.crypto import sha256


def slot_at(time_ms: int, genesis_time_ms: int, slot_ms: int) -> int:
    """The slot containing ``time_ms`` (slot 0 starts at genesis; earlier times map to 0)."""
    return max(0, (time_ms - genesis_time_ms) // slot_ms)


def slot_start_ms(slot: int, genesis_time_ms: int, slot_ms: int) -> int:
    return genesis_time_ms + slot * slot_ms


def cycle_order(delegates: list[str], seed: bytes) -> list[str]:
    """Deterministic shuffle of ``delegates`` (sorted first, so input order does not matter)."""
    order = sorted(delegates)
    random.Random(int.from_bytes(sha256(seed), "big")).shuffle(order)
    return order


class Schedule:
    """Proposer lookup for one height, given the active delegates and the chain below it.

    ``anchor_for(first_slot)`` returns the hash of the newest final block whose slot is below
    ``first_slot`` (walking back from the tip is cheap: it is at most one cycle back).
    """

    def __init__(self, active: list[str], anchor_for: Callable[[int], bytes]) -> None:
        if not active:
            raise ValueError("no active delegates: the chain cannot make progress")
        self.active = sorted(active)
        self._anchor_for = anchor_for
        self._orders: dict[int, list[str]] = {}

    def order(self, cycle: int) -> list[str]:
        if cycle not in self._orders:
            n = len(self.active)
            seed = self._anchor_for(cycle * n) + cycle.to_bytes(8, "big")
            self._orders[cycle] = cycle_order(self.active, seed)
        return self._orders[cycle]

    def proposer(self, slot: int) -> str:
        n = len(self.active)
        return self.order(slot // n)[slot % n]

    def upcoming(self, from_slot: int, count: int) -> list[tuple[int, str]]:
        return [(s, self.proposer(s)) for s in range(from_slot, from_slot + count)]
