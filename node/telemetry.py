"""What this node sees happen: observed into the metrics histograms and kept for the dashboard.

* A follower reads the engine's events. For each block this node finalizes live (not while it
  syncs) it observes the block interval and the finality latency (from the start of the block's
  slot to the moment this node holds it final) and, on a federated-learning chain, how long each
  update the block decided took from its creation (the sender's ``seq``, microseconds of its
  clock) to final. It keeps the recent blocks and rounds (each update's sender, accepted or
  rejected and why) for the dashboard.
* A sampler keeps the global model's accuracy and loss per height (the FL service evaluates each
  new model in the background; the sampler picks up each result) and this process's CPU use.
* A prober times ``GET /health`` on every connected peer over the node's pooled HTTP session (a
  request round trip, connection set-up excluded once the connection is open) and, on FL chains,
  asks each peer for its privacy spending (``/fl/privacy``; what a peer says of itself).
* Aggregation time is measured around the FL application's ``run_round_async``, the one call
  through which both a proposer and a verifier run a round.

Everything kept is bounded: a fixed number of recent heights, one record per connected peer. The
block and round history is read back from the store at start, so a restarted node's dashboard is
not empty; the accuracy history starts with the process (evaluations are not stored).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp

from consensus.schedule import slot_start_ms
from learning.privacy_preset import PRESETS
from node.fetcher import FetchError, get_bytes, get_json
from node.looplag import LoopLag
from node.prometheus import NodeMetrics

log = logging.getLogger("fedchain.telemetry")

BLOCKS_KEPT = 120
ROUNDS_KEPT = 40  # the per-sender grid shows 40 heights
MODEL_POINTS_KEPT = 1024
SAMPLE_S = 1.0
PROBE_S = 5.0
PRIVACY_EVERY = 3  # probes: peers' privacy changes once per update, their round trip any time
PROBE_TIMEOUT = aiohttp.ClientTimeout(total=3)
PROBE_MAX_BYTES = 16 * 1024
MODEL_KEYS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss")


def finite(value: Any) -> float | None:
    """A float JSON can carry (browsers reject NaN), or None."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass
class PeerProbe:
    """What the prober learnt of one connected peer."""

    node_id: str
    url: str
    rtt_ms: float | None = None
    privacy: dict | None = None
    error: str = ""
    probed_at: float = 0.0


class Telemetry:
    def __init__(self, view: Any, gossip: Any, metrics: NodeMetrics, loop_lag: LoopLag, *, fl: Any = None,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.view = view
        self.gossip = gossip
        self.metrics = metrics
        self.loop_lag = loop_lag
        self.fl = fl
        self.session = session
        self.blocks: deque[dict] = deque(maxlen=BLOCKS_KEPT)
        self.rounds: deque[dict] = deque(maxlen=ROUNDS_KEPT)
        self.model: deque[dict] = deque(maxlen=MODEL_POINTS_KEPT)
        self.peers: dict[str, PeerProbe] = {}
        self.cpu_percent = 0.0
        self._queue: asyncio.Queue | None = None
        self._tasks: list[asyncio.Task] = []
        if fl is not None:
            self._time_aggregation(fl.app)

    def _time_aggregation(self, app: Any) -> None:
        run = app.run_round_async
        histogram = self.metrics.aggregation
        assert histogram is not None, "NodeMetrics(fl=True) on an FL chain"

        async def timed(*args: Any, **kwargs: Any) -> Any:
            with histogram.time():
                return await run(*args, **kwargs)

        app.run_round_async = timed

    # ----- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Subscribe first, then read the recent history, so no block falls between the two."""
        self._queue = self.view.subscribe()
        self._backfill()
        self._tasks = [asyncio.create_task(self._follow(), name="telemetry-events"),
                       asyncio.create_task(self._sample(), name="telemetry-sampler"),
                       asyncio.create_task(self._probe(), name="telemetry-prober")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._queue is not None:
            self.view.unsubscribe(self._queue)

    def _backfill(self) -> None:
        height = self.view.state.height
        prev = None
        for block in self.view.blocks(max(1, height - BLOCKS_KEPT), BLOCKS_KEPT + 1):
            if prev is not None or block.height == 1:
                self.blocks.append(self._block_record(block, prev, None))
            prev = block.header.timestamp_ms
        if self.fl is not None:
            for h in range(max(1, height - ROUNDS_KEPT + 1), height + 1):
                self._keep_round(h)

    # ----- final blocks ---------------------------------------------------------------------
    async def _follow(self) -> None:
        assert self._queue is not None
        while True:
            event = await self._queue.get()
            if event.get("type") != "final_block":
                continue
            try:
                self._on_final(event, time.time())
            except Exception:  # a telemetry bug must never stop the node's other work
                log.exception("telemetry of block %s failed", event.get("height"))

    def _on_final(self, event: dict, now_s: float) -> None:
        h = event["height"]
        if self.blocks and h <= self.blocks[-1]["height"]:
            return  # already read at start
        block = self.view.latest_block()
        if block is None or block.height != h:
            block = self.view.block(h)
        if block is None:
            return
        live = not self.view.status()["syncing"]
        g = self.view.genesis
        finality = now_s - slot_start_ms(block.header.slot, g.genesis_time_ms, g.slot_ms) / 1000 if live else None
        record = self._block_record(block, self._parent_time_ms(h), finality)
        self.blocks.append(record)
        if live:
            if record["interval_s"] is not None:
                self.metrics.block_interval.observe(max(0.0, record["interval_s"]))
            self.metrics.finality_latency.observe(max(0.0, finality or 0.0))
        if self.fl is not None and any(e.get("type") == "fl_round" for e in event.get("events", ())):
            updates = self._keep_round(h)
            if live:
                self._observe_update_latency(updates, now_s)

    def _parent_time_ms(self, height: int) -> int | None:
        if self.blocks and self.blocks[-1]["height"] == height - 1:
            return self.blocks[-1]["time_ms"]
        parent = self.view.block(height - 1) if height > 1 else None
        return parent.header.timestamp_ms if parent is not None else None

    @staticmethod
    def _block_record(block: Any, parent_time_ms: int | None, finality_s: float | None) -> dict:
        """A block's record; the first block has no interval (the genesis time is no block's)."""
        h = block.header
        interval = (h.timestamp_ms - parent_time_ms) / 1000 if parent_time_ms is not None else None
        return {"height": block.height, "time_ms": h.timestamp_ms, "interval_s": interval,
                "finality_s": finality_s, "producer": h.producer, "txs": len(block.txs)}

    def _keep_round(self, height: int) -> list[dict]:
        """Keep who sent what at ``height`` and what the rule made of it; the considered updates."""
        record = self.fl.round_record(self.view.store, height)
        if record is None:
            return []
        updates = record.get("updates", [])
        self.rounds.append({"height": height, "skipped": record.get("skipped"),
                            "updates": [{"sender": u["sender"], "accepted": u["accepted"], "reason": u["reason"],
                                         "weight": finite(u.get("weight"))} for u in updates]})
        return updates

    def _observe_update_latency(self, updates: list[dict], now_s: float) -> None:
        for u in updates:
            seq = self.fl.app.update_seq(bytes.fromhex(u["id"]))
            if seq is not None and self.metrics.update_to_final is not None:
                self.metrics.update_to_final.observe(max(0.0, now_s - seq / 1e6))

    # ----- sampler --------------------------------------------------------------------------
    async def _sample(self) -> None:
        mark = (time.monotonic(), time.process_time())
        while True:
            await asyncio.sleep(SAMPLE_S)
            now = (time.monotonic(), time.process_time())
            self.cpu_percent = 100 * (now[1] - mark[1]) / max(1e-9, now[0] - mark[0])
            mark = now
            if self.fl is not None:
                self._keep_model(self.fl.model_metrics)

    def _keep_model(self, metrics: dict) -> None:
        height = metrics.get("height")
        if height is None or (self.model and height <= self.model[-1]["height"]):
            return
        self.model.append({"height": height, **{k: finite(metrics.get(k)) for k in MODEL_KEYS}})

    # ----- prober ---------------------------------------------------------------------------
    async def _probe(self) -> None:
        rounds = 0
        while True:
            peers = {p.node_id: p.url for p in self.gossip.peers() if p.url}
            self.peers = {nid: self.peers.get(nid) or PeerProbe(nid, url) for nid, url in peers.items()}
            privacy = self.fl is not None and rounds % PRIVACY_EVERY == 0
            await asyncio.gather(*(self._probe_one(p, privacy) for p in self.peers.values()))
            rounds += 1
            await asyncio.sleep(PROBE_S)

    async def _probe_one(self, peer: PeerProbe, privacy: bool) -> None:
        if self.session is None:
            return
        try:
            t0 = time.perf_counter()
            await get_bytes(self.session, peer.url + "/health", PROBE_MAX_BYTES, timeout=PROBE_TIMEOUT)
            peer.rtt_ms = (time.perf_counter() - t0) * 1000
            if privacy:
                answer = await get_json(self.session, peer.url + "/fl/privacy", PROBE_MAX_BYTES, timeout=PROBE_TIMEOUT)
                peer.privacy = _privacy_fields(answer)
            peer.error = ""
        except (FetchError, ValueError) as exc:
            peer.error = str(exc)[:200]
        peer.probed_at = time.time()

    def peer_rtts(self) -> dict[str, float]:
        """Seconds of the last ``/health`` round trip to each connected peer that answered."""
        return {p.node_id: p.rtt_ms / 1000 for p in self.peers.values() if p.rtt_ms is not None}

    # ----- the dashboard's view -------------------------------------------------------------
    def snapshot(self) -> dict:
        proc = self.metrics.process()
        started = proc.get("process_start_time_seconds")
        return {
            "process": {"rss_bytes": proc.get("process_resident_memory_bytes"),
                        "cpu_percent": round(self.cpu_percent, 1),
                        "cpu_seconds": finite(proc.get("process_cpu_seconds_total")),
                        "open_fds": proc.get("process_open_fds"),
                        "uptime_s": round(time.time() - started, 1) if started else None},
            "event_loop_lag_ms": self.loop_lag.summary(),
            "blocks": list(self.blocks),
            "model": list(self.model),
            "rounds": list(self.rounds),
            "peers": [asdict(p) for p in sorted(self.peers.values(), key=lambda p: p.node_id)],
        }


def _privacy_fields(answer: Any) -> dict | None:
    """The few fields of a peer's ``/fl/privacy`` the dashboard shows, type-checked (it is the
    peer's word, shown as such, and must not carry anything else into our answers)."""
    if not isinstance(answer, dict):
        return None
    preset = answer.get("preset")
    return {"epsilon": finite(answer.get("epsilon")), "epsilon_budget": finite(answer.get("epsilon_budget")),
            "exhausted": bool(answer.get("exhausted")), "preset": preset if preset in PRESETS else None}
