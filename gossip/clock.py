"""Where the gossip layer reads time and randomness, so that both can be replaced.

A daemon uses the system's clocks and the operating system's entropy. The network simulation
(``netsim``) runs hundreds of nodes in one process on a virtual clock and must reproduce a run
bit for bit from one seed, so every part of ``gossip/`` that reads a clock or draws random bytes
takes them from the :class:`Clock` and the ``random.Random`` its :class:`~gossip.service.Gossip`
was given, never from ``time`` or ``os.urandom`` directly.
"""

from __future__ import annotations

import random
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (timeouts, rates, expiry)."""

    def wall_ms(self) -> int:
        """Milliseconds since the Unix epoch (message seqs and their freshness window)."""


class SystemClock:
    """The real clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000


def system_rng() -> random.Random:
    """Randomness for a daemon: ``SystemRandom`` draws from the operating system's entropy, which
    key material (Noise static and ephemeral keys, the address book's secret) requires."""
    return random.SystemRandom()
