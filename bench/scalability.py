"""Scalability in node count: simulated federations and real daemons (paper 1 Fig 11; Secured-FL Figs 4, 9).

(a) Simulator, 50 to 500 nodes: final accuracy after a fixed number of rounds and wall time per
    round (every node trains, compresses and uploads; the rule aggregates; the model is
    evaluated), fedchain against FedAvg in the same process.
(b) Real daemons on 127.0.0.1, as many as fit this machine: block time and finality latency with
    the counter application (``bench.chain.measure_testnet``), and update-to-final-block latency
    with the FL application (``bench.fl_chain.measure``). A size that fails is recorded with its
    error instead of aborting the run.

Run: ``python -m bench scalability [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.chain import measure_testnet
from bench.common import RESULTS, write_result
from bench.fl_chain import LAG_WINDOW_S, STEADY_S, measure_counter_lag, steady_note
from bench.fl_chain import measure as measure_fl
from bench.simruns import (
    by_label,
    fedavg,
    fedchain,
    mean_std,
    pm,
    pyplot,
    run_all,
    with_seeds,
)

SLOT_MS = 2000


def _setup(quick: bool) -> dict[str, Any]:
    if quick:
        return {"dataset": "digits", "batch_size": 32, "lr": 0.3, "rounds": 3, "seeds": 2, "sizes": (20, 50),
                "daemons": (4,), "blocks": 3, "fl_window": 5.0}
    return {"dataset": "fashion_mnist", "batch_size": 64, "lr": 0.3, "rounds": 10, "seeds": 3,
            "sizes": (50, 100, 200, 500), "daemons": (4, 8, 16), "blocks": 8, "fl_window": STEADY_S}


def _sim_rows(s: dict[str, Any], workers: int) -> list[dict[str, Any]]:
    specs = []
    for n in s["sizes"]:
        base = {"dataset": s["dataset"], "partition": "iid", "num_nodes": n, "model": "logreg",
                "batch_size": s["batch_size"], "lr": s["lr"], "rounds": s["rounds"], "local_epochs": 1}
        specs += with_seeds(f"{n}/FedAvg", fedavg(base), s["seeds"], nodes=n, method="FedAvg")
        specs += with_seeds(f"{n}/fedchain", fedchain(base), s["seeds"], nodes=n, method="fedchain")
    rows = []
    for runs in by_label(run_all(specs, workers)).values():
        rows.append({**runs[0]["tags"], "final_accuracy": mean_std([r["final_accuracy"] for r in runs]),
                     # median over rounds: the first round also pays one-time warm-up costs
                     "round_wall_s": mean_std([float(np.median(r["wall_time"])) for r in runs]),
                     "rejected_per_round": mean_std([float(np.mean(np.subtract(r["num_updates"], r["num_accepted"])))
                                                     for r in runs])})
    return rows


def _guarded(what: str, n: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run one testnet measurement; a failure becomes a row with its error, not a crash."""
    started = time.perf_counter()
    try:
        row = fn()
    except Exception as exc:   # noqa: BLE001 - any failure of a testnet is a result to report
        row = {"nodes": n, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    row["measure_wall_s"] = time.perf_counter() - started
    print(f"  {what} with {n} daemons: {'failed: ' + row['error'] if 'error' in row else 'ok'} "
          f"({row['measure_wall_s']:.0f} s)", flush=True)
    return row


LAG_GOAL_MS = 50
PARTS = ("sim", "chain", "fl", "floor")
"""Parts of the benchmark: simulator, counter daemons, FL daemons, loop-lag floor (counter daemons
over the FL window)."""


def _daemon_rows(s: dict[str, Any], parts: set[str], last: dict[str, Any]) -> dict[str, Any]:
    """The daemon measurements of ``parts``; the others are the last run's."""
    rows = dict(last.get("daemons", {}))
    n = max(s["daemons"])
    with tempfile.TemporaryDirectory() as tmp:
        if "chain" in parts:
            rows["chain"] = [_guarded("chain", k, partial(measure_testnet, k, s["blocks"], SLOT_MS, Path(tmp) / f"c{k}"))
                             for k in s["daemons"]]
        if "fl" in parts:
            rows["fl"] = [_guarded("fl", k, partial(measure_fl, k, s["fl_window"], Path(tmp) / f"fl{k}"))
                          for k in s["daemons"]]
        if "floor" in parts:
            rows["counter_lag"] = _guarded("counter loop lag", n,
                                           partial(measure_counter_lag, n, s["fl_window"], Path(tmp) / "floor"))
    return rows


def _plot(result: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for method in ("FedAvg", "fedchain"):
        rows = [r for r in result["simulator"] if r["method"] == method]
        n = [r["nodes"] for r in rows]
        ax[0].errorbar(n, [100 * r["final_accuracy"]["mean"] for r in rows],
                       yerr=[100 * r["final_accuracy"]["std"] for r in rows], marker="o", label=method)
        ax[1].errorbar(n, [r["round_wall_s"]["mean"] for r in rows], yerr=[r["round_wall_s"]["std"] for r in rows],
                       marker="o", label=method)
    ax[0].set(xscale="log", xlabel="nodes", ylabel="accuracy (%)", title=f"after {result['rounds']} rounds")
    ax[1].set(xscale="log", xlabel="nodes", ylabel="wall s per round", title="simulator wall time per round")
    sizes = sorted({r["nodes"] for r in result["simulator"]})
    for a in ax[:2]:
        a.minorticks_off()
        a.set_xticks(sizes, [str(n) for n in sizes])
    for key, label in (("block_time_ms", "block time"), ("finality_latency_ms", "finality latency")):
        ok = [r for r in result["daemons"]["chain"] if "error" not in r]
        ax[2].plot([r["nodes"] for r in ok], [r[key]["p50"] for r in ok], marker="o", label=f"{label} p50")
    ok = [r for r in result["daemons"]["fl"] if "error" not in r and r["update_to_final_ms"].get("n")]
    ax[2].plot([r["nodes"] for r in ok], [r["update_to_final_ms"]["p50"] for r in ok], marker="s",
               label="update to final block p50")
    ax[2].set(xlabel="daemons", ylabel="ms", title="real daemons on loopback")
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "scalability.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench scalability", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 and 50 simulated nodes, one 4-daemon testnet each")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seeds", type=int, help="simulator seeds per size (default 3; --quick 2)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}; the others are kept from the last results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    s = _setup(args.quick)
    if args.seeds:
        s["seeds"] = args.seeds
    command = " ".join(["python -m bench scalability", *(argv or [])])
    parts = set(args.parts.split(","))
    unknown = parts - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    last = json.loads((RESULTS / "scalability.json").read_text()) if parts != set(PARTS) else {}
    if "sim" in parts:
        sim, sim_wall = _sim_rows(s, args.workers), time.perf_counter() - started
    else:  # the simulator rows of the last run
        sim, sim_wall = last["simulator"], last["simulator_wall_s"]
        s.update(rounds=last["rounds"], seeds=last["seeds"])
    daemons = _daemon_rows(s, parts, last)
    # what produced each part: this command, or the last run's
    earlier = last.get("part_commands") or dict.fromkeys(PARTS, last.get("command"))
    part_commands = {p: command if p in parts else earlier.get(p) for p in PARTS}
    # when each part was measured, so the report can say which rows predate a change of the code
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    earlier_at = last.get("part_measured_at") or dict.fromkeys(PARTS, last.get("measured_at"))
    part_measured_at = {p: now if p in parts else earlier_at.get(p) for p in PARTS}
    result = {"quick": args.quick, "command": command, "part_commands": part_commands,
              "part_measured_at": part_measured_at, "dataset": s["dataset"],
              "model": "logreg", "partition": "iid",
              "rounds": s["rounds"], "seeds": s["seeds"], "simulator": sim, "simulator_wall_s": sim_wall,
              "daemons": daemons, "slot_ms": SLOT_MS, "blocks": s["blocks"], "fl_window_s": s["fl_window"],
              "wall_time_s": time.perf_counter() - started}
    path = write_result("scalability", result)
    _plot(result)
    print(_tables(result))
    print(f"wrote {path} in {result['wall_time_s']:.0f} s")
    return result


def _seeds(r: dict[str, Any]) -> str:
    full = 2 if r["quick"] else 3
    if r["seeds"] >= full:
        return f"{r['seeds']} seeds"
    return (f"{r['seeds']} seed{'s' if r['seeds'] > 1 else ''} (a reduced profile, the full one has {full}: "
            "no spread across seeds, and wall times are those of a busy shared machine)")


def _commands(r: dict[str, Any]) -> str:
    """The command(s) that produced the result: a run of some parts keeps the others' rows."""
    command = r.get("command") or "python -m bench scalability" + (" --quick" if r["quick"] else "")
    by_part = {p: c for p, c in (r.get("part_commands") or dict.fromkeys(PARTS, command)).items() if c}
    if set(by_part.values()) == {command}:
        return f"Command: `{command}` (wall time {r['wall_time_s']:.0f} s, of which simulator {r['simulator_wall_s']:.0f} s)."
    names = {"sim": "simulator", "chain": "counter daemons", "fl": "FL daemons", "floor": "loop-lag floor"}
    return "Commands: " + "; ".join(f"{names[p]} `{c}`" for p, c in by_part.items()) + "."


def _ms(p: dict[str, Any]) -> str:
    return f"{p['p50']:.0f} / {p['p95']:.0f}" if p.get("n") else "-"


def _tables(r: dict[str, Any]) -> str:
    lines = ["| nodes | method | accuracy (%) | wall s per round | rejected per round |", "|---:|---|---:|---:|---:|"]
    for row in r["simulator"]:
        lines.append(f"| {row['nodes']} | {row['method']} | {pm(row['final_accuracy'])} | "
                     f"{pm(row['round_wall_s'], 1, 2)} | {pm(row['rejected_per_round'], 1, 1)} |")
    lines += ["", ("| daemons | app | blocks | block time p50 / p95 (ms) | finality p50 / p95 (ms) | "
              "update to final p50 / p95 (ms) | event-loop lag p99, worst / median node (ms) | measured in (s) |"),
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["daemons"]["chain"]:
        if "error" in row:
            lines.append(f"| {row['nodes']} | counter | failed: {row['error']} | | | | | {row['measure_wall_s']:.0f} |")
        else:
            lines.append(f"| {row['nodes']} | counter | {row['blocks']} | {_ms(row['block_time_ms'])} | "
                         f"{_ms(row['finality_latency_ms'])} | - | - | {row['measure_wall_s']:.0f} |")
    for row in r["daemons"]["fl"]:
        if "error" in row:
            lines.append(f"| {row['nodes']} | fl | failed: {row['error']} | | | | | {row['measure_wall_s']:.0f} |")
        else:
            lag = row["event_loop_lag_p99_ms"]
            lines.append(f"| {row['nodes']} | fl | {row['blocks']} | - | {_ms(row.get('finality_latency_ms', {}))} | "
                         f"{_ms(row['update_to_final_ms'])} | {lag['max_over_nodes']:.0f} / "
                         f"{lag.get('median_over_nodes', float('nan')):.0f} | {row['measure_wall_s']:.0f} |")
    return "\n".join(lines)


def _load_note(r: dict[str, Any]) -> str:
    """CPU the FL daemons used and the machine's load, against the same window on counter daemons."""
    rows = [row for row in r["daemons"]["fl"] if "error" not in row and "daemon_cpu_cores" in row["event_loop_lag_p99_ms"]]
    if not rows:
        return ""
    used = "; ".join(f"{row['nodes']} daemons {row['event_loop_lag_p99_ms']['daemon_cpu_cores']:.2f} cores "
                     f"(load average {row['event_loop_lag_p99_ms']['load_average_1_5_15m'][0]:.1f})" for row in rows)
    top = max(rows, key=lambda row: row["nodes"])
    worst = top["event_loop_lag_p99_ms"]["max_over_nodes"]
    verdict = "met" if worst < LAG_GOAL_MS else f"not met ({worst / LAG_GOAL_MS:.1f}x the goal)"
    text = (f"Goal: event-loop lag p99 below {LAG_GOAL_MS} ms on every node with {top['nodes']} FL daemons: "
            f"worst node {worst:.0f} ms, **{verdict}**. "
            f"CPU the FL daemons used during the window, on 2 cores shared with other work: {used}.")
    floor = r["daemons"].get("counter_lag")
    if floor and "error" not in floor:
        lag = floor["event_loop_lag_p99_ms"]
        text += (f" The same window on {floor['nodes']} daemons of the counter application (no FL work at all): "
                 f"loop-lag p99 worst {lag['max_over_nodes']:.0f} / median {lag['median_over_nodes']:.0f} ms, "
                 f"{lag['daemon_cpu_cores']:.2f} cores, load average {lag['load_average_1_5_15m'][0]:.1f}, finality "
                 f"{_ms(floor['finality_latency_ms'])} ms: the lag this machine's load causes without any FL work.")
    return text


def report(r: dict[str, Any]) -> str:
    sim = {(row["nodes"], row["method"]): row for row in r["simulator"]}
    sizes = sorted({row["nodes"] for row in r["simulator"]})
    growth = {m: sim[(sizes[-1], m)]["round_wall_s"]["mean"] / sim[(sizes[0], m)]["round_wall_s"]["mean"]
              for m in ("FedAvg", "fedchain")}
    failed = [f"{row['nodes']} ({app})" for app in ("chain", "fl") for row in r["daemons"][app] if "error" in row]
    return f"""## Scalability in node count (paper 1, Fig 11; Secured-FL, Figs 4 and 9)

The papers plot accuracy and time against the number of nodes. (a) Simulator: {r['dataset']},
{r['model']}, IID, every node every round, 1 local epoch, {r['rounds']} rounds, {_seeds(r)}; the whole
data set is split among the nodes, so more nodes means fewer local samples and steps each.
Wall time per round (median over rounds) covers local training of every node, compression, the aggregation rule and
one test evaluation, on one core per run (two runs in parallel). (b) Real daemons as separate
processes on 127.0.0.1, {r['slot_ms']} ms slots: the counter application for block time and
finality latency ({r['blocks']} blocks), the FL application (digits, the genesis defaults) for
update-to-final-block latency and event-loop lag over a {r['fl_window_s']:.0f} s window after warm-up
(each daemon's lag p99 covers its last {LAG_WINDOW_S:.0f} s{steady_note(r['fl_window_s'])}).

{_commands(r)}

{_tables(r)}

From {sizes[0]} to {sizes[-1]} simulated nodes the wall time per round grows {growth['FedAvg']:.1f}x for
FedAvg and {growth['fedchain']:.1f}x for fedchain (the baseline run in the same process).
{_load_note(r)}
Daemon sizes that failed on this 2-core machine: {', '.join(failed) if failed else 'none'}. Every
daemon shares the same two cores, so latencies at the largest size include CPU contention, not
only protocol cost.

![scalability](results/scalability.png)
"""


if __name__ == "__main__":
    main()
