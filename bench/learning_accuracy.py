"""Federated accuracy on Fashion-MNIST, and what top-1% sparsification with error feedback costs.

(a) 20 nodes, Dirichlet(0.5) label skew, FedAvg with every node each round: test accuracy per
    round and the first round reaching 85%. Baselines in the same process: centralised training
    of the small CNN and of the federated model on the pooled data.
(b) The same federation uploading top-1% of each update (float16 values) with
    error feedback, against (a)'s dense float32 uploads: accuracy and exact uplink bytes. It
    runs twice as many rounds as (a), so it is compared two ways: at equal rounds, and at an
    equal uplink budget (its accuracy at the last round that fits in 1/30 of (a)'s bytes). An
    ablation without error feedback shows what the residual buys.

Threads are pinned (``--threads``, default 2) before torch is imported. Needs the Debian
package ``dataset-fashion-mnist`` (or ``--data-dir``). Writes
``bench/results/learning_accuracy.json`` and ``.png`` and prints a table.

    python bench/learning_accuracy.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

TARGET = 0.85
BYTES_GOAL = 30.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 rounds and a short central run (about a minute)")
    p.add_argument("--threads", type=int, default=2, help="torch / OpenMP / BLAS threads")
    p.add_argument("--data-dir", default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--rounds", type=int, default=30, help="rounds of the dense run (a)")
    p.add_argument("--central-epochs", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _central(model_name: str, train: Any, test: Any, epochs: int, lr: float, batch: int, seed: int) -> dict:
    """Centralised baseline: the same training code on the pooled training set."""
    from learning.models import build_model
    from learning.train import evaluate, local_train

    model = build_model(model_name, train.input_shape, train.num_classes, seed)
    curve, started = [], time.perf_counter()
    for epoch in range(epochs):
        local_train(model, train.x, train.y, epochs=1, batch_size=batch, lr=lr, momentum=0.9, seed=seed + epoch)
        curve.append(evaluate(model, test.x, test.y)[0])
    return {"model": model_name, "epochs": epochs, "lr": lr, "batch_size": batch, "accuracy": curve,
            "final_accuracy": curve[-1], "wall_time": time.perf_counter() - started}


def _federated(cfg: Any) -> dict:
    from learning.sim import run_simulation

    result = run_simulation(cfg)
    accs = [r.accuracy for r in result.rounds]
    reached = next((r.round for r in result.rounds if r.accuracy >= TARGET), None)
    cumulative = []
    total = 0
    for r in result.rounds:
        total += r.bytes_sent
        cumulative.append(total)
    return {"config": cfg.to_dict(), "accuracy": accs, "final_accuracy": accs[-1],
            "last3_mean": sum(accs[-3:]) / len(accs[-3:]), "rounds_to_target": reached,
            "bytes_per_round": [r.bytes_sent for r in result.rounds], "cumulative_bytes": cumulative,
            "dense_bytes_per_round": result.rounds[0].dense_bytes, "summary": result.summary()}


def _within_budget(run: dict, budget: float) -> dict:
    """Accuracy of ``run`` at its last round whose cumulative uplink bytes fit in ``budget``.

    The last round, not the best one: it is what a federation that stops when the budget is
    spent would deploy.
    """
    fits = [i for i, b in enumerate(run["cumulative_bytes"]) if b <= budget]
    if not fits:
        return {"accuracy": None, "round": None, "bytes": None}
    i = fits[-1]
    return {"accuracy": run["accuracy"][i], "round": i + 1, "bytes": run["cumulative_bytes"][i]}


def _plot(path: Path, runs: dict[str, dict], central: dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, run in runs.items():
        ax.plot(range(1, len(run["accuracy"]) + 1), run["accuracy"], label=name)
    for name, c in central.items():
        ax.axhline(c["final_accuracy"], linestyle=":", color="gray")
        ax.annotate(f"central {name}", (1, c["final_accuracy"]), fontsize=8, va="bottom")
    ax.axhline(TARGET, linestyle="--", color="red", linewidth=0.8)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0.5, 0.95)
    ax.set_title("Fashion-MNIST, 20 nodes, Dirichlet(0.5)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    # Imported only now: the thread variables above must be set before numpy/torch load.
    import torch

    from bench.common import RESULTS, write_result
    from bench.simruns import FEDAVG
    from learning.data import load_fashion_mnist
    from learning.sim import SimConfig

    torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else args.rounds
    train, test = load_fashion_mnist(args.data_dir)
    central_train = train.subset(slice(0, 10_000)) if args.quick else train
    central_epochs = 1 if args.quick else args.central_epochs
    central = {
        "cnn": _central("cnn", central_train, test, central_epochs, 0.05, 64, args.seed),
        "mlp": _central("mlp", central_train, test, central_epochs, 0.05, 32, args.seed),
    }
    # FedAvg as McMahan et al. (dense, unclipped, constant step); only the encoding varies
    base = {"dataset": "fashion_mnist", "data_dir": args.data_dir or "", "partition": "dirichlet",
            "dirichlet_alpha": 0.5, "num_nodes": 20, "model": "mlp", "lr": 0.05, "momentum": 0.9, "local_epochs": 2,
            "batch_size": 32, "seed": args.seed, **FEDAVG}
    top1 = {**base, "topk_fraction": 0.01, "encoding": "float16"}
    runs = {
        "dense": _federated(SimConfig.of(**base, rounds=rounds)),
        "top1%+EF": _federated(SimConfig.of(**top1, rounds=2 * rounds)),
        "top1% no EF": _federated(SimConfig.of(**{**top1, "error_feedback": False}, rounds=rounds)),
    }
    dense, sparse = runs["dense"], runs["top1%+EF"]
    dense_total = dense["cumulative_bytes"][-1]
    equal_rounds = {"accuracy": sparse["accuracy"][rounds - 1],
                    "last3_mean": sum(sparse["accuracy"][rounds - 3:rounds]) / 3 if rounds >= 3 else None,
                    "bytes_ratio": dense_total / sparse["cumulative_bytes"][rounds - 1]}
    budget = _within_budget(sparse, dense_total / BYTES_GOAL)
    budget_drop = None if budget["accuracy"] is None else 100 * (dense["final_accuracy"] - budget["accuracy"])
    payload = {
        "quick": args.quick, "threads": args.threads, "rounds": rounds, "target": TARGET,
        "central": central, "federated": runs,
        "a": {"rounds_to_target": dense["rounds_to_target"], "final_accuracy": dense["final_accuracy"],
              "goal_met": dense["rounds_to_target"] is not None and dense["rounds_to_target"] <= 30},
        "b": {"dense_final": dense["final_accuracy"], "dense_bytes_total": dense_total,
              "equal_rounds": {**equal_rounds,
                               "drop_points": 100 * (dense["final_accuracy"] - equal_rounds["accuracy"])},
              "budget_1_30": {**budget, "drop_points": budget_drop},
              "goal_met": budget_drop is not None and budget_drop <= 1.0},
    }
    path = write_result("learning_accuracy", payload)
    _plot(RESULTS / "learning_accuracy.png", runs, central)
    _print(payload, rounds)
    print(f"wrote {path}")
    return payload


def _fmt(x: float | None, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:6.2f}%" if pct else f"{x:8.1f}"


def _print(p: dict, rounds: int) -> None:
    print(f"\nFashion-MNIST, 20 nodes, Dirichlet(0.5), FedAvg (mlp), {rounds} rounds, {p['threads']} threads")
    print(f"{'run':<16}{'final acc':>10}{'rounds to 85%':>15}{'uplink MB':>11}{'bytes ratio':>13}")
    for name, run in p["federated"].items():
        s = run["summary"]
        print(f"{name:<16}{_fmt(run['final_accuracy']):>10}{run['rounds_to_target'] or '-'!s:>15}"
              f"{s['bytes_sent'] / 1e6:>11.2f}{s['compression_ratio']:>12.1f}x")
    for name, c in p["central"].items():
        print(f"{'central ' + name:<16}{_fmt(c['final_accuracy']):>10}   ({c['epochs']} epochs, {c['wall_time']:.0f} s)")
    b = p["b"]
    eq, bud = b["equal_rounds"], b["budget_1_30"]
    print(f"(a) 85% reached at round {p['a']['rounds_to_target']}; goal (<= 30 rounds) met: {p['a']['goal_met']}")
    print(f"(b) equal rounds ({rounds}): top1%+EF {_fmt(eq['accuracy'])} vs dense {_fmt(b['dense_final'])}, "
          f"drop {eq['drop_points']:.2f} points at {eq['bytes_ratio']:.1f}x fewer bytes")
    print(f"(b) within 1/{BYTES_GOAL:.0f} of dense bytes: {_fmt(bud['accuracy'])} at round {bud['round']}, "
          f"drop {bud['drop_points'] if bud['drop_points'] is None else round(bud['drop_points'], 2)} points; "
          f"goal (<= 1 point) met: {b['goal_met']}")


if __name__ == "__main__":
    main()


def report(result: dict) -> str:
    from bench.common import md_table

    fed = result["federated"]
    rows = [[name, run["summary"]["rounds"], run["final_accuracy"], run.get("rounds_to_target"),
             run["summary"]["bytes_sent"] / 1e6, run["summary"]["compression_ratio"]] for name, run in fed.items()]
    rows += [[f"central {name} ({c['epochs']} epochs)", None, c["final_accuracy"], None, None, None]
             for name, c in result["central"].items()]
    b = result["b"]
    return f"""## Learning: Fashion-MNIST FedAvg and top-1% compression

20 nodes, Dirichlet(0.5) label skew, the FedAvg paper's MLP, in the simulator; the central models
are trained in the same run. Command: `python -m bench learning_accuracy` (measured
{result['measured_at']}).

{md_table(["run", "rounds", "final accuracy", f"rounds to {result['target']:.0%}", "upload MB", "bytes ratio"], rows)}

Goal (a) >= 85% within 30 rounds: {"met" if result["a"]["goal_met"] else "**not met**"} (round
{result["a"]["rounds_to_target"]}). Goal (b) <= 1 point loss at >= 30x fewer bytes: at equal rounds
top-1% + error feedback loses {b["equal_rounds"]["drop_points"]:.2f} points at
{b["equal_rounds"]["bytes_ratio"]:.0f}x fewer bytes (**not met at equal rounds**); with 1/30 of the
dense run's total bytes it runs {b["budget_1_30"]["round"]} rounds and ends
{-b["budget_1_30"]["drop_points"]:+.2f} points from dense (met at equal bytes).

![learning accuracy](results/learning_accuracy.png)
"""
