"""Event-loop lag: how late a periodic timer fires. A daemon whose loop stalls (a CPU-bound call
on the loop thread) misses votes and slots; this makes such stalls visible in /metrics (a
Prometheus summary: quantiles over the recent window, and the sum and count of every sample)."""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np


class LoopLag:
    def __init__(self, interval_s: float = 0.05, window: int = 2400) -> None:
        self.interval_s = interval_s
        self.samples: deque[float] = deque(maxlen=window)
        self.count = 0  # samples since start
        self.total_ms = 0.0  # their sum

    async def run(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            self.add(max(0.0, time.perf_counter() - t0 - self.interval_s) * 1000)

    def add(self, lag_ms: float) -> None:
        self.samples.append(lag_ms)
        self.count += 1
        self.total_ms += lag_ms

    def summary(self) -> dict[str, float]:
        """Lag in milliseconds over the recent window (p50, p99, max)."""
        if not self.samples:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
        a = np.fromiter(self.samples, dtype=np.float64)
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}
