"""As many real FL daemons as this machine holds: memory per daemon, chain and learning latency.

Each size starts that many daemons on 127.0.0.1 (separate processes, the default FL genesis on
digits, 2 s slots unless ``--slot-ms`` says otherwise; ``bench.fl_chain.measure``) and, after
warm-up, watches them for a window: block time and finality latency (node 0's ``/subscribe``),
update-to-final-block latency, event-loop lag p99 (every daemon's ``/metrics``), and each
daemon's memory from ``/proc``: RSS, PSS (shared pages, mostly libraries, divided among
the processes that map them) and USS (private pages only, what one more daemon really costs). A size that fails is recorded with
its error and ends the run (larger ones would fail the same way). Rows of another slot length
from the last run are kept beside the new ones: a fleet too large for 2 s slots on this machine
can be measured with longer ones without losing the 2 s rows.

``--network lan`` puts every daemon on a host of its own instead (a network namespace with its own
address on one LAN, ``tests/integration/netns.py``; needs root): no two daemons share an address,
so per-address limits and connection counts are those of separate devices. Its rows are kept
beside the loopback rows of the last run (and the other way round).

Run: ``python -m bench fleet [--quick] [--sizes 8,16,24] [--slot-ms 2000] [--network lan]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, md_table, percentiles, write_result
from bench.fl_chain import fl_testnet, measure
from tests.integration.harness import Testnet
from tests.integration.netns import Lan, LanTestnet, available

RSS_GOAL_MB = 250.0


def memory_mb(pid: int) -> dict[str, float]:
    """RSS, PSS and USS (private clean + dirty) of one process, in MB."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            m = re.match(r"(\w+):\s+(\d+) kB", line)
            if m:
                fields[m.group(1)] = int(m.group(2))
    return {"rss": fields["Rss"] / 1024, "pss": fields["Pss"] / 1024,
            "uss": (fields["Private_Clean"] + fields["Private_Dirty"]) / 1024}


PARTS = ("torch libraries", "other files", "C heap", "anonymous")
"""Where a daemon's memory lies (``breakdown_mb``): torch's shared libraries (clean code pages,
shared by every daemon of a torch model; none for a dense one), every other file mapping (Python, numpy, ...), glibc's main heap (C
allocations: Python objects above 512 bytes, torch's operator registry if loaded) and anonymous mappings
(Python's small-object arenas, other threads' malloc arenas, stacks, large allocations)."""


def _part(name: str) -> str:
    if "libtorch" in name or "/torch/lib/" in name:
        return PARTS[0]
    if name.startswith("/"):
        return PARTS[1]
    return PARTS[2] if name == "[heap]" else PARTS[3]


def breakdown_mb(pid: int) -> dict[str, dict[str, float]]:
    """RSS, PSS and USS of one process per :data:`PARTS`, in MB, from ``/proc/PID/smaps``."""
    kb = {part: {"rss": 0, "pss": 0, "uss": 0} for part in PARTS}
    part = PARTS[3]
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = re.match(r"[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
            if head:
                part = _part(head.group(1).strip())
                continue
            m = re.match(r"(Rss|Pss|Private_Clean|Private_Dirty):\s+(\d+) kB", line)
            if m:
                key = {"Rss": "rss", "Pss": "pss"}.get(m.group(1), "uss")
                kb[part][key] += int(m.group(2))
    return {part: {k: v / 1024 for k, v in sizes.items()} for part, sizes in kb.items()}


def _memory(net: Testnet) -> dict[str, Any]:
    alive = [p.pid for p in net.procs.values() if p.poll() is None]
    per = [memory_mb(pid) for pid in alive]
    return {"memory_mb": {k: percentiles([m[k] for m in per]) for k in ("rss", "pss", "uss")},
            "breakdown_mb": breakdown_mb(alive[0]) if alive else {},
            "load_average": os.getloadavg()[0], "daemons_alive": len(per)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 and 8 daemons, a short window")
    parser.add_argument("--sizes", default="", help="daemon counts, comma-separated")
    parser.add_argument("--window", type=float, default=None, help="seconds watched per size")
    parser.add_argument("--slot-ms", type=int, default=2000, help="slot length of the fleets' genesis")
    parser.add_argument("--network", choices=("loopback", "lan"), default="loopback",
                        help="daemons on 127.0.0.1, or each on a host of its own (network namespaces; root)")
    args = parser.parse_args(argv)
    key = "lan_runs" if args.network == "lan" else "runs"
    if args.network == "lan" and available():
        parser.error(available())
    sizes = [int(x) for x in args.sizes.split(",") if x] or ([4, 8] if args.quick else [8, 16, 32, 48])
    window = args.window or (20.0 if args.quick else 40.0)
    runs: list[dict[str, Any]] = []
    last = json.loads((RESULTS / "fleet.json").read_text()) if (RESULTS / "fleet.json").exists() else {}
    kept = {k: last[k] for k in ("runs", "lan_runs") if k in last and k != key}
    other_slots = [r for r in last.get(key, []) if r.get("slot_ms", 2000) != args.slot_ms]
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        def make_net(root: Path, n: int) -> Testnet:
            if args.network == "lan":
                return LanTestnet(root, stack.enter_context(contextlib.closing(Lan(n))), slot_ms=args.slot_ms, app="fl")
            return fl_testnet(root, n, args.slot_ms)
        for n in sizes:
            started = time.perf_counter()
            try:
                row = measure(n, window, Path(tmp) / f"fleet{n}", during=_memory, warmup_timeout=60 + 10 * n,
                              make_net=make_net)
            except Exception as exc:  # noqa: BLE001 - a size that does not fit is a result, not a crash
                runs.append({"nodes": n, "slot_ms": args.slot_ms, "error": f"{type(exc).__name__}: {exc}"[:300]})
                print(f"  {n} daemons: failed: {runs[-1]['error']}", flush=True)
                break
            row.update(wall_s=time.perf_counter() - started, slot_ms=args.slot_ms, window_s=window)
            runs.append(row)
            print(f"  {n} daemons: RSS p50 {row['memory_mb']['rss']['p50']:.0f} MB, "
                  f"{row['wall_s']:.0f} s", flush=True)
            write_result("fleet", {**kept, key: other_slots + runs, "window_s": window, "quick": args.quick})
    result = {**kept, key: other_slots + runs, "window_s": window, "quick": args.quick}
    write_result("fleet", result)
    _plot(result.get("runs", []))
    print(_table(runs))
    return result


def _plot(runs: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in runs if "error" not in r]
    if not ok:
        return
    n = [r["nodes"] for r in ok]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in ("rss", "pss", "uss"):
        ax[0].plot(n, [r["memory_mb"][key]["p50"] for r in ok], marker="o", label=key.upper())
    ax[0].axhline(RSS_GOAL_MB, ls=":", c="k")
    ax[0].set(xlabel="daemons", ylabel="MB per daemon (median)", title="memory per FL daemon (goal dotted)")
    ax[0].legend()
    for key, label in (("update_to_final_ms", "update->final p50"), ("finality_latency_ms", "finality p50"),
                       ("block_time_ms", "block time p50")):
        ax[1].plot(n, [r[key].get("p50", float("nan")) for r in ok], marker="o", label=label)  # nan: none seen
    ax[1].plot(n, [r["event_loop_lag_p99_ms"]["max_over_nodes"] for r in ok], marker="x", label="loop lag p99 (worst)")
    ax[1].set(xlabel="daemons", ylabel="ms", title="latency")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "fleet.png", dpi=110)
    plt.close(fig)


def _table(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        if "error" in r:
            rows.append([r["nodes"], r.get("slot_ms", 2000) / 1000, "failed: " + r["error"]] + [None] * 10)
            continue
        m, u = r["memory_mb"], r["update_to_final_ms"]
        rows.append([r["nodes"], r.get("slot_ms", 2000) / 1000, r["blocks"], r["block_time_ms"].get("p50"),
                     r["finality_latency_ms"].get("p50"),
                     r["finality_latency_ms"].get("p95"), u.get("p50"), u.get("p95"),
                     r["event_loop_lag_p99_ms"]["max_over_nodes"], m["rss"].get("p50"), m["pss"].get("p50"),
                     m["uss"].get("p50"), r["daemons_alive"]])
    return md_table(["daemons", "slot (s)", "blocks", "block time p50 (ms)", "finality p50 (ms)", "p95",
                     "update->final p50 (ms)", "p95", "loop lag p99, worst daemon (ms)", "RSS / daemon (MB)", "PSS",
                     "USS", "alive"], rows)


def report(result: dict[str, Any]) -> str:
    ok = [r for r in result.get("runs", []) if "error" not in r]
    verdict = "not measured"
    if ok:
        largest = max(ok, key=lambda r: r["nodes"])
        rss, uss = largest["memory_mb"]["rss"]["p50"], largest["memory_mb"]["uss"]["p50"]
        verdict = (f"RSS per daemon {rss:.0f} MB at {largest['nodes']} daemons: "
                   + (f"meets the goal (<= {RSS_GOAL_MB:.0f} MB)" if rss <= RSS_GOAL_MB else
                      f"misses the goal (<= {RSS_GOAL_MB:.0f} MB) by {rss - RSS_GOAL_MB:.0f} MB")
                   + f"; private memory (USS) {uss:.0f} MB per daemon")
    label = "reduced profile (--quick)" if result.get("quick") else "profile"
    kept = []
    for slot in sorted({r.get("slot_ms", 2000) for r in ok}):
        fits = [r["nodes"] for r in ok if r.get("slot_ms", 2000) == slot
                and r["block_time_ms"].get("p50", 1e9) <= 1.05 * slot]
        kept.append(f"{max(fits) if fits else 'none'} with {slot / 1000:g} s slots")
    failed = [f"{r['nodes']} daemons with {r.get('slot_ms', 2000) / 1000:g} s slots ({r['error'][:60]})"
              for r in result.get("runs", []) if "error" in r]
    limit = (f"The largest fleet that ran: {max(r['nodes'] for r in ok)} daemons; the largest that kept its slot "
             f"(block time p50 within 5% of it): {', '.join(kept)}." if ok else "No fleet ran.")
    if failed:
        limit += f" Failed: {'; '.join(failed)}."
    starved = [str(r["nodes"]) for r in ok if not r["update_to_final_ms"].get("n")]
    if starved:
        limit += f" With {', '.join(starved)} daemons no block decided an update within the window."
    loads = [r["load_average"] for r in ok if "load_average" in r]
    load = f"load average {min(loads):.0f} to {max(loads):.0f}" if loads else "load average not recorded"
    windows = sorted({r.get("window_s", result["window_s"]) for r in ok} or {result["window_s"]})
    window = " or ".join(f"{w:.0f} s" for w in windows)
    return f"""## A fleet of real FL daemons on one machine

Real daemons (separate processes, default FL genesis on digits, 2 s slots unless the table says otherwise) on this 2-core
machine, shared with other work while measured ({label}; window {window} per size).
Block time from consecutive final blocks' timestamps, finality from a block's timestamp to node 0
holding it final, update-to-final from an update's creation to node 0 learning its block is
final; memory from `/proc/PID/smaps_rollup` (RSS counts the shared library pages in every
daemon; PSS shares them out; USS is what one more daemon costs). Command: `python -m bench fleet`.

{_table(result.get('runs', []))}
{_lan(result.get('lan_runs'))}
- {verdict}.
- {limit} Loop lag, finality and block time at these sizes are those of a machine with 2 cores
  shared with other work ({load} while measured), not of the daemons alone.

{_breakdown(ok)}

- A daemon of the default task imports no torch: the dense zoo models train and evaluate in numpy
  (`learning/dense.py`; `tests/integration/test_fl_footprint.py` reads a training daemon's import
  log). Before that cut a daemon measured 277 MB RSS, 180 MB PSS, 178 MB USS (48 daemons), and 272,
  185 and 173 MB in a fleet of 8; now {_eight(ok)}. `import torch` alone is 218 MB RSS, 216 of it
  private; the rest of a daemon (interpreter, numpy, aiohttp, PyNaCl, msgpack and fedchain's own
  modules) is 56 MB RSS at import. Shared file pages in the largest fleet: {_shared(ok)}.
- Earlier cuts, each still in force: local SGD and Adam step a flat vector in numpy
  (`learning/optimizers.py`), so no `torch.optim` optimizer and its `torch._dynamo` and sympy
  (+68 MB private) load, even on a CNN node; the accountant takes Opacus' RDP analysis alone, not
  the `opacus` package (+92 MB private), and loads it on the first epsilon asked for; the digits
  file is read without `sklearn` (+53 MB private); the clustering rule loads scipy's compiled
  `linear_sum_assignment` alone (+22 MB private for `scipy.optimize`). A daemon's BLAS runs one
  thread (`threadpoolctl`), as its torch did: OpenBLAS's idle threads spin at the event loop's
  priority, and many daemons share few cores.
- Not the cause, measured before the cut: glibc's arenas. `malloc_stats()` in a running daemon
  showed the main arena in use to 98.5% (`malloc_trim` returned nothing) and the thread arenas
  under 3 MB together. A daemon runs 7 to 9 Python threads (event loop, trainer, blob and chain
  writers, `to_thread` workers) and 4 libuv workers. In a fleet of 4 a daemon grew by 5 MB over 8
  minutes, 3.4 of them in the first 2. In private memory a daemon costs {_uss(ok)}.

![fleet](results/fleet.png)
"""


def _breakdown(ok: list[dict[str, Any]]) -> str:
    """The largest fleet's node 0, per part of its address space (:data:`PARTS`)."""
    runs = [r for r in ok if r.get("breakdown_mb")]
    if not runs:
        return "No per-mapping breakdown in these results."
    run = max(runs, key=lambda r: r["nodes"])
    parts = run["breakdown_mb"]
    rows = [[part, parts[part]["rss"], parts[part]["pss"], parts[part]["uss"]] for part in PARTS]
    rows.append(["total", *(sum(parts[p][k] for p in PARTS) for k in ("rss", "pss", "uss"))])
    return (f"Where one daemon's memory lies (node 0 of {run['nodes']}, `/proc/PID/smaps`, MB):\n\n"
            + md_table(["part", "RSS", "PSS", "USS"], rows))


def _eight(ok: list[dict[str, Any]]) -> str:
    """The memory of the 8-daemon fleet, the size measured before the cut."""
    run = next((r for r in ok if r["nodes"] == 8), None)
    if run is None:
        return "8 daemons were not measured"
    m = run["memory_mb"]
    return f"{m['rss']['p50']:.0f} MB RSS, {m['pss']['p50']:.0f} MB PSS, {m['uss']['p50']:.0f} MB USS"


def _lan(runs: list[dict[str, Any]] | None) -> str:
    """The same fleet with every daemon on a host of its own (``--network lan``), if measured."""
    if not runs:
        return ""
    return f"""
Every daemon on a host of its own (`python -m bench fleet --network lan`): one network namespace
per daemon, each with its own address on one LAN (a bridge in a namespace of its own), so no two
daemons share an address, its connection slots or its rate limits, as on separate devices; the
CPU and memory are still this machine's.

{_table(runs)}
"""


def _shared(ok: list[dict[str, Any]]) -> str:
    runs = [r for r in ok if r.get("breakdown_mb")]
    if not runs:
        return "no breakdown"
    parts = max(runs, key=lambda r: r["nodes"])["breakdown_mb"]
    shared = sum(p["rss"] - p["uss"] for p in parts.values())
    return f"{shared:.0f} MB, {parts['torch libraries']['rss']:.0f} MB of them torch's"


def _uss(ok: list[dict[str, Any]]) -> str:
    if not ok:
        return "not measured"
    largest = max(ok, key=lambda r: r["nodes"])
    return f"{largest['memory_mb']['uss']['p50']:.0f} MB (USS, {largest['nodes']} daemons)"


if __name__ == "__main__":
    main()
