"""Final accuracy of fedchain against FedAvg, FedSGD and FedProx (paper 1, Table 1).

Every data set (Fashion-MNIST, digits, FedProx Synthetic(1,1)), IID and Dirichlet(0.5) label
skew (plus the natural per-device split for Synthetic), 20 nodes, all nodes every round, same
rounds for every method; final test accuracy, mean ± std over seeds. Methods:

* FedAvg: E=1 local epoch of minibatch SGD, constant step (the baseline, McMahan et al.).
* FedSGD: one full-batch gradient step per node per round.
* FedProx: FedAvg plus the proximal term mu/2 ||w - w_global||^2 (Li et al.).
* fedchain: the genesis defaults (``bench.simruns.fedchain``: the robust rule, clip and a little
  noise, top-k sparsification with error feedback within the norm bound, eta_t = eta_0 /
  sqrt(t + beta)); once as they are and once with the ``local-dp`` genesis preset (record-level
  DP-SGD on every node, epsilon budget 8, from the RDP accountant).

A sweep of the epsilon budget on digits shows the privacy/accuracy trade-off at 20 nodes.

Run: ``python -m bench accuracy [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, write_result
from bench.simruns import (
    RunSpec,
    by_label,
    describe,
    fedavg,
    fedchain,
    mean_std,
    pm,
    pyplot,
    run_all,
    with_seeds,
)

# Per data set: model and local training (the same for every method).
DATASETS: dict[str, dict[str, Any]] = {
    "fashion_mnist": {"model": "logreg", "batch_size": 64, "lr": 0.3},
    "digits": {"model": "logreg", "batch_size": 32, "lr": 0.3},
    "synthetic": {"model": "logreg", "batch_size": 32, "lr": 0.1},
}
PARTITIONS = {"fashion_mnist": ("iid", "dirichlet"), "digits": ("iid", "dirichlet"),
              "synthetic": ("iid", "dirichlet", "natural")}
METHODS = ("FedAvg", "FedSGD", "FedProx", "fedchain", "fedchain+DP")
NODES = 20
FEDSGD_LR = 0.5
PROX_MU = 0.1
DP = {"preset": "local-dp", "epsilon": 8.0, "delta": 1e-5, "noise_multiplier": 3.0, "max_grad_norm": 1.0}
DP_SWEEP = (2.0, 4.0, 8.0)   # epsilon budgets
GOAL_POINTS = 1.0   # fedchain without DP within this many points of FedAvg


def method_configs(dataset: str, partition: str, rounds: int) -> dict[str, dict[str, Any]]:
    """The SimConfig fields of every method on one (data set, partition) cell."""
    d = DATASETS[dataset]
    task = {"dataset": dataset, "partition": partition, "dirichlet_alpha": 0.5, "num_nodes": NODES,
            "rounds": rounds, "model": d["model"], "batch_size": d["batch_size"], "lr": d["lr"],
            "local_epochs": 1}
    base = fedavg(task)
    ours = fedchain(task)
    return {
        "FedAvg": base,
        "FedSGD": {**base, "batch_size": None, "lr": FEDSGD_LR},
        "FedProx": {**base, "prox_mu": PROX_MU},
        "fedchain": ours,
        "fedchain+DP": {**ours, "privacy": DP},
    }


def _specs(datasets: list[str], partitions: dict[str, tuple[str, ...]], rounds: int, seeds: int,
           sweep: tuple[float, ...]) -> list[RunSpec]:
    specs = []
    for ds in datasets:
        for part in partitions[ds]:
            for method, cfg in method_configs(ds, part, rounds).items():
                specs += with_seeds(f"{ds}/{part}/{method}", cfg, seeds, dataset=ds, partition=part, method=method)
    dp = method_configs("digits", "iid", rounds)["fedchain+DP"]
    for budget in sweep:
        specs += with_seeds(f"dp-sweep/{budget}", {**dp, "privacy": {**DP, "epsilon": budget}}, seeds,
                            epsilon_budget=budget)
    return specs


def _summarise(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cells, sweep = [], []
    for runs in by_label(records).values():
        tags = runs[0]["tags"]
        acc = mean_std([r["final_accuracy"] for r in runs])
        eps = mean_std([r["max_epsilon"][-1] for r in runs])
        if "epsilon_budget" in tags:
            sweep.append({"epsilon_budget": tags["epsilon_budget"], "accuracy": acc, "epsilon": eps})
            continue
        rejected = [sum(u - a for u, a in zip(r["num_updates"], r["num_accepted"])) / len(r["num_updates"])
                    for r in runs]
        cells.append({**tags, "final_accuracy": acc, "epsilon": eps if eps["mean"] else None,
                      "rejected_per_round": mean_std(rejected),
                      "compression": sum(runs[0]["dense_bytes"]) / sum(runs[0]["bytes_sent"]),
                      "curve": [sum(a) / len(a) for a in zip(*(r["accuracy"] for r in runs))]})
    return cells, sweep


def _goal(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """Per cell: fedchain (no DP) minus FedAvg, in points; the goal holds where it is >= -1."""
    index = {(c["dataset"], c["partition"], c["method"]): c["final_accuracy"]["mean"] for c in cells}
    gaps = {f"{ds}/{part}": 100 * (index[(ds, part, "fedchain")] - index[(ds, part, "FedAvg")])
            for ds, part, m in index if m == "FedAvg"}
    return {"gap_points": gaps, "met": sum(g >= -GOAL_POINTS for g in gaps.values()), "cells": len(gaps)}


def _plot(cells: list[dict[str, Any]], sweep: list[dict[str, Any]], path: Path) -> None:
    plt = pyplot()
    groups = list(dict.fromkeys(f"{c['dataset']}\n{c['partition']}" for c in cells))
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / len(METHODS)
    for k, method in enumerate(METHODS):
        rows = [c for c in cells if c["method"] == method]
        xs = [groups.index(f"{c['dataset']}\n{c['partition']}") + (k - len(METHODS) / 2 + 0.5) * width for c in rows]
        axes[0].bar(xs, [100 * c["final_accuracy"]["mean"] for c in rows], width,
                    yerr=[100 * c["final_accuracy"]["std"] for c in rows], label=method, capsize=2)
    axes[0].set_xticks(range(len(groups)), groups, fontsize=8)
    axes[0].set_ylabel("final test accuracy (%)")
    axes[0].set_ylim(0, 100)
    axes[0].legend(fontsize=8, ncol=len(METHODS), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    axes[0].set_title(f"{NODES} nodes, mean ± std over seeds")
    if sweep:
        eps = [s["epsilon"]["mean"] for s in sweep]
        axes[1].errorbar(eps, [100 * s["accuracy"]["mean"] for s in sweep],
                         yerr=[100 * s["accuracy"]["std"] for s in sweep], marker="o")
        for s, e in zip(sweep, eps):
            axes[1].annotate(f"budget {s['epsilon_budget']:g}", (e, 100 * s["accuracy"]["mean"]), fontsize=7)
        axes[1].set_xlabel("epsilon (delta = 1e-5)")
        axes[1].set_title("fedchain+DP on digits (IID)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and Synthetic, IID, 5 rounds, 2 seeds")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.quick:
        datasets, partitions, rounds, seeds = ["digits", "synthetic"], {"digits": ("iid",), "synthetic": ("iid",)}, 5, 2
        sweep = DP_SWEEP[1:]
    else:
        datasets, partitions, rounds, seeds, sweep = list(DATASETS), PARTITIONS, args.rounds, args.seeds, DP_SWEEP
    records = run_all(_specs(datasets, partitions, rounds, seeds, sweep), args.workers)
    cells, dp_sweep = _summarise(records)
    result = {"quick": args.quick, "rounds": rounds, "seeds": seeds, "nodes": NODES,
              "settings": {"datasets": DATASETS, "fedsgd_lr": FEDSGD_LR, "prox_mu": PROX_MU,
                           "dp": DP, "fedchain": describe(fedchain({"lr": 0.3}))},
              "cells": cells, "dp_sweep": dp_sweep, "goal": _goal(cells), "goal_points": GOAL_POINTS,
              "wall_time_s": time.perf_counter() - started}
    path = write_result("accuracy", result)
    _plot(cells, dp_sweep, RESULTS / "accuracy.png")
    print(_table(result))
    print(f"wrote {path} in {result['wall_time_s']:.0f} s")
    return result


def _table(result: dict[str, Any]) -> str:
    """Markdown table: one row per (data set, partition), one column per method."""
    index = {(c["dataset"], c["partition"], c["method"]): c for c in result["cells"]}
    rows = list(dict.fromkeys((c["dataset"], c["partition"]) for c in result["cells"]))
    lines = ["| data set | partition | " + " | ".join(METHODS) + " | epsilon (DP) | fedchain uplink reduction |",
             "|---|---|" + "---:|" * (len(METHODS) + 2)]
    for ds, part in rows:
        cells = [pm(index[(ds, part, m)]["final_accuracy"]) for m in METHODS]
        eps = index[(ds, part, "fedchain+DP")]["epsilon"]
        lines.append(f"| {ds} | {part} | " + " | ".join(cells)
                     + f" | {pm(eps, 1, 1)} | {index[(ds, part, 'fedchain')]['compression']:.1f}x |")
    return "\n".join(lines)


def _sweep_summary(result: dict[str, Any]) -> str:
    """The strongest guarantee of the sweep and what it leaves of fedchain's accuracy without DP."""
    if not result["dp_sweep"]:
        return "no sweep was run."
    best = min(result["dp_sweep"], key=lambda p: p["epsilon"]["mean"])
    plain = next((c["final_accuracy"]["mean"] for c in result["cells"]
                  if (c["dataset"], c["partition"], c["method"]) == ("digits", "iid", "fedchain")), None)
    versus = "" if plain is None else f" against {100 * plain:.2f}% with the genesis defaults"
    return (f"the smallest epsilon spent, {best['epsilon']['mean']:.1f} (budget {best['epsilon_budget']:g}), "
            f"leaves {100 * best['accuracy']['mean']:.2f}% accuracy{versus}.")


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    goal = result["goal"]
    gaps = ", ".join(f"{k} {v:+.2f}" for k, v in goal["gap_points"].items())
    sweep = "\n".join(f"| {p['epsilon_budget']:g} | {pm(p['epsilon'], 1, 1)} | {pm(p['accuracy'])} |"
                      for p in result["dp_sweep"])
    models = ", ".join(f"{k}: {v['model']}, batch {v['batch_size']}, lr {v['lr']}"
                       for k, v in s["datasets"].items())
    return f"""## Accuracy against FedAvg, FedSGD and FedProx (paper 1, Table 1)

Paper 1's Table 1 compares final accuracy on MNIST/CIFAR-10 and IoT data. Here Fashion-MNIST
stands in for the image sets and FedProx Synthetic(1,1) for the IoT tabular data; scikit-learn
digits is the small image set. {result['nodes']} nodes, every node every round, {result['rounds']}
rounds for every method, final test accuracy (%) as mean ± std over {result['seeds']} seeds
(seed = partition, initial model, batch order, noise). Model: multinomial logistic regression
on all three sets (the FedProx paper's model for Synthetic; on Fashion-MNIST it is what fits
the time budget, the FedAvg 2NN MLP costing several times more per round). Settings: {models}; one local
epoch. FedSGD: one full-batch step, lr {s['fedsgd_lr']}. FedProx: mu = {s['prox_mu']}.
fedchain: the genesis defaults on the same task ({s['fedchain']} for lr 0.3; the
data set's lr in place of 0.3), every node's update clipped, noised, top-k encoded within the norm
bound and aggregated exactly as a chain does. fedchain+DP: the same under the `local-dp` genesis
preset (`docs/privacy.md`): DP-SGD on every node (noise multiplier {s['dp']['noise_multiplier']}, per-example
clip {s['dp']['max_grad_norm']}, Poisson-sampled batches), record-level epsilon budget {s['dp']['epsilon']:g} at
delta = {s['dp']['delta']:g} from the RDP accountant; a node whose budget is spent stops sending.

Command: `python -m bench accuracy{' --quick' if result['quick'] else ''}` (wall time {result['wall_time_s']:.0f} s).

{_table(result)}

Goal: fedchain (the genesis defaults) within {result['goal_points']:.0f} point of FedAvg (the baseline, run in
the same process). Met in {goal['met']} of {goal['cells']} cells; fedchain minus FedAvg in
points: {gaps}. Where fedchain trails, four mechanisms are at work even without an attack: the
robust rule rejects some honest updates under label skew (`rejected_per_round` in the JSON),
its clips shrink the updates of nodes whose data is rare, top-k delays part of each update
until its residual is large enough to be sent, and the step size falls as eta_0 / sqrt(t + 1)
(paper 1's eq. 6, the genesis default) where FedAvg keeps it constant. On digits with label skew
(2 seeds, 30 rounds, measured apart from this table) the clips and the schedule each cost more
than the rest: FedAvg on the same pipeline 85.7%, the default rule 72.0%; with the median-norm
clip off 77.6%, with the feature clip off as well 83.7%; with the rule and clips as they are but
a constant step of 0.3, 88.6 and 88.9% against 69.6 and 72.1% (by round 30 the schedule's step is
below a fifth of eta_0). On Synthetic's natural partition the constant step changes little (83.5
and 73.9% against 83.5 and 71.3%); there the drift test costs most (`rejected_per_round`; with
it off 87.6 / 84.0 / 77.2% on seeds 0-2 against 83.5 / 71.3 / 69.8%: `bench/adversary_findings.md`).
Two honest nodes holding most of some digits were rejected by phase 2's distance radius in 21
and 18 of 30 rounds (seed 0); letting phase 2 reject only for a validation gain, as below ten
updates, halved those rejections and gave 73.8%, 85.2% with both clips off
(`docs/decisions.md`).

Record-level differential privacy at 20 nodes is expensive: each node holds only a twentieth of
the data, so its Poisson batches are a large share of its records (little amplification) and
its budget lasts few updates. The epsilon column is the most any node spent. The sweep of the
budget on digits (IID) shows the trade-off: {_sweep_summary(result)}

| epsilon budget | epsilon spent | accuracy (%) |
|---:|---:|---:|
{sweep}

![accuracy per method and data set](results/accuracy.png)
"""


if __name__ == "__main__":
    main()
