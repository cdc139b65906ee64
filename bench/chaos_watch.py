"""Watching a testnet under chaos from outside, as any client could.

* :class:`ChainRecords`: every block hash each node ever reported final at each height, from its
  ``/subscribe`` stream and from reading its ``/blocks`` again and again; a hash that changes is a
  reverted final block, two hashes at one height among honest nodes a disagreement. The first
  copy of each block is decoded and kept (producer, time, transactions, evidence, the FL payload).
* :class:`Watcher`: the tasks that feed it, the earliest moment any honest node announced each
  height final (what liveness is measured on), and what each daemon costs: resident memory from
  ``/proc`` every second, event-loop lag p99 from ``/metrics``, CPU time, machine load.

All requests leave from :data:`CLIENT_ADDR`: the node API limits its clients per address, and
every peer of a local testnet is 127.0.0.1, so the watcher's reads get budgets of their own and
never take the answer bytes the peers need to fetch updates and blocks from each other.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.common import parse_metrics
from consensus.block import Block
from gossip.codec import unpack
from node.fl.round import Payload
from tests.hostile.harness import rss_mb
from tests.integration.harness import Testnet

CLIENT_ADDR = "127.0.0.2"
MAX_BLOCK = 16 * 1024 * 1024
RECHECK = 20
LAG_P99 = 'fedchain_event_loop_lag_seconds{quantile="0.99"}'
"""Earlier heights re-read per sampling round and node (a random window), besides the new ones."""


@dataclass(frozen=True)
class BlockInfo:
    """What the benchmark needs of one final block."""

    height: int
    hash: str
    time_ms: int
    producer: str
    tx_senders: dict[str, int]
    offenders: tuple[str, ...]
    commit_signers: tuple[str, ...]  # voters of the parent's commit this block carries
    considered: tuple[tuple[str, str, int], ...]  # (update id hex, sender, base height)
    skipped: str

    @classmethod
    def decode(cls, raw: bytes) -> BlockInfo:
        block = Block.from_wire(unpack(raw, MAX_BLOCK))
        payload = Payload.decode(block.payload, MAX_BLOCK)
        return cls(block.height, block.hash.hex(), block.header.timestamp_ms, block.header.producer,
                   dict(Counter(tx.sender for tx in block.txs)), tuple(ev.offender for ev in block.evidence),
                   tuple(v for v, _ in block.last_commit.signatures) if block.last_commit else (),
                   tuple((c.update_id.hex(), c.sender, c.base_height) for c in payload.considered), payload.skipped)


@dataclass
class ChainRecords:
    """(node, height) -> the block hash it first reported final; every later different report."""

    hashes: dict[int, dict[int, str]] = field(default_factory=dict)
    blocks: dict[int, BlockInfo] = field(default_factory=dict)
    reverts: list[dict] = field(default_factory=list)
    reads: int = 0

    def report(self, node: int, height: int, block_hash: str, source: str) -> None:
        self.reads += 1
        known = self.hashes.setdefault(node, {})
        first = known.setdefault(height, block_hash)
        if first != block_hash:
            self.reverts.append({"node": node, "height": height, "first": first, "now": block_hash,
                                 "source": source, "at": time.time()})

    def take_raw(self, node: int, raw_hex: str, source: str) -> int:
        raw = bytes.fromhex(raw_hex)
        info = BlockInfo.decode(raw)
        self.report(node, info.height, info.hash, source)
        self.blocks.setdefault(info.height, info)
        return info.height

    def top(self, node: int) -> int:
        return max(self.hashes.get(node, {0: ""}))

    def disagreements(self, nodes: list[int]) -> list[int]:
        """Heights at which two of ``nodes`` reported different blocks final."""
        heights: dict[int, set[str]] = {}
        for i in nodes:
            for h, block_hash in self.hashes.get(i, {}).items():
                heights.setdefault(h, set()).add(block_hash)
        return sorted(h for h, seen in heights.items() if len(seen) > 1)

    def common_heights(self, nodes: list[int]) -> int:
        """Heights every one of ``nodes`` reported (the heights the agreement check covers)."""
        sets = [set(self.hashes.get(i, {})) for i in nodes]
        return len(set.intersection(*sets)) if sets else 0


@dataclass
class NodeCost:
    rss: list[tuple[float, float]] = field(default_factory=list)  # (time, MiB)
    lag_p99: list[tuple[float, float]] = field(default_factory=list)  # (time, ms)
    cpu_s: dict[int, float] = field(default_factory=dict)  # pid -> user+system seconds last seen


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` (``/proc/PID/stat``, in clock ticks)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (``/proc/stat``)."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:9]]  # guest time is already in user time
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


class Watcher:
    """Feeds :class:`ChainRecords` and the cost records while the run lasts."""

    def __init__(self, net: Testnet, honest: list[int], readable: list[int], seed: int,
                 sample_s: float = 5.0, metrics_s: float = 15.0) -> None:
        self.net = net
        self.honest = honest
        self.readable = readable  # nodes whose /blocks answers honestly (the height liar's does not)
        self.chain = ChainRecords()
        self.first_final: dict[int, float] = {}
        self.costs = {i: NodeCost() for i in range(net.n)}
        self.load: list[float] = []
        self.rng = random.Random(seed)
        self.sample_s = sample_s
        self.metrics_s = metrics_s
        self.session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self._jiffies = machine_jiffies()

    async def __aenter__(self) -> Watcher:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(CLIENT_ADDR, 0)),
                                             timeout=aiohttp.ClientTimeout(total=15))
        self._tasks = [asyncio.create_task(self._follow(i)) for i in self.honest]
        self._tasks += [asyncio.create_task(self._sample(i)) for i in self.readable]
        self._tasks += [asyncio.create_task(self._metrics(i)) for i in range(self.net.n)]
        self._tasks.append(asyncio.create_task(self._proc()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    async def get(self, i: int, path: str, tries: int = 20) -> Any:
        """GET ``path`` from node ``i``, JSON or text; over the node's rate limit (429), wait as long
        as it says and ask again, like any well-behaved client."""
        assert self.session is not None
        for _ in range(tries - 1):
            async with self.session.get(self.net.url(i) + path) as resp:
                if resp.status != 429:
                    resp.raise_for_status()
                    return await resp.json() if resp.content_type == "application/json" else await resp.text()
                wait = float(resp.headers.get("Retry-After", "1"))
            await asyncio.sleep(wait)
        raise aiohttp.ClientError(f"{self.net.url(i)}{path}: still refused (429) after {tries - 1} tries")

    # ----- what the chain did ----------------------------------------------------------------
    def chain_top(self) -> int:
        return max(self.first_final, default=0)

    def final_after(self, at: float) -> tuple[int, float] | None:
        """The first height finalized after wall time ``at`` and when (from honest streams)."""
        known = [h for h, t in self.first_final.items() if t <= at]
        nxt = max(known, default=0) + 1
        return (nxt, self.first_final[nxt]) if nxt in self.first_final else None

    async def _follow(self, i: int) -> None:
        """Node ``i``'s final blocks as it announces them; reconnects after every restart."""
        assert self.session is not None
        while True:
            try:
                async with self.session.ws_connect(self.net.url(i) + "/subscribe") as ws:
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        event = json.loads(msg.data)
                        if event.get("type") == "final_block":
                            h = event["height"]
                            self.first_final.setdefault(h, time.time())
                            self.chain.report(i, h, event["hash"], "stream")
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
                pass
            await asyncio.sleep(0.5)

    async def read_blocks(self, i: int, start: int, stop: int, source: str) -> int:
        """Read node ``i``'s final blocks ``start..stop`` (raw, in pages); returns the last height read."""
        last = start - 1
        while last < stop:
            page = await self.get(i, f"/blocks?from={last + 1}&limit={min(100, stop - last)}&raw=1")
            if not page["blocks"]:
                break
            for b in page["blocks"]:
                last = self.chain.take_raw(i, b["raw"], source)
        return last

    async def _sample(self, i: int) -> None:
        """Every ``sample_s``: node ``i``'s new final blocks, and a random window of older ones again."""
        while True:
            try:
                top = (await self.get(i, "/status"))["final_height"]
                seen = self.chain.top(i)
                await self.read_blocks(i, seen + 1, top, "sample")
                if seen >= 1:
                    start = self.rng.randint(1, seen)
                    await self.read_blocks(i, start, min(seen, start + RECHECK - 1), "recheck")
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError, KeyError):
                pass  # down, paused or restarting: next round
            await asyncio.sleep(self.sample_s)

    # ----- what it cost -----------------------------------------------------------------------
    async def _metrics(self, i: int) -> None:
        while True:
            try:
                lag = parse_metrics(await self.get(i, "/metrics")).get(LAG_P99)
                if lag is not None:
                    self.costs[i].lag_p99.append((time.time(), 1000 * lag))
            except (TimeoutError, aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(self.metrics_s)

    async def _proc(self) -> None:
        while True:
            now = time.time()
            for i, proc in list(self.net.procs.items()):
                try:
                    self.costs[i].rss.append((now, rss_mb(proc.pid)))
                    self.costs[i].cpu_s[proc.pid] = cpu_seconds(proc.pid)
                except (OSError, ValueError, IndexError):
                    pass  # exited between the look-up and the read
            with open("/proc/loadavg") as fh:
                self.load.append(float(fh.read().split()[0]))
            await asyncio.sleep(1.0)

    def load_summary(self, wall_s: float) -> dict:
        busy0, total0 = self._jiffies
        busy1, total1 = machine_jiffies()
        testnet = sum(sum(c.cpu_s.values()) for c in self.costs.values())
        cores = os.cpu_count() or 1
        return {"loadavg_1m_mean": sum(self.load) / max(1, len(self.load)), "loadavg_1m_max": max(self.load, default=0),
                "machine_busy_pct": 100.0 * (busy1 - busy0) / max(1, total1 - total0),
                "testnet_cpu_pct_of_machine": 100.0 * testnet / (cores * wall_s), "cores": cores}
