"""The message cache of gossipsub: what we accepted in the last few heartbeats, for IWANT.

Messages live for ``history`` heartbeats in windows (one per heartbeat, newest first); the ids
of the newest ``gossip`` windows are what IHAVE announces. Entries are whole frames, ready to be
sent again; the cache is bounded in bytes as well (the oldest go first), and each peer may have a
given message re-sent at most ``max_transmissions`` times, so IWANT cannot turn us into an
amplifier.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Entry:
    topic: str
    frame: bytes
    sent: dict[str, int] = field(default_factory=dict)
    """Times the message went to each peer through IWANT."""


class MessageCache:
    def __init__(self, history: int, gossip: int, max_bytes: int, max_transmissions: int) -> None:
        self.gossip = gossip
        self.max_bytes = max_bytes
        self.max_transmissions = max_transmissions
        self._windows: deque[list[bytes]] = deque([[] for _ in range(history)], maxlen=history)
        self._entries: dict[bytes, _Entry] = {}
        self.nbytes = 0

    def put(self, msg_id: bytes, topic: str, frame: bytes) -> None:
        if msg_id in self._entries or len(frame) > self.max_bytes:
            return
        self._entries[msg_id] = _Entry(topic, frame)
        self._windows[0].append(msg_id)
        self.nbytes += len(frame)
        while self.nbytes > self.max_bytes:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        for window in reversed(self._windows):
            while window:
                self._forget(window.pop(0))
                return

    def _forget(self, msg_id: bytes) -> None:
        entry = self._entries.pop(msg_id, None)
        if entry is not None:
            self.nbytes -= len(entry.frame)

    def get(self, msg_id: bytes, peer: str) -> tuple[str, bytes] | None:
        """The message for ``peer``'s IWANT, unless it is gone or was sent to it often enough."""
        entry = self._entries.get(msg_id)
        if entry is None or entry.sent.get(peer, 0) >= self.max_transmissions:
            return None
        entry.sent[peer] = entry.sent.get(peer, 0) + 1
        return entry.topic, entry.frame

    def __contains__(self, msg_id: bytes) -> bool:
        return msg_id in self._entries

    def gossip_ids(self) -> dict[str, list[bytes]]:
        """Ids of the newest ``gossip`` windows, by topic, for this heartbeat's IHAVEs."""
        out: dict[str, list[bytes]] = {}
        for window in list(self._windows)[: self.gossip]:
            for msg_id in window:
                entry = self._entries.get(msg_id)
                if entry is not None:
                    out.setdefault(entry.topic, []).append(msg_id)
        return out

    def shift(self) -> None:
        """A heartbeat passed: the oldest window's messages are dropped."""
        for msg_id in self._windows[-1]:
            self._forget(msg_id)
        self._windows.appendleft([])

    def __len__(self) -> int:
        return len(self._entries)
