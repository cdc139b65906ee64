"""Federated learning on real daemons: update latency, bytes on the wire, event-loop lag.

N daemons (separate processes on 127.0.0.1, default FL genesis on digits, 2 s slots) train and
aggregate for a while. Then, from their HTTP APIs:

* update-to-final latency: for every update a final block accepted or rejected, the time from
  its creation (its sequence number is its creation time in microseconds, and it is gossiped
  right after) to the moment node 0 learned the block was final (``/subscribe``);
* bytes: the encoded update size against a dense float32 update of the same model, and every
  byte each node gossiped on ``fl/update`` (its own updates plus forwarding) per block;
* event-loop lag p99 of every daemon while it trains (``/metrics``). A daemon reports the p99 of
  its last :data:`LAG_WINDOW_S` seconds of samples, so a measurement window at least that long
  (:data:`STEADY_S`) leaves start-up (imports, peer handshakes, catching up) out of it.

Run: ``python -m bench fl_chain [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import final_blocks, parse_metrics, percentiles, write_result
from learning.compression import dense_bytes
from node.looplag import LoopLag
from tests.integration.harness import Testnet

_LAG = LoopLag()
LAG_WINDOW_S = _LAG.samples.maxlen * _LAG.interval_s
"""Seconds of samples a daemon's event-loop lag summary covers (at least)."""
STEADY_S = LAG_WINDOW_S + 10
"""A measurement window whose lag summary holds only steady-state samples."""


def steady_note(window_s: float) -> str:
    """How a lag column of a run with this window reads."""
    return ", all after warm-up" if window_s >= STEADY_S else ", start-up included (a short window)"


READ_TIMEOUT_S = 30.0
"""How long a read of a daemon may take. The wait is long: a fleet larger than this machine can
carry answers late, and what it reports (cumulative CPU, its own loop-lag quantiles, what its chain
holds) does not depend on when it is read, so a slow answer is a measurement, not a failure."""


def scrape(url: str) -> dict[str, float]:
    """A daemon's metrics, waiting up to :data:`READ_TIMEOUT_S`."""
    return parse_metrics(urllib.request.urlopen(url + "/metrics", timeout=READ_TIMEOUT_S).read().decode())


def loop_lag(n: int, start: dict[int, dict[str, float]], end: dict[int, dict[str, float]], seconds: float) -> dict:
    """Every daemon's loop-lag p99 at ``end``, and the CPU the daemons used between the scrapes
    (in cores: above the machine's two, timers wait for a core whatever the code does)."""
    lag = [1000 * end[i].get('fedchain_event_loop_lag_seconds{quantile="0.99"}', 0.0) for i in range(n)]
    cpu = sum(end[i].get("process_cpu_seconds_total", 0.0) - start[i].get("process_cpu_seconds_total", 0.0)
              for i in range(n))
    return {"max_over_nodes": max(lag), "median_over_nodes": float(np.median(lag)), "per_node": lag,
            "daemon_cpu_cores": cpu / seconds, "load_average_1_5_15m": list(os.getloadavg())}


def block_timing(events: list[tuple[dict, float]]) -> dict[str, dict]:
    """Finality latency (a block's timestamp, its slot, to node 0 holding it final) and block time
    (consecutive final blocks' timestamps) of the final blocks node 0 saw."""
    pairs = zip(events, events[1:])
    return {"finality_latency_ms": percentiles([at - e["time_ms"] for e, at in events]),
            "block_time_ms": percentiles([float(b["time_ms"] - a["time_ms"]) for (a, _), (b, _) in pairs
                                          if b["height"] == a["height"] + 1])}


def measure_counter_lag(n: int, seconds: float, root: Path) -> dict:
    """The same window on daemons of the counter application (no FL work at all): the loop lag
    that the machine's load alone causes, the floor under the FL figure."""
    net = Testnet(root, n, slot_ms=2000)
    net.start_all()
    try:
        net.wait_height(2, timeout=90)
        start = {i: scrape(net.url(i)) for i in range(n)}
        events = asyncio.run(final_blocks(net.url(0), seconds))
        end = {i: scrape(net.url(i)) for i in range(n)}
    finally:
        net.stop_all()
    return {"nodes": n, "app": "counter", "blocks": len(events), **block_timing(events),
            "event_loop_lag_p99_ms": loop_lag(n, start, end, seconds)}


def fl_testnet(root: Path, n: int, slot_ms: int = 2000) -> Testnet:
    """``n`` FL daemons of the default genesis on 127.0.0.1, 2 s slots unless told otherwise."""
    return Testnet(root, n, slot_ms=slot_ms, app="fl")


def measure(n: int, seconds: float, root: Path, *, during: Callable[[Testnet], dict[str, Any]] | None = None,
            warmup_timeout: float = 90, make_net: Callable[[Path, int], Testnet] = fl_testnet) -> dict:
    """``during`` (optional) is called once the window is over, with the daemons still running;
    its figures join the result (``bench.fleet`` reads each daemon's memory there). ``make_net``
    places the daemons (``bench.fleet --network lan``: a host of its own each); every read of a
    node goes through ``net.on_host``, where that node's address is reachable."""
    net = make_net(root, n)
    net.start_all()
    try:
        net.wait_height(2, timeout=warmup_timeout)
        start = {i: net.on_host(i, scrape, net.url(i)) for i in range(n)}
        first = net.get(0, "/status", READ_TIMEOUT_S)["final_height"]
        events = net.on_host(0, asyncio.run, final_blocks(net.url(0), seconds))
        finals = {e["height"]: at for e, at in events}
        extra = during(net) if during is not None else {}
        end = {i: net.on_host(i, scrape, net.url(i)) for i in range(n)}
        last = net.get(0, "/status", READ_TIMEOUT_S)["final_height"]
        latency, considered = [], 0
        for h in sorted(finals):
            for u in net.get(0, f"/fl/updates?height={h}", READ_TIMEOUT_S)["updates"]:
                summary = net.get(0, f"/fl/updates/{u['id']}", READ_TIMEOUT_S)
                latency.append(finals[h] - summary["seq"] / 1000)
                considered += 1
        model = net.get(0, "/fl/model", READ_TIMEOUT_S)
        # the newest evaluated model's: a model that just became final is evaluated a moment later
        params, accuracy = model["params"], model.get("test_accuracy", model.get("evaluated", {}).get("test_accuracy"))
    finally:
        net.stop_all()
    blocks = max(1, last - first)

    def delta(i: int, key: str) -> float:
        return end[i].get(key, 0.0) - start[i].get(key, 0.0)

    sent = [delta(i, "fedchain_fl_update_sent_bytes_total") for i in range(n)]
    updates = [delta(i, 'fedchain_fl_events_total{event="updates_sent"}') for i in range(n)]
    gossip_out = [delta(i, 'fedchain_gossip_bytes_total{direction="out",topic="fl/update"}') for i in range(n)]
    def total(event: str) -> int:
        return round(sum(delta(i, f'fedchain_fl_events_total{{event="{event}"}}') for i in range(n)))

    per_update = sum(sent) / max(1.0, sum(updates))
    return {
        "nodes": n, "blocks": blocks, "updates_considered": considered, "params": params,
        "test_accuracy_end": accuracy,
        "update_to_final_ms": percentiles(latency), **block_timing(events),
        "update_bytes": per_update, "dense_float32_bytes": dense_bytes(params),
        "update_compression_vs_dense": dense_bytes(params) / per_update if per_update else None,
        "gossip_fl_bytes_out_per_node_per_block": sum(gossip_out) / n / blocks,
        # the same dissemination (own updates plus forwarding) if every update were dense float32
        "dense_gossip_bytes_per_node_per_block": (sum(gossip_out) / n / blocks * dense_bytes(params) / per_update
                                                  if per_update else None),
        "event_loop_lag_p99_ms": loop_lag(n, start, end, seconds),
        # final rounds a node re-ran on its event loop (it had not verified the block), and updates
        # a node kept while one block behind instead of fetching them later: both summed over nodes
        "rounds_rerun_at_finalize": total("rounds_rerun_at_finalize"),
        "updates_kept_until_base_final": total("updates_kept_until_base_final"),
        **extra,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench fl_chain", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 daemons, a short window")
    args = parser.parse_args(argv)
    sizes, seconds = ((4,), 20.0) if args.quick else ((4, 8), STEADY_S)
    with tempfile.TemporaryDirectory() as tmp:
        runs = [measure(n, seconds, Path(tmp) / f"net{n}") for n in sizes]
    path = write_result("fl_chain", {"runs": runs, "window_s": seconds})
    print(f"{'daemons':>7} {'blocks':>6} {'upd->final p50':>14} {'p95':>7} {'B/update':>9} {'dense B':>8} "
          f"{'gossip B/node/blk':>17} {'dense eq.':>10} {'loop lag p99':>12}")
    for r in runs:
        lat = r["update_to_final_ms"]
        print(f"{r['nodes']:>7} {r['blocks']:>6} {lat.get('p50', 0):>12.0f}ms {lat.get('p95', 0):>5.0f}ms "
              f"{r['update_bytes']:>9.0f} {r['dense_float32_bytes']:>8} {r['gossip_fl_bytes_out_per_node_per_block']:>17.0f} "
              f"{r['dense_gossip_bytes_per_node_per_block'] or 0:>10.0f} "
              f"{r['event_loop_lag_p99_ms']['max_over_nodes']:>10.1f}ms")
    print(f"wrote {path}")
    return {"runs": runs}


if __name__ == "__main__":
    main()


def report(result: dict) -> str:
    from bench.common import md_table

    rows = []
    for r in result["runs"]:
        lat = r["update_to_final_ms"]
        fin = r.get("finality_latency_ms", {})
        rows.append([r["nodes"], r["blocks"], r["updates_considered"], fin.get("p50"), fin.get("p95"),
                     lat.get("p50"), lat.get("p95"),
                     round(r["update_bytes"]), r["dense_float32_bytes"], r["update_compression_vs_dense"],
                     round(r["gossip_fl_bytes_out_per_node_per_block"]),
                     round(r["dense_gossip_bytes_per_node_per_block"] or 0),
                     r["event_loop_lag_p99_ms"]["max_over_nodes"], r["event_loop_lag_p99_ms"].get("median_over_nodes"),
                     r["test_accuracy_end"]])
    return f"""## Federated learning on the chain: latency, bytes, event-loop lag

Real daemons training on digits (default FL genesis) for {result['window_s']:.0f} s after warm-up
(the loop-lag column: each daemon's p99 over its last {LAG_WINDOW_S:.0f} s of samples{steady_note(result['window_s'])}).
Finality is the time from a block's timestamp (its slot) to node 0 holding it final;
update-to-final is the time from an update's creation (gossiped at once) to node 0 learning that
the block considering it is final. Gossip bytes count each node's own updates plus forwarding on
the full mesh; the dense column is the same traffic if updates were dense float32. Command:
`python -m bench fl_chain` (measured {result['measured_at']}).

{md_table(["daemons", "blocks", "updates", "finality p50 (ms)", "p95", "update->final p50 (ms)", "p95",
           "bytes/update", "dense bytes", "x smaller", "gossip B/node/block", "dense equivalent",
           "loop lag p99, worst node (ms)", "median node", "test acc"], rows)}

Goal for event-loop lag while training: p99 < 50 ms.
"""
