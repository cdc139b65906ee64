"""Resource limits: token buckets for receive rates, bounded queues for work, and the byte budget
all peers' queues share.

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


class ByteBudget:
    """Bytes that many queues may hold together.

    Each peer's queues are bounded on their own, but a node has dozens of peers, and a bound per
    peer times the peer count (32 x 4 x 8 MiB = 1 GiB by default) is no bound a small device can
    afford. Every queue of a node draws on one budget: under pressure a queue that drops its
    oldest items makes room in itself, and any other refuses the new item (gossip recovers
    lost messages from other peers)."""

    def __init__(self, total: int) -> None:
        if total <= 0:
            raise ValueError("a byte budget must be positive")
        self.total = total
        self.used = 0

    def take(self, n: int) -> None:
        """Count ``n`` bytes in (the queue checked that they fit)."""
        self.used += n

    def give(self, n: int) -> None:
        self.used -= n


class BoundedQueue(Generic[T]):
    """A FIFO bounded in items and in bytes that drops instead of blocking the producer.

    ``drop="oldest"`` evicts from the head to make room (fresh data matters most, e.g. outgoing
    gossip); ``drop="newest"`` refuses the new item (the producer learns it was not queued).
    ``sizeof`` gives an item's size in bytes; an item larger than ``max_bytes`` is refused.
    With a shared ``budget``, an item also needs room there (see :class:`ByteBudget`).
    """

    def __init__(self, capacity: int, drop: Literal["oldest", "newest"] = "oldest",
                 max_bytes: int | None = None, sizeof: Callable[[T], int] = lambda _: 0,
                 budget: ByteBudget | None = None) -> None:
        if capacity <= 0 or (max_bytes is not None and max_bytes <= 0):
            raise ValueError("capacity and max_bytes must be positive")
        self.capacity = capacity
        self.drop = drop
        self.max_bytes = max_bytes
        self._sizeof = sizeof
        self._budget = budget
        self._items: deque[tuple[T, int]] = deque()
        self.nbytes = 0
        self._ready = asyncio.Event()

    def _fits(self, size: int) -> bool:
        return len(self._items) < self.capacity and (
            self.max_bytes is None or self.nbytes + size <= self.max_bytes) and (
            self._budget is None or self._budget.used + size <= self._budget.total)

    def put(self, item: T) -> tuple[bool, int]:
        """Queue ``item``. Returns ``(queued, dropped)``: whether ``item`` went in, and how
        many items (older ones evicted, or this one refused) were dropped."""
        size = self._sizeof(item)
        if self.max_bytes is not None and size > self.max_bytes:
            return False, 1
        if self._budget is not None and self._budget.used - self.nbytes + size > self._budget.total:
            return False, 1  # emptying this queue would not make room: keep what it holds
        dropped = 0
        while not self._fits(size):
            if self.drop == "newest" or not self._items:
                return False, dropped + 1
            self._release(self._items.popleft()[1])
            dropped += 1
        self._items.append((item, size))
        self.nbytes += size
        if self._budget is not None:
            self._budget.take(size)
        self._ready.set()
        return True, dropped

    def _release(self, size: int) -> None:
        self.nbytes -= size
        if self._budget is not None:
            self._budget.give(size)

    async def get(self) -> T:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, size = self._items.popleft()
        self._release(size)
        return item

    def take_all(self) -> list[T]:
        """Remove and return everything still queued."""
        items = [item for item, _ in self._items]
        self._release(self.nbytes)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)
