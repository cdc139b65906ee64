"""Shared plumbing for benchmarks: results folder, percentiles, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

# FEDCHAIN_BENCH_RESULTS redirects every result file (e.g. to a temporary folder in tests).
RESULTS = Path(os.environ.get("FEDCHAIN_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "mean": float(a.mean()), "max": float(a.max())}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with the machine and time it was measured on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": {"python": platform.python_version(), "cpu_count": __import__("os").cpu_count()},
               **payload}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def parse_metrics(text: str) -> dict[str, float]:
    """A Prometheus text page as ``{'name{labels}': value}`` (labels exactly as the node prints them)."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+(?:\{.*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; floats are printed with 4 significant digits."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


async def final_blocks(url: str, seconds: float, max_blocks: int | None = None) -> list[tuple[dict, float]]:
    """``final_block`` events from a node's ``/subscribe`` stream, each with the wall time (ms) it
    arrived, for at most ``seconds`` or ``max_blocks`` events."""
    import asyncio
    import json as _json

    import aiohttp

    events: list[tuple[dict, float]] = []
    deadline = time.time() + seconds
    async with aiohttp.ClientSession() as session, session.ws_connect(url + "/subscribe") as ws:
        while time.time() < deadline and (max_blocks is None or len(events) < max_blocks):
            try:
                msg = await ws.receive(timeout=max(0.1, deadline - time.time()))
            except asyncio.TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            event = _json.loads(msg.data)
            if event.get("type") == "final_block":
                events.append((event, time.time() * 1000))
    return events


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def one_thread_children() -> Iterator[None]:
    """One BLAS/OpenMP thread in every process spawned inside the block (children copy the env
    before numpy loads there); the parent's settings are restored afterwards."""
    saved = {v: os.environ.get(v) for v in THREAD_VARS}
    os.environ.update({v: "1" for v in THREAD_VARS})
    try:
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def finish(name: str, result: dict[str, Any], started: float, plot: Callable[[dict], None],
           table: Callable[[dict], str]) -> dict[str, Any]:
    """The common end of a benchmark's ``main``: record wall time, write JSON, plot, print."""
    result["wall_time_s"] = time.perf_counter() - started
    path = write_result(name, result)
    plot(result)
    print(table(result))
    print(f"wrote {path} in {result['wall_time_s']:.0f} s")
    return result
