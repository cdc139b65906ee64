"""Convergence of fedchain against FedAvg, and asynchronous against synchronous rounds (paper 1, Figs 7-8).

(a) Per round: test accuracy and test loss of fedchain (the genesis defaults: robust rule, clip
    and noise, top-k with error feedback, eta_0/sqrt(t + beta)) and of FedAvg, the first round
    reaching the target accuracy, and the uplink bytes spent until then.
(b) Against simulated time, with heterogeneous device speeds (lognormal, sigma = 1, times the
    node's share of the data): fedchain in synchronous rounds, where every round waits for its
    slowest node, and in the simulator's asynchronous mode, where every ``buffer`` arrivals are
    aggregated with staleness-decayed weights and updates older than 4 versions are dropped.
    Both run for the same simulated span; the local jobs each consumed are reported too.

Run: ``python -m bench convergence [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

from bench.common import RESULTS, finish
from bench.simruns import (
    RunSpec,
    by_label,
    curve_stats,
    describe,
    fedavg,
    fedchain,
    first_reaching,
    mean_std,
    pm,
    pyplot,
    run_all,
    with_seeds,
)

SPEED_SIGMA = 1.0
BUFFER = 5
MARGIN = 1.2   # extra async aggregations planned, so stale drops do not end the run before the horizon


def _setup(quick: bool) -> dict[str, Any]:
    if quick:
        return {"dataset": "digits", "batch_size": 32, "lr": 0.3, "rounds": 8, "sync_rounds": 4, "seeds": 2,
                "target": 0.75}
    return {"dataset": "fashion_mnist", "batch_size": 64, "lr": 0.3, "rounds": 30, "sync_rounds": 10, "seeds": 3,
            "target": 0.80}


def _base(s: dict[str, Any], rounds: int) -> dict[str, Any]:
    return {"dataset": s["dataset"], "partition": "dirichlet", "dirichlet_alpha": 0.5, "num_nodes": 20,
            "model": "logreg", "batch_size": s["batch_size"], "lr": s["lr"], "rounds": rounds,
            "local_epochs": 1, "speed_sigma": SPEED_SIGMA}


def async_aggregations(speeds: list[float], horizon: float, buffer: int) -> int:
    """Aggregations an async run needs to cover ``horizon`` simulated seconds.

    Node i finishes a job every ``speeds[i]`` seconds, so arrivals come at rate sum(1/speed);
    ``MARGIN`` covers arrivals dropped as stale (the curve is cut at the horizon afterwards).
    """
    return math.ceil(MARGIN * horizon * sum(1.0 / s for s in speeds) / buffer)


def _rounds_part(runs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    reached = [first_reaching(r["accuracy"], target) for r in runs]
    to_target = [None if k is None else sum(r["bytes_sent"][:k]) for r, k in zip(runs, reached)]
    acc_mean, acc_std = curve_stats(runs, "accuracy")
    loss_mean, loss_std = curve_stats(runs, "loss")
    return {"final_accuracy": mean_std([r["final_accuracy"] for r in runs]),
            "final_loss": mean_std([r["loss"][-1] for r in runs]),
            "rounds_to_target": mean_std(reached), "reached": sum(k is not None for k in reached),
            "bytes_to_target": mean_std(to_target),
            "accuracy_mean": acc_mean.tolist(), "accuracy_std": acc_std.tolist(),
            "loss_mean": loss_mean.tolist(), "loss_std": loss_std.tolist()}


def _time_curve(run: dict[str, Any], mode: str, horizon: float) -> tuple[list[float], list[float], int]:
    """(simulated times, accuracies, local jobs) of one run, cut at ``horizon``."""
    if mode == "sync":
        times = np.cumsum(run["straggler_time"]).tolist()
        jobs = run["num_updates"]
    else:
        times = run["sim_time"]
        jobs = [u + d for u, d in zip(run["num_updates"], run["dropped_stale"])]
    keep = [i for i, t in enumerate(times) if t <= horizon + 1e-9]
    return [times[i] for i in keep], [run["accuracy"][i] for i in keep], sum(jobs[i] for i in keep)


def _time_part(runs: list[dict[str, Any]], mode: str, horizons: list[float], target: float) -> dict[str, Any]:
    curves = [_time_curve(r, mode, h) for r, h in zip(runs, horizons)]
    to_target = []
    for times, accs, _ in curves:
        k = first_reaching(accs, target)
        to_target.append(None if k is None else times[k - 1])
    return {"time_to_target": mean_std(to_target), "reached": sum(t is not None for t in to_target),
            "final_accuracy": mean_std([accs[-1] for _, accs, _ in curves]),
            "local_jobs": mean_std([jobs for _, _, jobs in curves]),
            "aggregations": mean_std([len(times) for times, _, _ in curves]),
            "dropped_stale": mean_std([sum(r["dropped_stale"]) for r in runs]),
            "curves": [{"time": t, "accuracy": a} for t, a, _ in curves]}


def _plot(result: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    for name, part in result["rounds"].items():
        x = np.arange(1, len(part["accuracy_mean"]) + 1)
        for k, key in enumerate(("accuracy", "loss")):
            m, s = np.array(part[f"{key}_mean"]), np.array(part[f"{key}_std"])
            ax[k].plot(x, m, label=name)
            ax[k].fill_between(x, m - s, m + s, alpha=0.2)
    ax[0].axhline(result["target"], color="red", linestyle="--", linewidth=0.8)
    ax[0].set(xlabel="round", ylabel="test accuracy", title="accuracy per round (mean ± std)")
    ax[1].set(xlabel="round", ylabel="test loss", title="test loss per round")
    for mode, part in result["timing"].items():
        for i, c in enumerate(part["curves"]):
            ax[2].plot(c["time"], c["accuracy"], color="C0" if mode == "sync" else "C1",
                       alpha=0.8, label=mode if i == 0 else None)
    ax[2].axhline(result["target"], color="red", linestyle="--", linewidth=0.8)
    ax[2].set(xlabel="simulated time (s)", ylabel="test accuracy",
              title=f"fedchain sync vs async (speed sigma {SPEED_SIGMA})")
    for a in ax:
        a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "convergence.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench convergence", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, a few rounds, 2 seeds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    s = _setup(args.quick)
    base = _base(s, s["rounds"])
    sync_cfg = fedchain(_base(s, s["sync_rounds"]))
    first = run_all(with_seeds("FedAvg", fedavg(base), s["seeds"]) + with_seeds("fedchain", fedchain(base), s["seeds"])
                    + with_seeds("sync", sync_cfg, s["seeds"]), args.workers)
    groups = by_label(first)
    horizons = [float(np.sum(r["straggler_time"])) for r in groups["sync"]]
    # each async run has the seed (so the partition and speeds) of the sync run it is compared with
    async_specs = [RunSpec("async", {**sync_cfg, "mode": "async", "clients_per_round": BUFFER, "seed": r["config"]["seed"],
                                     "rounds": async_aggregations(r["speeds"], h, BUFFER)})
                   for r, h in zip(groups["sync"], horizons)]
    async_runs = run_all(async_specs, args.workers)
    result = {
        "quick": args.quick, "dataset": s["dataset"], "model": "logreg", "nodes": 20, "partition": "dirichlet(0.5)",
        "seeds": s["seeds"], "target": s["target"], "speed_sigma": SPEED_SIGMA, "buffer": BUFFER,
        "fedchain": describe(sync_cfg),
        "fedavg_lr": s["lr"],
        "rounds": {name: _rounds_part(groups[name], s["target"]) for name in ("FedAvg", "fedchain")},
        "timing": {"sync": _time_part(groups["sync"], "sync", horizons, s["target"]),
                   "async": _time_part(async_runs, "async", horizons, s["target"])},
        "horizon": mean_std(horizons),
    }
    return finish("convergence", result, started, _plot, _tables)


def _tables(r: dict[str, Any]) -> str:
    rows = ["| method | final accuracy (%) | final test loss | rounds to target | reached | uplink MB to target |",
            "|---|---:|---:|---:|---:|---:|"]
    for name, p in r["rounds"].items():
        rows.append(f"| {name} | {pm(p['final_accuracy'])} | {pm(p['final_loss'], 1, 3)} | "
                    f"{pm(p['rounds_to_target'], 1, 1)} | {p['reached']}/{r['seeds']} | "
                    f"{pm(p['bytes_to_target'], 1e-6, 2)} |")
    rows += ["", ("| mode | simulated time to target (s) | reached | accuracy at horizon (%) | aggregations | "
             "local jobs | dropped as stale |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, p in r["timing"].items():
        rows.append(f"| {mode} | {pm(p['time_to_target'], 1, 1)} | {p['reached']}/{r['seeds']} | "
                    f"{pm(p['final_accuracy'])} | {pm(p['aggregations'], 1, 0)} | {pm(p['local_jobs'], 1, 0)} | "
                    f"{pm(p['dropped_stale'], 1, 0)} |")
    return "\n".join(rows)


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["mean"] is None or b["mean"] is None or b["mean"] == 0:
        return "n/a (target not reached)"
    return f"{a['mean'] / b['mean']:.1f}x"


def report(r: dict[str, Any]) -> str:
    rounds, timing = r["rounds"], r["timing"]
    fc = r["fedchain"]
    return f"""## Convergence: fedchain against FedAvg, asynchronous against synchronous (paper 1, Figs 7-8)

Paper 1's Figs 7-8 plot accuracy and loss per round and show asynchronous training converging
faster. Here: {r['dataset']}, {r['model']}, {r['nodes']} nodes, Dirichlet(0.5) label skew, {r['seeds']}
seeds, target accuracy {100 * r['target']:.0f}%. FedAvg: dense, unclipped, constant lr {r['fedavg_lr']}.
fedchain: the genesis defaults, {fc}.

Command: `python -m bench convergence{' --quick' if r['quick'] else ''}` (wall time {r['wall_time_s']:.0f} s).

(b) sync vs async: device speeds lognormal(0, {r['speed_sigma']}) times the node's data share; a
synchronous round lasts as long as its slowest node; async aggregates every {r['buffer']} arrivals
(FedBuff-style, staleness weight (1+s)^-0.5 between the updates of an aggregation, updates more
than 4 versions old dropped, as a chain's blocks do). Both run
for the simulated span of the synchronous rounds ({pm(r['horizon'], 1, 1)} s).

{_tables(r)}

Rounds to target, fedchain / FedAvg: {_ratio(rounds['fedchain']['rounds_to_target'], rounds['FedAvg']['rounds_to_target'])};
uplink bytes to target, FedAvg / fedchain: {_ratio(rounds['FedAvg']['bytes_to_target'], rounds['fedchain']['bytes_to_target'])}.
Simulated time to target, sync / async: {_ratio(timing['sync']['time_to_target'], timing['async']['time_to_target'])},
at the price of more local computation in the same span (the local-jobs column): asynchronous
nodes never idle while waiting for stragglers. Goal (paper 1's claim): async reaches the target
sooner in time than sync — {'met' if _async_faster(timing) else 'not met'}.

![convergence per round and against simulated time](results/convergence.png)
"""


def _async_faster(timing: dict[str, Any]) -> bool:
    a, s = timing["async"]["time_to_target"]["mean"], timing["sync"]["time_to_target"]["mean"]
    return a is not None and timing["async"]["reached"] >= timing["sync"]["reached"] and (s is None or a < s)


if __name__ == "__main__":
    main()
