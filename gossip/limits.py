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

    def charge(self, amount: float) -> None:
        """Take ``amount`` tokens whatever the balance, down to at most one burst of debt: a
        penalty that must be waited out (``burst / rate`` seconds at worst) before the next
        ``take`` succeeds."""
        self._refill()
        self._tokens = max(-self.burst, self._tokens - amount)

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
    """A FIFO bounded in items and in bytes that drops instead of blocking the producer.

    ``drop="oldest"`` evicts from the head to make room (fresh data matters most, e.g. outgoing
    gossip); ``drop="newest"`` refuses the new item (the producer learns it was not queued).
    ``sizeof`` gives an item's size in bytes; an item larger than ``max_bytes`` is refused.
    """

    def __init__(self, capacity: int, drop: Literal["oldest", "newest"] = "oldest",
                 max_bytes: int | None = None, sizeof: Callable[[T], int] = lambda _: 0) -> None:
        if capacity <= 0 or (max_bytes is not None and max_bytes <= 0):
            raise ValueError("capacity and max_bytes must be positive")
        self.capacity = capacity
        self.drop = drop
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._items: deque[tuple[T, int]] = deque()
        self.nbytes = 0
        self._ready = asyncio.Event()

    def _fits(self, size: int) -> bool:
        return len(self._items) < self.capacity and (
            self.max_bytes is None or self.nbytes + size <= self.max_bytes)

    def put(self, item: T) -> tuple[bool, int]:
        """Queue ``item``. Returns ``(queued, dropped)``: whether ``item`` went in, and how
        many items (older ones evicted, or this one refused) were dropped."""
        size = self._sizeof(item)
        if self.max_bytes is not None and size > self.max_bytes:
            return False, 1
        dropped = 0
        while not self._fits(size):
            if self.drop == "newest":
                return False, 1
            self.nbytes -= self._items.popleft()[1]
            dropped += 1
        self._items.append((item, size))
        self.nbytes += size
        self._ready.set()
        return True, dropped

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self.nbytes -= size
        return item

    def take_all(self) -> list[T]:
        """Remove and return everything still queued."""
        items = [item for item, _ in self._items]
        self._items.clear()
        self.nbytes = 0
        return items

    def __len__(self) -> int:
        return len(self._items)
