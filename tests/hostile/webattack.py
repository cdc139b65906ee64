"""Attackers on the HTTP side of a node: floods from their own source address, and what they saw.

An attacker here is a client bound to a loopback address of its own (``127.0.0.2`` and up), so
that a victim's per-address limits tell it apart from the honest peers, the monitor and the test
itself, which all talk from ``127.0.0.1``. Each function is a scenario for
:func:`tests.hostile.harness.run_hostile` or a helper of the test that sets a testnet up; the
stats they return are plain dicts, so they cross the process boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from node.config import load_config, save_config
from tests.hostile.harness import Monitor, Victims
from tests.integration.harness import Testnet


def attacker_address(i: int = 0) -> str:
    """The i-th attacker source address (never 127.0.0.1, which honest parties use)."""
    return f"127.0.0.{2 + i}"


def configure_api(net: Testnet, **api: int) -> None:
    """Set ``[api]`` keys in every node's ``config.toml`` (before the nodes start)."""
    for i in range(net.n):
        path = net.home(i) / "config.toml"
        cfg = load_config(path)
        for key, value in api.items():
            setattr(cfg.api, key, value)
        save_config(cfg, path)


def start_victims(net: Testnet, height: int = 2) -> Victims:
    net.start_all()
    net.wait_height(height, timeout=60)
    return Victims(net)


def describe(monitor: Monitor) -> str:
    """One line per node: what the attack cost it (printed by the tests, quoted in reports)."""
    lines = []
    for i, s in monitor.samples.items():
        p99 = s.health_quantile(0.99)
        worst = max(s.health_ms, default=float("inf"))
        lines.append(f"node{i}: rss +{s.rss_peak_mb - s.rss_start_mb:.0f} MiB (start {s.rss_start_mb:.0f}), "
                     f"/health p99 {p99:.0f} ms, max {worst:.0f} ms, failures {s.health_failures}")
    return "\n".join(lines)


async def hammer(url: str, path: str, *, connections: int, duration: float, source: str,
                 method: str = "GET", bodies: list[bytes] | None = None, headers: dict | None = None) -> dict:
    """``connections`` loops sending ``method path`` as fast as answers come, for ``duration`` s.

    Counts answers by status, answers of 429 that carried ``Retry-After`` and that closed the
    connection, bytes received (the largest answer too), and requests whose connection failed
    (reset, or closed mid-answer).
    ``bodies`` are sent in turn (POST).
    """
    statuses: Counter[int] = Counter()
    stats: dict[str, Any] = {"retry_after": 0, "closed_429": 0, "cut": 0, "bytes": 0, "max_body": 0}
    deadline = time.monotonic() + duration
    sent = 0
    connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def loop() -> None:
            nonlocal sent
            while time.monotonic() < deadline:
                data = bodies[sent % len(bodies)] if bodies else None
                sent += 1
                try:
                    async with session.request(method, url + path, data=data, headers=headers) as resp:
                        size = 0
                        async for chunk in resp.content.iter_chunked(1 << 16):
                            size += len(chunk)
                        statuses[resp.status] += 1
                        stats["bytes"] += size
                        stats["max_body"] = max(stats["max_body"], size)
                        if resp.status == 429:
                            stats["retry_after"] += "Retry-After" in resp.headers
                            stats["closed_429"] += resp.headers.get("Connection", "").lower() == "close"
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    stats["cut"] += 1
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(loop() for _ in range(connections)))
    stats["statuses"] = dict(statuses)
    stats["sent"] = sent
    return stats


async def slow_bodies(url: str, sources: list[str], per_source: int, hold: float) -> dict:
    """Open ``per_source`` connections from each source, each sending a POST /txs whose body
    never completes, and watch each for ``hold`` seconds: refused at once (429, then the
    connection closed or left open), cut later, or still held open by the victim at the end."""
    parts = urlsplit(url)
    request = (f"POST /txs HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/msgpack\r\n"
               f"Content-Length: 100000\r\n\r\n").encode() + b"\x96" * 10

    async def one(source: str) -> tuple[str, str, float]:
        start = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port, local_addr=(source, 0))
        except OSError:
            return source, "refused_connect", 0.0
        try:
            writer.write(request)
            await writer.drain()
            try:
                head = await asyncio.wait_for(reader.read(4096), hold)
            except asyncio.TimeoutError:
                return source, "held", hold
            elapsed = time.monotonic() - start
            if head.startswith(b"HTTP/1.1 429"):
                try:
                    while await asyncio.wait_for(reader.read(4096), 2.0):
                        pass
                except asyncio.TimeoutError:
                    return source, "429 open", elapsed
                return source, "429 closed", elapsed
            return source, f"cut:{head[:12].decode(errors='replace')}", elapsed
        except ConnectionError:
            return source, "cut:reset", time.monotonic() - start
        finally:
            writer.close()

    results = await asyncio.gather(*(one(s) for s in sources for _ in range(per_source)))
    return {"results": [list(r) for r in results]}


async def slow_heads(url: str, sources: list[str], per_source: int, seconds: float) -> dict[str, Any]:
    """Slowloris: ``per_source`` connections from each source that start a request head and add a
    header line every second, never finishing it. Returns, per connection, its source and how
    many seconds the victim kept it open (None: still open when the attack ended) or that the
    victim refused it at once."""
    parts = urlsplit(url)

    async def one(source: str) -> tuple[str, float | None]:
        t0 = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port, local_addr=(source, 0))
        except OSError:
            return source, 0.0
        try:
            writer.write(b"GET /status HTTP/1.1\r\nHost: victim\r\n")
            while time.monotonic() - t0 < seconds:
                try:
                    if await asyncio.wait_for(reader.read(1024), 1.0) == b"":
                        return source, time.monotonic() - t0  # the victim closed it
                except TimeoutError:
                    pass
                writer.write(b"X-Slow: a\r\n")
                await writer.drain()
            return source, None
        except (ConnectionError, OSError):
            return source, time.monotonic() - t0
        finally:
            writer.close()

    results = await asyncio.gather(*(one(s) for s in sources for _ in range(per_source)))
    return {"results": [list(r) for r in results]}
