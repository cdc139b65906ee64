"""The address book: peer URLs we know, and when each may next be dialled.

URLs come from the bootstrap list, from inbound peers' advertised URLs and from peer exchange.
Failed dials back off exponentially (with jitter, so a restarted network does not reconnect in
lockstep) up to a cap. URLs only heard of from others are forgotten after repeated failures, so
a peer cannot fill our book with dead addresses forever; URLs of peers we once reached are kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class BookEntry:
    url: str
    node_id: str | None = None
    """Who answered at this URL last time (None until a handshake succeeded)."""
    keep: bool = False
    """Bootstrap URLs and peers we have been connected to are never forgotten."""
    failures: int = 0
    next_attempt: float = 0.0
    dialing: bool = False


class AddressBook:
    def __init__(self, own_url: str, max_entries: int, backoff_base: float, backoff_max: float,
                 max_failures: int, clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.own_url = own_url
        self.max_entries = max_entries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_failures = max_failures
        self._clock = clock
        self._rng = rng or random.Random()
        self._entries: dict[str, BookEntry] = {}
        self._self_urls = {own_url}
        """URLs that turned out to reach this very node (our own, or an alias of it)."""

    def add(self, url: str, node_id: str | None = None, keep: bool = False) -> bool:
        """Record ``url`` (already normalised); True if it is new and dialable."""
        if url in self._self_urls:
            return False
        entry = self._entries.get(url)
        if entry is None:
            if len(self._entries) >= self.max_entries and not keep:
                return False
            entry = self._entries[url] = BookEntry(url)
            new = True
        else:
            new = False
        entry.keep = entry.keep or keep
        if node_id is not None:
            entry.node_id = node_id
        return new

    def due(self, connected: set[str]) -> list[BookEntry]:
        """Entries worth dialling now: not ourselves, not already connected (by URL or by node
        id) or being dialled, and past their backoff. Bootstrap entries first."""
        now = self._clock()
        ready = [e for e in self._entries.values()
                 if not e.dialing and e.next_attempt <= now and e.url not in connected
                 and (e.node_id is None or e.node_id not in connected)]
        ready.sort(key=lambda e: (not e.keep, e.failures))
        return ready

    def dialing(self, url: str) -> None:
        self._entries[url].dialing = True

    def dialing_count(self) -> int:
        """Dials started whose handshake has not completed yet."""
        return sum(1 for e in self._entries.values() if e.dialing)

    def connected(self, url: str, node_id: str) -> None:
        """A handshake at ``url`` succeeded (or found a peer we already have)."""
        entry = self._entries.get(url)
        if entry is None:
            return
        entry.dialing = False
        entry.node_id = node_id
        entry.keep = True
        entry.failures = 0
        entry.next_attempt = self._clock() + self.backoff_base

    def failed(self, url: str) -> None:
        """A dial or handshake failed: back off, or forget a URL we only heard about."""
        entry = self._entries.get(url)
        if entry is None:
            return
        entry.dialing = False
        entry.failures += 1
        if not entry.keep and entry.failures >= self.max_failures:
            del self._entries[url]
            return
        delay = min(self.backoff_max, self.backoff_base * 2 ** (entry.failures - 1))
        entry.next_attempt = self._clock() + delay * self._rng.uniform(0.5, 1.0)

    def lost(self, url: str) -> None:
        """An established connection ended: redial after the base delay."""
        entry = self._entries.get(url)
        if entry is not None:
            entry.dialing = False
            entry.next_attempt = self._clock() + self.backoff_base * self._rng.uniform(0.5, 1.0)

    def mark_self(self, url: str) -> None:
        """``url`` reaches this node: never dial it again."""
        self._self_urls.add(url)
        self._entries.pop(url, None)

    def urls(self) -> list[str]:
        """Known URLs, most trustworthy first (those we have reached)."""
        return [e.url for e in sorted(self._entries.values(), key=lambda e: (not e.keep, e.failures))]

    def __contains__(self, url: str) -> bool:
        return url in self._entries

    def __len__(self) -> int:
        return len(self._entries)
