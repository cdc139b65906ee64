"""LoopLag: how late the event loop runs a periodic timer, summarised for /metrics."""

from __future__ import annotations

import asyncio
import time

import pytest

from node.looplag import LoopLag


def test_summary_before_any_sample_is_zero() -> None:
    assert LoopLag().summary() == {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}


def test_summary_of_samples() -> None:
    lag = LoopLag()
    lag.samples.extend(float(v) for v in range(1, 101))
    assert lag.summary() == pytest.approx({"p50_ms": 50.5, "p99_ms": 99.01, "max_ms": 100.0})


def test_only_the_recent_window_counts() -> None:
    lag = LoopLag(window=3)
    lag.samples.extend([500.0, 400.0, 1.0, 2.0, 3.0])
    assert lag.summary() == {"p50_ms": 2.0, "p99_ms": pytest.approx(2.98), "max_ms": 3.0}


async def test_run_measures_a_stalled_loop() -> None:
    lag = LoopLag(interval_s=0.01)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0)     # the timer is now armed
        time.sleep(0.12)  # noqa: ASYNC251 - a CPU-bound call stalling the loop thread, on purpose
        for _ in range(200):
            if len(lag.samples) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert len(lag.samples) >= 2 and min(lag.samples) >= 0.0
    assert lag.summary()["max_ms"] >= 100.0  # the timer fired at least 110 ms late
