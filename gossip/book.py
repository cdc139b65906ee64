"""The address book, after Bitcoin's addrman: URLs in buckets, so no stranger decides whom we dial.

* **Fixed** entries are the bootstrap URLs from our config: outside the tables, never evicted,
  retried forever at the capped backoff.
* **New** table: URLs heard of (peer exchange, peers' advertised URLs). The bucket is chosen by
  the *network group of the peer that told us* (and the URL's own group, spread over at most
  ``SOURCE_SPREAD`` buckets per source group), the position in it by the URL, both with a secret
  per-node hash. So one source network can only ever fill its own few buckets, however many
  frames or node ids it uses. An occupied position is only taken over from a *terrible* entry
  (dialled and failed repeatedly); otherwise the newcomer is dropped.
* **Tried** table: URLs we dialled and completed a handshake with, bucketed by their own group.
  A newcomer displaces an occupant only if the occupant's last dial failed (reachable peers are
  kept, as in addrman's test-before-evict); the displaced one goes back to the new table.

URLs learned from the network must pass the dial scope (:func:`gossip.netpolicy.url_allowed`);
dialling order is fixed, then tried, then new, so the peers we know to be good come first.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gossip.codec import pack
from gossip.config import DialScope
from gossip.netpolicy import address_group, host_of, url_allowed

SOURCE_SPREAD = 4
"""New-table buckets one source group can reach (addrman: 64 of 1024)."""
TRIED_SPREAD = 8
"""Tried-table buckets one address group can reach (addrman: 8)."""
NEVER_REACHED_FAILURES = 3
"""A URL we never reached is terrible after this many failed dials in a row."""


@dataclass
class BookEntry:
    url: str
    group: str
    fixed: bool = False
    node_id: str | None = None
    """Who answered at this URL last time (None until a handshake succeeded)."""
    failures: int = 0
    """Failed dials in a row."""
    reached: bool = False
    """We completed a handshake at this URL at least once."""
    next_attempt: float = 0.0
    dialing: bool = False
    slot: tuple[str, int, int] | None = None
    """("new" | "tried", bucket, position); None for fixed entries."""

    @property
    def tried(self) -> bool:
        return self.slot is not None and self.slot[0] == "tried"


class AddressBook:
    def __init__(self, own_url: str, *, new_buckets: int, tried_buckets: int, bucket_size: int,
                 backoff_base: float, backoff_max: float, max_failures: int, scope: DialScope,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 secret: bytes | None = None) -> None:
        self.own_url = own_url
        self.new_buckets = new_buckets
        self.tried_buckets = tried_buckets
        self.bucket_size = bucket_size
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_failures = max_failures
        self.scope = scope
        self._clock = clock
        self._rng = rng or random.Random()
        self._secret = secret if secret is not None else os.urandom(32)
        self._entries: dict[str, BookEntry] = {}
        self._slots: dict[tuple[str, int, int], str] = {}
        self._self_urls = {own_url}
        """URLs that turned out to reach this very node (our own, or an alias of it)."""

    # ------------------------------------------------------------------ adding

    def add_fixed(self, url: str) -> None:
        """A bootstrap URL (already normalised): kept for good, whatever the policy."""
        if url in self._self_urls:
            return
        entry = self._entries.get(url)
        if entry is not None:
            self._unplace(entry)
        else:
            entry = self._entries[url] = BookEntry(url, address_group(host_of(url)))
        entry.fixed = True

    def learn(self, url: str, source_group: str, node_id: str | None = None) -> bool:
        """A URL heard from a peer in network group ``source_group``; True if it is new and
        was kept. Refused: our own, outside the dial scope, or its bucket position is held by
        an entry that is not terrible."""
        if url in self._self_urls:
            return False
        entry = self._entries.get(url)
        if entry is not None:
            if entry.node_id is None:
                entry.node_id = node_id
            return False
        if not url_allowed(url, self.scope):
            return False
        entry = BookEntry(url, address_group(host_of(url)), node_id=node_id)
        if not self._place(entry, self._new_slot(entry, source_group)):
            return False
        self._entries[url] = entry
        return True

    def _new_slot(self, entry: BookEntry, source_group: str) -> tuple[str, int, int]:
        spread = self._hash("new-spread", source_group, entry.group) % SOURCE_SPREAD
        bucket = self._hash("new", source_group, spread) % self.new_buckets
        return "new", bucket, self._hash("pos", "new", bucket, entry.url) % self.bucket_size

    def _tried_slot(self, entry: BookEntry) -> tuple[str, int, int]:
        spread = self._hash("tried-spread", entry.url) % TRIED_SPREAD
        bucket = self._hash("tried", entry.group, spread) % self.tried_buckets
        return "tried", bucket, self._hash("pos", "tried", bucket, entry.url) % self.bucket_size

    def _hash(self, *parts: object) -> int:
        return int.from_bytes(hashlib.sha256(self._secret + pack(list(parts))).digest()[:8], "big")

    def _place(self, entry: BookEntry, slot: tuple[str, int, int]) -> bool:
        """Put ``entry`` at ``slot`` unless a better entry holds it."""
        holder_url = self._slots.get(slot)
        if holder_url is not None:
            holder = self._entries[holder_url]
            if not self._replaceable(holder, slot[0]):
                return False
            self._remove(holder)
        self._slots[slot] = entry.url
        entry.slot = slot
        return True

    def _replaceable(self, holder: BookEntry, table: str) -> bool:
        if holder.dialing:
            return False
        if table == "tried":
            return holder.failures > 0  # its last dial failed: not known reachable now
        return (not holder.reached and holder.failures >= NEVER_REACHED_FAILURES
                or holder.failures >= self.max_failures)

    def _unplace(self, entry: BookEntry) -> None:
        if entry.slot is not None and self._slots.get(entry.slot) == entry.url:
            del self._slots[entry.slot]
        entry.slot = None

    def _remove(self, entry: BookEntry) -> None:
        self._unplace(entry)
        self._entries.pop(entry.url, None)

    # ------------------------------------------------------------------ dialling

    def due(self, connected: set[str]) -> list[BookEntry]:
        """Entries worth dialling now: not ourselves, not already connected (by URL or by node
        id) or being dialled, and past their backoff. Fixed first, then tried, then new."""
        now = self._clock()
        ready = [e for e in self._entries.values()
                 if not e.dialing and e.next_attempt <= now and e.url not in connected
                 and (e.node_id is None or e.node_id not in connected)]
        ready.sort(key=lambda e: (not e.fixed, not e.tried, e.failures))
        return ready

    def dialing(self, url: str) -> None:
        self._entries[url].dialing = True

    def dialing_count(self) -> int:
        """Dials started whose handshake has not completed yet."""
        return sum(1 for e in self._entries.values() if e.dialing)

    def connected(self, url: str, node_id: str) -> None:
        """We dialled ``url`` and completed a handshake (or found a peer we already have): the
        entry is reachable, and moves to the tried table if its bucket position allows."""
        entry = self._entries.get(url)
        if entry is None:
            return
        entry.dialing = False
        entry.node_id = node_id
        entry.reached = True
        entry.failures = 0
        entry.next_attempt = self._clock() + self.backoff_base
        if entry.fixed or entry.tried:
            return
        slot = self._tried_slot(entry)
        holder_url = self._slots.get(slot)
        if holder_url is not None and not self._replaceable(self._entries[holder_url], "tried"):
            return  # the position holds a reachable peer: stay in new (addrman's test-before-evict)
        if holder_url is not None:
            self._demote(self._entries[holder_url])
        self._unplace(entry)
        self._slots[slot] = url
        entry.slot = slot

    def _demote(self, entry: BookEntry) -> None:
        """A tried entry pushed out goes back to the new table (sourced by its own group)."""
        self._unplace(entry)
        if not self._place(entry, self._new_slot(entry, entry.group)):
            self._entries.pop(entry.url, None)

    def failed(self, url: str) -> None:
        """A dial or handshake failed: back off, or forget a URL only heard of."""
        entry = self._entries.get(url)
        if entry is None:
            return
        entry.dialing = False
        entry.failures += 1
        if not (entry.fixed or entry.reached) and entry.failures >= self.max_failures:
            self._remove(entry)
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
        entry = self._entries.get(url)
        if entry is not None:
            self._remove(entry)

    # ------------------------------------------------------------------ reading

    def urls(self) -> list[str]:
        """Known URLs, most trustworthy first: fixed, tried, then new by failures."""
        ordered = sorted(self._entries.values(), key=lambda e: (not e.fixed, not e.tried, e.failures))
        return [e.url for e in ordered]

    def get(self, url: str) -> BookEntry | None:
        return self._entries.get(url)

    def __contains__(self, url: str) -> bool:
        return url in self._entries

    def __len__(self) -> int:
        return len(self._entries)
