"""The engine's clock: it starts each round when its slot begins, fires the height machine's
timeouts, and has the engine re-broadcast its own messages of a round once mid-slot.

Gossip is best effort; a vote lost once must not stall a height, so this node's proposal and
votes of the current round go out again halfway through its slot. Between these instants the
ticker sleeps, and anything that makes an instant earlier (a timeout armed, a new height) wakes it.
The time itself comes from a :class:`Clock`: the system's, or the network simulation's virtual one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import Counter
from typing import Any, Awaitable, Protocol

from consensus.executor import BlockExecutor
from consensus.machine import Action, HeightMachine
from consensus.schedule import slot_at, slot_start_ms

log = logging.getLogger("fedchain.consensus")


class Clock(Protocol):
    """Where the engine reads the time (the network simulation passes a virtual clock)."""

    def now_ms(self) -> int: ...


class SystemClock:
    def now_ms(self) -> int:
        return int(time.time() * 1000)


class Ticked(Protocol):
    """What the ticker reads of the running engine, and what it asks of it."""

    genesis: Any
    executor: BlockExecutor
    machine: HeightMachine
    metrics: Counter

    @property
    def height(self) -> int: ...
    def now_ms(self) -> int: ...
    def enqueue(self, actions: list[Action]) -> None: ...
    def spawn(self, coro: Awaitable[Any], name: str) -> None: ...
    async def rebroadcast(self, rnd: int) -> None: ...


class Ticker:
    """Rounds, timeouts and re-broadcasts of the height being decided."""

    def __init__(self, engine: Ticked) -> None:
        self.e = engine
        self._timers: list[tuple[int, int, str, int]] = []  # (at_ms, height, kind, round)
        self._wake = asyncio.Event()
        self._rebroadcast_round = -1

    def new_height(self, height: int) -> None:
        """Forget the timeouts of finished heights and the last re-broadcast round."""
        self._rebroadcast_round = -1
        self._timers = [t for t in self._timers if t[1] == height]

    def arm(self, at_ms: int, height: int, kind: str, rnd: int) -> None:
        heapq.heappush(self._timers, (at_ms, height, kind, rnd))
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        g = self.e.genesis
        while True:
            try:
                self._tick()
            except Exception:  # a bug in one tick must not stop the chain
                log.exception("consensus tick failed")
                self.e.metrics["tick_errors"] += 1
            now = self.e.now_ms()
            slot = slot_at(now, g.genesis_time_ms, g.slot_ms)
            wake_at = slot_start_ms(slot + 1, g.genesis_time_ms, g.slot_ms) if now >= g.genesis_time_ms \
                else g.genesis_time_ms
            if self._rebroadcast_round < self.e.machine.round:
                wake_at = min(wake_at, slot_start_ms(slot, g.genesis_time_ms, g.slot_ms) + g.slot_ms // 2)
            if self._timers:
                wake_at = min(wake_at, self._timers[0][0])
            self._wake.clear()
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that lands
            # together with the wake-up, and stop() then waits for this loop forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, (wake_at - self.e.now_ms()) / 1000)):
                    await self._wake.wait()

    def _tick(self) -> None:
        e = self.e
        g, now = e.genesis, e.now_ms()
        if now < g.genesis_time_ms:
            return
        slot = slot_at(now, g.genesis_time_ms, g.slot_ms)
        m = e.machine
        if slot > m.round and slot > e.executor.parent_slot:
            e.enqueue(m.start_round(slot, now))
        while self._timers and self._timers[0][0] <= now:
            _, height, kind, rnd = heapq.heappop(self._timers)
            if height == e.height:
                e.enqueue(e.machine.on_timeout(kind, rnd, now))
        mid = slot_start_ms(slot, g.genesis_time_ms, g.slot_ms) + g.slot_ms // 2
        if now >= mid and self._rebroadcast_round < m.round == slot:
            self._rebroadcast_round = m.round
            e.spawn(e.rebroadcast(m.round), "rebroadcast")
