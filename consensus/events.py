"""The engine's events (proposals, final blocks, new delegates, evidence) for live subscribers.

``/subscribe`` and the network simulation watch the chain through these. Each subscriber has a
bounded queue: a slow one loses its oldest events and never blocks the engine.
"""

from __future__ import annotations

import asyncio

QUEUE_SIZE = 256
"""Events one subscriber may have waiting."""


class EventBus:
    """Fans each event out to every subscriber's queue."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue] = set()

    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def emit(self, event: dict) -> None:
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()  # a slow subscriber loses its oldest event, never blocks the engine
            q.put_nowait(event)
