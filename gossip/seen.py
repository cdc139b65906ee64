"""The seen-cache: message ids already handled, remembered for a fixed time.

It is both deduplication (a message reaching us over several paths is handled once) and, with
the freshness window on seqs, replay protection: a message is either stale or still remembered.
That holds as long as entries live at least twice the freshness window (checked by
``GossipConfig``) and the cache never fills; when it does fill, the oldest ids are forgotten
first and the eviction is counted so an operator can raise ``seen_max``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class SeenCache:
    """Insertion-ordered ids with a common TTL, so expiry is popping from the front: O(1)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError("ttl and max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: OrderedDict[bytes, float] = OrderedDict()
        self.evictions = 0
        """Live entries forgotten early because the cache was full."""

    def __contains__(self, msg_id: bytes) -> bool:
        expiry = self._expiry.get(msg_id)
        return expiry is not None and expiry > self._clock()

    def add(self, msg_id: bytes) -> bool:
        """Remember ``msg_id``; False if it was already remembered (and unexpired)."""
        if msg_id in self:
            return False
        self.purge()
        self._expiry.pop(msg_id, None)
        while len(self._expiry) >= self.max_entries:
            self._expiry.popitem(last=False)
            self.evictions += 1
        self._expiry[msg_id] = self._clock() + self.ttl
        return True

    def discard(self, msg_id: bytes) -> None:
        """Forget ``msg_id`` (a message accepted for processing but never processed, so that
        another copy of it may still get through)."""
        self._expiry.pop(msg_id, None)

    def purge(self) -> None:
        """Drop expired entries."""
        now = self._clock()
        while self._expiry:
            msg_id, expiry = next(iter(self._expiry.items()))
            if expiry > now:
                break
            del self._expiry[msg_id]

    def __len__(self) -> int:
        return len(self._expiry)
