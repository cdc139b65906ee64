"""Peer exchange: telling peers whom we know, so a node that joins through one URL finds the rest.

A new peer is told at once whom we know, and its URL is queued for every other peer; every
``pex_interval`` each peer is queued the whole list again. What is queued for a peer is sent at
most once per ``pex_min_interval``, so an honest node never trips the receiving side's
``pex_rate`` check. What a node does with the URLs it is told is :mod:`gossip.router`'s and
:mod:`gossip.book`'s business; this module only decides what to tell whom, and when.
"""

from __future__ import annotations

from gossip.book import AddressBook
from gossip.clock import Clock
from gossip.config import GossipConfig
from gossip.peer import Peer
from gossip.wire import peers_frame


class PeerExchange:
    """What to tell each connected peer about the others; the peer table is the service's."""

    def __init__(self, config: GossipConfig, peers: dict[str, Peer], book: AddressBook, clock: Clock) -> None:
        self.config = config
        self._peers = peers
        self._book = book
        self._clock = clock
        self._last_round = float("-inf")

    def introduce(self, peer: Peer) -> bool:
        """Tell a new peer whom we know at once, and queue the new peer's URL for the others'
        next peer-exchange turn, so a node joining through one bootstrap URL finds the rest.
        True if something was queued (the caller wakes its heartbeat to send it)."""
        self._send(peer, self._urls(peer.url))
        if not peer.url:
            return False
        for other in self._peers.values():
            if other is not peer and other.url != peer.url:
                other.pex_pending[peer.url] = None
        return True

    def flush(self) -> None:
        """Send each peer what is queued for it, at most once per ``pex_min_interval`` (what
        the receiving side's ``pex_rate`` check allows, with margin)."""
        now = self._clock.monotonic()
        if now - self._last_round >= self.config.pex_interval:
            self._last_round = now
            for peer in self._peers.values():
                peer.pex_pending.update(dict.fromkeys(self._urls(peer.url)))
        for peer in self._peers.values():
            if peer.pex_pending and now - peer.pex_sent_at >= self.config.pex_min_interval:
                urls = list(peer.pex_pending)[: self.config.pex_max]
                for url in urls:
                    del peer.pex_pending[url]
                self._send(peer, urls)

    def _send(self, peer: Peer, urls: list[str]) -> None:
        peer.send(peers_frame(urls[: self.config.pex_max]))
        peer.pex_sent_at = self._clock.monotonic()

    def _urls(self, exclude: str) -> list[str]:
        """URLs to tell a peer about: connected peers first, then the rest of the book."""
        urls = dict.fromkeys([p.url for p in self._peers.values()] + self._book.urls())
        urls.pop(exclude, None)
        urls.pop("", None)
        return list(urls)[: self.config.pex_max]
