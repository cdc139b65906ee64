"""The hostile-peer harness: real daemons, an attacker in a process of its own, and the invariants
every attack test checks afterwards.

An attack test starts a testnet of real daemons (``tests.integration.harness.Testnet``), watches
them with a :class:`Monitor` (each daemon's resident memory, read from ``/proc``, and how long its
``/health`` takes to answer, which is what a stalled event loop looks like from outside), runs the
attacker with :func:`run_hostile` in a separate process built on the project's own wire code
(:mod:`tests.hostile.peer`), and then calls :meth:`Victims.check`:

* every honest node keeps finalizing (its final height rises by ``min_new_blocks``);
* no honest node is banned by any honest node (the attack did not turn honest peers against
  each other);
* each daemon's memory grew by at most ``rss_growth_mb`` and ``/health`` answered within
  ``health_p99_ms`` (99th percentile) and ``health_max_ms`` (worst case) throughout.

Whether the attacker itself was scored down or disconnected is attack-specific; :meth:`Victims.penalized`
answers it for one victim.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tests.integration.harness import Testnet, wait_for


@dataclass(frozen=True)
class Bounds:
    """What an attack may cost a victim; each test states its own."""

    rss_growth_mb: float = 150.0
    health_p99_ms: float = 1000.0
    health_max_ms: float = 3000.0
    min_new_blocks: int = 3
    finalize_timeout_s: float = 60.0


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no VmRSS for pid {pid}")


@dataclass
class Sample:
    """What the monitor saw of one daemon."""

    rss_start_mb: float
    rss_peak_mb: float = 0.0
    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0

    def health_quantile(self, q: float) -> float:
        if not self.health_ms:
            return float("inf")
        ordered = sorted(self.health_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Monitor:
    """Samples every daemon's RSS and ``/health`` latency from a background thread."""

    def __init__(self, net: Testnet, nodes: list[int], interval_s: float = 0.2) -> None:
        self.net = net
        self.nodes = nodes
        self.interval_s = interval_s
        self.samples = {i: Sample(rss_mb(net.procs[i].pid)) for i in nodes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-monitor", daemon=True)

    def __enter__(self) -> "Monitor":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def summary(self) -> str:
        """What the attack cost each watched daemon, for the test's output (printed before the
        invariants are checked, so a failing run shows its numbers too)."""
        return "; ".join(
            f"node{i}: RSS +{s.rss_peak_mb - s.rss_start_mb:.1f} MiB, /health p99 "
            f"{s.health_quantile(0.99):.0f} ms, max {max(s.health_ms, default=float('inf')):.0f} ms"
            for i, s in self.samples.items())

    def _run(self) -> None:
        while not self._stop.is_set():
            for i in self.nodes:
                s = self.samples[i]
                try:
                    s.rss_peak_mb = max(s.rss_peak_mb, rss_mb(self.net.procs[i].pid))
                    t0 = time.perf_counter()
                    with urllib.request.urlopen(self.net.url(i) + "/health", timeout=10) as resp:
                        resp.read()
                    s.health_ms.append((time.perf_counter() - t0) * 1000)
                except (OSError, ValueError):
                    s.health_failures += 1
            self._stop.wait(self.interval_s)


class Victims:
    """A running testnet under attack, and the checks made after the attack."""

    def __init__(self, net: Testnet) -> None:
        self.net = net
        self.nodes = list(range(net.n))
        self.ids = {i: net.node_id(i) for i in self.nodes}

    def monitor(self, nodes: list[int] | None = None) -> Monitor:
        """Watch ``nodes`` (default: all); leave out a node the test itself restarts."""
        return Monitor(self.net, self.nodes if nodes is None else nodes)

    def banned(self, i: int) -> set[str]:
        """Node ids that node ``i`` currently bans."""
        return {b["node_id"] for b in self.net.get(i, "/net_info")["banned"]}

    def drops(self, i: int) -> dict[str, int]:
        """Node ``i``'s gossip drop counters by reason, read from its ``/metrics`` page."""
        with urllib.request.urlopen(self.net.url(i) + "/metrics", timeout=5) as resp:
            text = resp.read().decode()
        prefix = 'fedchain_gossip_dropped_total{reason="'
        return {line[len(prefix):].split('"', 1)[0]: int(float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines() if line.startswith(prefix)}

    def penalized(self, i: int, node_id: str) -> bool:
        """True if node ``i`` banned ``node_id``, scored it below zero, or is not connected to it."""
        info = self.net.get(i, "/net_info")
        if node_id in {b["node_id"] for b in info["banned"]}:
            return True
        peer = next((p for p in info["peers"] if p["node_id"] == node_id), None)
        return peer is None or peer["score"] < 0

    def _height(self, i: int) -> int:
        try:
            return self.net.get(i, "/status")["final_height"]
        except OSError as exc:
            raise AssertionError(f"node{i} does not answer /status: {exc}") from exc

    def check(self, monitor: Monitor, bounds: Bounds) -> None:
        """Assert the invariants every attack must leave intact (see the module docstring)."""
        start = [self._height(i) for i in self.nodes]
        target = [h + bounds.min_new_blocks for h in start]
        wait_for(lambda: all(h >= t for h, t in zip(self.net.heights(self.nodes), target)),
                 bounds.finalize_timeout_s, f"every honest node to finalize {bounds.min_new_blocks} more blocks")
        honest = set(self.ids.values())
        for i in self.nodes:
            wrongly = self.banned(i) & honest
            assert not wrongly, f"node{i} banned honest node(s) {sorted(n[:12] for n in wrongly)}"
        for i, s in monitor.samples.items():
            growth = s.rss_peak_mb - s.rss_start_mb
            assert growth <= bounds.rss_growth_mb, (
                f"node{i} memory grew by {growth:.0f} MiB (bound {bounds.rss_growth_mb:.0f} MiB)")
            assert s.health_failures == 0, f"node{i} failed to answer /health {s.health_failures} time(s)"
            p99, worst = s.health_quantile(0.99), max(s.health_ms, default=float("inf"))
            assert p99 <= bounds.health_p99_ms, f"node{i} /health p99 {p99:.0f} ms (bound {bounds.health_p99_ms:.0f})"
            assert worst <= bounds.health_max_ms, f"node{i} /health max {worst:.0f} ms (bound {bounds.health_max_ms:.0f})"


Scenario = Callable[..., Coroutine[Any, Any, Any]]


def _child(scenario: Scenario, args: tuple, conn: Any) -> None:
    try:
        conn.send(("ok", asyncio.run(scenario(*args))))
    except BaseException as exc:  # the parent re-raises it with the child's message
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_hostile(scenario: Scenario, *args: Any, timeout: float = 60.0) -> Any:
    """Run ``await scenario(*args)`` in a fresh process (the attacker) and return its result.

    ``scenario`` must be a module-level async function (the child imports it by name), and its
    arguments and result picklable. The child is killed if it overruns ``timeout``.
    """
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(scenario, args, child), name="hostile", daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise AssertionError(f"the hostile process did not finish within {timeout}s")
        status, value = parent.recv()
    finally:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)
    if status != "ok":
        raise AssertionError(f"the hostile process failed: {value}")
    return value
