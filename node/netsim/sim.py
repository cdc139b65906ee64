"""A whole simulated network: N full node stacks in one process, on a virtual clock, from one seed.

:func:`run` builds the nodes (keys, bootstrap peers and link latencies all drawn from the seed),
a genesis whose first ``delegates`` nodes are the delegates, starts them, plays the scenario
(probe messages, a partition and its heal, crashes and restarts) and reports what a real testnet
reports: final height, block time, finality latency, plus gossip delivery latency and
amplification, bytes sent, memory per node and the invariants (:mod:`netsim.invariants`). The
same seed gives the same run bit for bit, down to the ``digest`` of every final block and
delivery with its virtual time; anything that reads a real clock, OS entropy or a thread would
break that, and ``tests/netsim`` checks it does not.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from consensus.genesis import make_genesis
from gossip.crypto import KeyPair
from node.netsim.invariants import Invariants
from node.netsim.loop import VirtualTimeLoop
from node.netsim.network import LinkParams, Network
from node.netsim.node import EPOCH_MS, NodeSpec, SimClock, SimNode, node_ip
from node.netsim.probes import Probes
from node.netsim.updates import TOPIC as UPDATE_TOPIC
from node.netsim.updates import UpdateLedger

CHAIN_ID = "netsim"
CONSENSUS_TOPICS = ("consensus/proposal", "consensus/vote", "consensus/tx", "consensus/evidence")


@dataclass
class SimConfig:
    nodes: int = 100
    delegates: int = 21
    seed: int = 1
    slot_ms: int = 2000
    slots: int = 15
    """Slots of chain time to run after genesis."""
    warmup_s: float = 6.0
    """Virtual seconds between the nodes' start and genesis: time for the mesh to form."""
    link: LinkParams = field(default_factory=LinkParams)
    dissemination: str = "gossipsub"
    bootstrap: int = 3
    """Random other nodes each node is told to dial first."""
    small_probes: int = 20
    small_size: int = 1024
    large_probes: int = 5
    large_size: int = 50 * 1024
    partition_slot: int | None = None
    heal_slot: int | None = None
    crashes: list[tuple[int, int, int | None]] = field(default_factory=list)
    """(node index, slot it crashes at, slot it restarts at or None)."""
    dissenters: list[int] = field(default_factory=list)
    """Nodes whose application objects to every payload it did not build (as a node that lacks
    the data or the proof to check one): the quorum's commits must carry them along."""
    liveness_slots: int = 10
    updates_per_slot: int = 4
    """Model updates published per slot, each by a random running node (FL selects a few
    trainers per round; every node training every round would not fit the links)."""
    update_size: int = 50 * 1024

    def at(self, slot: float) -> float:
        """Virtual time (s) of the start of chain slot ``slot`` (slot 0 is genesis)."""
        return self.warmup_s + slot * self.slot_ms / 1000


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pct(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    a = np.asarray(values, dtype=np.float64)
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


class Simulation:
    def __init__(self, config: SimConfig, loop: VirtualTimeLoop, data_dir: Path) -> None:
        self.c = config
        self.loop = loop
        self.rng = random.Random(f"sim:{config.seed}")
        self.clock = SimClock(loop)
        self.net = Network(loop, config.seed, config.link)
        self.invariants = Invariants(config.slot_ms, config.liveness_slots)
        self.probes = Probes(loop.time)
        keys = [KeyPair.from_seed(hashlib.sha256(f"netsim:{config.seed}:{i}".encode()).digest())
                for i in range(config.nodes)]
        specs = []
        for i, key in enumerate(keys):
            others = [j for j in range(config.nodes) if j != i]
            peers = self.rng.sample(others, min(config.bootstrap, len(others)))
            specs.append(NodeSpec(i, key, node_ip(i), [f"http://{node_ip(j)}:26657" for j in peers]))
        delegates = [k.node_id for k in keys[:config.delegates]]
        self.genesis = make_genesis(CHAIN_ID, delegates, genesis_time_ms=EPOCH_MS + int(config.warmup_s * 1000),
                                    slot_ms=config.slot_ms, max_delegates=config.delegates,
                                    min_delegates=min(4, config.delegates))
        settings: dict[str, Any] = {"dissemination": config.dissemination}
        self.nodes = [SimNode(spec, self.genesis, self.net, self.clock, data_dir, settings, config.seed, self._lookup,
                              self._keep, dissent=spec.index in config.dissenters)
                      for spec in specs]
        self._by_key = {key: n for n in self.nodes for key in (n.spec.url, n.spec.node_id)}
        self.ledger = UpdateLedger(config.slot_ms)
        self._shelf: dict[bytes, bytes] = {}
        for node in self.nodes:
            node.on_start.append(self._attach)
        self.finals: list[tuple[int, int, int, str, int]] = []
        """(virtual ms, node, height, block hash, block timestamp ms) of every final-block event."""
        self._drains: dict[int, asyncio.Task] = {}

    def _keep(self, body: bytes) -> bytes:
        """One copy of each update body for all nodes (what each would keep on disk)."""
        return self._shelf.setdefault(hashlib.sha256(body).digest(), body)

    def _lookup(self, key: str) -> SimNode | None:
        """A node by its URL or node id."""
        return self._by_key.get(key)

    def _attach(self, node: SimNode) -> None:
        assert node.gossip is not None and node.engine is not None and node.store is not None
        self.probes.attach(node.spec.index, node.gossip)
        stored = {b.height: b.hash.hex() for b in node.store.blocks(1, 1 << 30)}
        if node.incarnation > 1:
            self.invariants.on_restart(node.spec.index, stored, self.clock.wall_ms() - EPOCH_MS)
        assert node.app is not None
        node.app.listeners.append(lambda height, ids: self.ledger.taken(node.spec.index, height, ids, self._now_ms()))
        queue = node.engine.events.subscribe()
        old = self._drains.pop(node.spec.index, None)
        if old is not None:
            old.cancel()
        self._drains[node.spec.index] = self.loop.create_task(self._drain(node.spec.index, queue))

    async def _drain(self, index: int, queue: asyncio.Queue) -> None:
        while True:
            event = await queue.get()
            if event.get("type") != "final_block":
                continue
            at = self.clock.wall_ms() - EPOCH_MS
            self.finals.append((at, index, event["height"], event["hash"], event["time_ms"] - EPOCH_MS))
            self.invariants.on_final(index, event["height"], event["hash"], at)

    # ------------------------------------------------------------------ the scenario

    async def _start_all(self) -> None:
        offsets = sorted((self.rng.uniform(0, 1.0), i) for i in range(len(self.nodes)))
        for offset, i in offsets:
            delay = offset - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self.nodes[i].start()

    async def _at(self, when: float, action: Any, *args: Any) -> None:
        await asyncio.sleep(max(0.0, when - self.loop.time()))
        result = action(*args)
        if asyncio.iscoroutine(result):
            await result

    def _running(self) -> list[int]:
        return [n.spec.index for n in self.nodes if n.running]

    def _partition(self) -> None:
        """Two halves, even and odd nodes, so that the delegates are split too and neither side
        holds a quorum: the chain must stop, and go on once the partition heals."""
        self.net.partition([[n.spec.ip for n in self.nodes[side::2]] for side in (0, 1)])

    def _heal(self) -> None:
        self.net.heal()
        self.invariants.healed(self.clock.wall_ms() - EPOCH_MS, self._running())

    def _now_ms(self) -> int:
        return self.clock.wall_ms() - EPOCH_MS

    async def _crash(self, index: int) -> None:
        self.ledger.crashed(index, self._now_ms())
        await self.nodes[index].crash()

    async def _update(self) -> None:
        """A random running node publishes a model update trained on its final height."""
        live = [n for n in self.nodes if n.running]
        node = live[self.rng.randrange(len(live))]
        assert node.gossip is not None and node.app is not None
        number = len(self.ledger.updates)
        body = node.app.height.to_bytes(8, "big") + number.to_bytes(8, "big") + bytes(self.c.update_size - 16)
        uid = await node.gossip.publish(UPDATE_TOPIC, body)
        self.ledger.published(uid, node.spec.index, self._now_ms(), node.app.height)

    async def _probe(self, size: int) -> None:
        live = [n for n in self.nodes if n.running]
        node = live[self.rng.randrange(len(live))]
        assert node.gossip is not None
        await self.probes.publish(node.spec.index, node.gossip, size)

    def _schedule(self) -> list[Any]:
        c = self.c
        jobs = []
        span = (c.at(1), c.at(c.slots - 1))
        for count, size in ((c.small_probes, c.small_size), (c.large_probes, c.large_size)):
            for k in range(count):
                when = span[0] + (span[1] - span[0]) * (k + self.rng.random()) / max(1, count)
                jobs.append(self._at(when, self._probe, size))
        for slot in range(1, c.slots - 1):
            for k in range(c.updates_per_slot):
                jobs.append(self._at(c.at(slot + (k + self.rng.random()) / c.updates_per_slot), self._update))
        if c.partition_slot is not None:
            jobs.append(self._at(c.at(c.partition_slot), self._partition))
        if c.heal_slot is not None:
            jobs.append(self._at(c.at(c.heal_slot), self._heal))
        for index, down, up in c.crashes:
            jobs.append(self._at(c.at(down), self._crash, index))
            if up is not None:
                jobs.append(self._at(c.at(up), self.nodes[index].start))
        return jobs

    async def main(self) -> None:
        rss_before = rss_mb()
        await self._start_all()
        self.rss_per_node_mb = (rss_mb() - rss_before) / len(self.nodes)
        jobs = [self.loop.create_task(job) for job in self._schedule()]
        await asyncio.sleep(max(0.0, self.c.at(self.c.slots) - self.loop.time()))
        await asyncio.gather(*jobs)
        self.rss_peak_mb = rss_mb()
        self.rss_end_per_node_mb = (self.rss_peak_mb - rss_before) / len(self.nodes)
        self.invariants.check_liveness(self._now_ms(), set(self._running()))
        self.fates = self.ledger.fates(self._now_ms())
        for uid, fate in self.fates.items():
            if fate == "lost":
                u = self.ledger.updates[uid]
                self.invariants.violations.append(f"update {uid.hex()[:12]} of node {u.publisher} (published at "
                                                  f"t={u.at_ms}ms) is in no final block and was not dropped")
        self.metrics = {n.spec.index: n.gossip.metrics() for n in self.nodes if n.running and n.gossip}
        for drain in self._drains.values():
            drain.cancel()
        for node in self.nodes:
            await node.stop()

    # ------------------------------------------------------------------ figures

    def figures(self) -> dict[str, Any]:
        c, slot = self.c, self.c.slot_ms
        finality = [at - ts for at, _, _, _, ts in self.finals]
        to_final = self.ledger.to_final_ms()
        times = sorted({h: ts for _, _, h, _, ts in self.finals}.items())
        block_time = [b[1] - a[1] for a, b in zip(times, times[1:]) if b[0] == a[0] + 1]
        heights = [self.invariants.heights.get(i, 0) for i in range(c.nodes)]
        return {
            "config": {**asdict(c), "link": asdict(c.link)},
            "final_height": {"min": min(heights), "max": max(heights)},
            "blocks": len(times),
            "block_time_ms": pct(block_time),
            "finality_ms": pct(finality),
            "finality_slots": {k: v / slot if k != "n" else v for k, v in pct(finality).items()},
            "gossip": self._gossip_figures(),
            "memory_per_node_mb": {"after_start": self.rss_per_node_mb, "at_end": self.rss_end_per_node_mb},
            "rss_peak_mb": self.rss_peak_mb,
"updates": {"published": len(self.fates), "fates": dict(sorted(Counter(self.fates.values()).items())),
                        "to_final_ms": pct(to_final),
                        "to_final_slots": {k: v / slot if k != "n" else v for k, v in pct(to_final).items()}},
            "recoveries_ms": [pct(list(r["after_ms"].values())) for r in self.invariants.recoveries],
            "violations": self.invariants.violations,
            "digest": self.digest(),
        }

    def _gossip_figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        n = self.c.nodes
        for name, topic in (("small", "sim/probe"), ("large", "sim/bulk")):
            probes = [p for p, (_, _, _, t) in self.probes.published.items() if t == topic]
            lat = [s * 1000 for p in probes for s in self.probes.deliveries.get(p, {}).values()]
            copies = sum(m.topics[topic].msgs_in for m in self.metrics.values() if topic in m.topics)
            bodies = sum(m.topics[topic].bodies_in for m in self.metrics.values() if topic in m.topics)
            delivered = sum(m.topics[topic].delivered for m in self.metrics.values() if topic in m.topics)
            out[name] = {"messages": len(probes), "delivery_ms": pct(lat),
                         "delivered_share": len(lat) / max(1, len(probes) * (n - 1)),
                         "copies_per_delivery": copies / max(1, delivered),
                         "duplicates_per_node_per_message": copies / max(1, delivered) - 1,
                         "bodies_per_delivery": bodies / max(1, delivered) if topic == "sim/bulk" else None}
        copies = sum(m.topics[t].msgs_in for m in self.metrics.values() for t in CONSENSUS_TOPICS if t in m.topics)
        delivered = sum(m.topics[t].delivered for m in self.metrics.values() for t in CONSENSUS_TOPICS
                        if t in m.topics)
        sent = [sum(t.bytes_out for t in m.topics.values()) + m.control_bytes_out for m in self.metrics.values()]
        seconds = self.loop.time()
        out["consensus"] = {"copies_per_delivery": copies / max(1, delivered),
                            "duplicates_per_node_per_message": copies / max(1, delivered) - 1}
        out["bytes_out_per_node_per_s"] = float(np.mean(sent)) / seconds if sent else 0.0
        out["control_share"] = (sum(m.control_bytes_out for m in self.metrics.values()) / max(1, sum(sent)))
        out["drops"] = {k: sum(m.drops.get(k, 0) for m in self.metrics.values())
                        for k in ("duplicate", "graylisted", "withheld", "unsolicited", "rejected", "queue_full",
                                  "malformed", "bad_signature")}
        out["peers"] = pct([m.peers_connected for m in self.metrics.values()])
        return out

    def digest(self) -> str:
        """SHA-256 of every final-block event and every probe delivery, with virtual times."""
        h = hashlib.sha256()
        for event in self.finals:
            h.update(repr(event).encode())
        for probe, seen in self.probes.deliveries.items():
            h.update(repr((probe, sorted(seen.items()))).encode())
        return h.hexdigest()


def run(config: SimConfig, data_dir: Path | None = None) -> dict[str, Any]:
    """Run one simulation to its end; returns its figures (see :meth:`Simulation.figures`)."""
    started = time.perf_counter()
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="netsim-", dir=data_dir or root) as tmp:
        loop = VirtualTimeLoop()
        try:
            sim = Simulation(config, loop, Path(tmp))
            loop.run_until_complete(sim.main())
        finally:
            loop.close()
    figures = sim.figures()
    figures["wall_s"] = time.perf_counter() - started
    figures["virtual_s"] = config.at(config.slots)
    return figures

