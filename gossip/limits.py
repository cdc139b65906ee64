"""Per-peer resource limits: token buckets for receive rates, bounded queues for work.

Both are deliberately lossy: under overload they drop and report it instead of blocking, because
a blocked reader or writer would let one slow or hostile peer stall the whole node.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

T = TypeVar("T")


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, holding at most ``burst``."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, amount: float = 1.0) -> bool:
        """Spend ``amount`` tokens if available; otherwise spend nothing and return False."""
        self._refill()
        if amount > self._tokens:
            return False
        self._tokens -= amount
        return True

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens


class RateLimiter:
    """A message-rate bucket and a byte-rate bucket that must both admit a frame."""

    def __init__(self, msg_rate: float, msg_burst: float, byte_rate: float, byte_burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.messages = TokenBucket(msg_rate, msg_burst, clock)
        self.bytes = TokenBucket(byte_rate, byte_burst, clock)

    def admit(self, nbytes: int) -> bool:
        """Charge one message of ``nbytes``; a refused frame is charged nothing, so a flood
        cannot push a peer's allowance arbitrarily far into debt."""
        if self.messages.tokens < 1 or self.bytes.tokens < nbytes:
            return False
        self.messages.take(1)
        self.bytes.take(nbytes)
        return True


class BoundedQueue(Generic[T]):
    """A FIFO with a fixed capacity that drops instead of blocking the producer.

    ``drop="oldest"`` evicts the head to make room (fresh data matters most, e.g. outgoing
    gossip); ``drop="newest"`` refuses the new item (the producer learns it was not queued).
    """

    def __init__(self, capacity: int, drop: Literal["oldest", "newest"] = "oldest") -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self.drop = drop
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()

    def put(self, item: T) -> tuple[bool, T | None]:
        """Queue ``item``. Returns ``(queued, evicted)``: whether ``item`` went in and which
        older item, if any, was dropped to make room."""
        evicted: T | None = None
        if len(self._items) >= self.capacity:
            if self.drop == "newest":
                return False, None
            evicted = self._items.popleft()
        self._items.append(item)
        self._ready.set()
        return True, evicted

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def take_all(self) -> list[T]:
        """Remove and return everything still queued."""
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)
