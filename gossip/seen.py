"""The seen-cache: message ids already handled, remembered for a fixed time.

It is both deduplication (a message reaching us over several paths is handled once) and, with
the freshness window on seqs, replay protection: a message is either stale or still remembered.
That holds as long as entries live at least twice the freshness window (checked by
``GossipConfig``) and the cache never fills; when it does fill, the oldest id *of the peer that
brought the most* is forgotten (so one peer flooding valid messages evicts its own entries, not
everyone's), and the eviction is counted so an operator can raise ``seen_max``. Entries are 32-byte
ids, so the cache is bounded in bytes by ``seen_max``.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable


class SeenCache:
    """Insertion-ordered ids with a common TTL, so expiry is popping from the front: O(1)."""

    def __init__(self, ttl: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or max_entries <= 0:
            raise ValueError("ttl and max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._expiry: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self._by_owner: dict[str, OrderedDict[bytes, None]] = {}
        self._counts: Counter[str] = Counter()
        self.evictions = 0
        """Live entries forgotten early because the cache was full."""

    def __contains__(self, msg_id: bytes) -> bool:
        entry = self._expiry.get(msg_id)
        return entry is not None and entry[0] > self._clock()

    def add(self, msg_id: bytes, owner: str = "") -> bool:
        """Remember ``msg_id``, brought by peer ``owner`` ("" for our own); False if it was
        already remembered (and unexpired)."""
        if msg_id in self:
            return False
        self.purge()
        self.discard(msg_id)
        while len(self._expiry) >= self.max_entries:
            heaviest = max(self._counts, key=self._counts.__getitem__)
            self.discard(next(iter(self._by_owner[heaviest])))
            self.evictions += 1
        self._expiry[msg_id] = (self._clock() + self.ttl, owner)
        self._by_owner.setdefault(owner, OrderedDict())[msg_id] = None
        self._counts[owner] += 1
        return True

    def discard(self, msg_id: bytes) -> None:
        """Forget ``msg_id`` (a message accepted for processing but never processed, so that
        another copy of it may still get through)."""
        entry = self._expiry.pop(msg_id, None)
        if entry is None:
            return
        owner = entry[1]
        del self._by_owner[owner][msg_id]
        self._counts[owner] -= 1
        if not self._counts[owner]:
            del self._counts[owner], self._by_owner[owner]

    def purge(self) -> None:
        """Drop expired entries."""
        now = self._clock()
        while self._expiry:
            msg_id, (expiry, _) = next(iter(self._expiry.items()))
            if expiry > now:
                break
            self.discard(msg_id)

    def __len__(self) -> int:
        return len(self._expiry)
