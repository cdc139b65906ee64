"""Ablation of fedchain's defences under a fixed attack (Secured-FL Table 3).

Full fedchain = the product pipeline, the genesis defaults (``bench.simruns.fedchain``): two-phase
clustering with its dynamic threshold (the MAD radius multiplier chosen each round by validation
accuracy), admission of registered members only, clipping and noise and top-k sparsification
with error feedback. Each variant switches one part off:

* clustering off: plain FedAvg of every admitted update;
* dynamic threshold off: the clustering rule without its validation callback, so the radius is
  the fixed default multiplier (3 MADs);
* admission off: unregistered attackers may submit too. Modelled as ``--unregistered`` extra
  updates in every aggregation, each a reversed copy (the same sign flip) of an update the
  attacker overheard that round; admission would have dropped them before aggregation;
* DP off: no clipping, no noise;
* sparsification off: dense float32 updates.

Fixed attack: sign flip (each Byzantine node sends the negation of its honest update) by 20% of
the registered nodes. A clean run of the full pipeline is the no-attack reference. Fashion-MNIST,
20 nodes, Dirichlet(0.5), 64-unit MLP, 3 seeds, mean ± std.

Run: ``python -m bench ablation [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import RESULTS, write_result
from bench.robustness import (
    FMNIST,
    mean_std,
    pin_threads,
    plt_module,
    pm,
    run_all,
    simulate_job,
)

ATTACK = "sign_flip"
FRACTION = 0.2


class FixedThreshold:
    """Aggregator that withholds the validation callback: the rule keeps its fixed radius."""

    def __call__(self, rule: str, updates: np.ndarray, weights: np.ndarray, *, evaluate: Any = None,
                 **kwargs: Any) -> Any:
        from learning.aggregation import aggregate

        return aggregate(rule, updates, weights, evaluate=None, **kwargs)


class Unregistered:
    """Aggregator that lets ``count`` unregistered attackers join every aggregation.

    Each extra update is ``attack`` crafted from an update picked at random among those the
    round's honest and registered nodes sent (what an eavesdropper on the gossip sees), with the
    median sample weight. Verdicts on the extra rows are counted, then cut off, so the
    simulator's per-node bookkeeping is unchanged.
    """

    def __init__(self, count: int, attack: str) -> None:
        if count < 1:
            raise ValueError(f"unregistered attackers: count must be >= 1, got {count}")
        self.count, self.attack = count, attack
        self.submitted = self.accepted = 0

    def __call__(self, rule: str, updates: np.ndarray, weights: np.ndarray, *, trust: np.ndarray | None = None,
                  seed: int = 0, **kwargs: Any) -> Any:
        from learning.aggregation import AggregationResult, aggregate
        from learning.attacks import craft_updates

        n = updates.shape[0]
        rng = np.random.default_rng([seed, 0x5EED])
        crafted = craft_updates(self.attack, updates[rng.integers(0, n, self.count)], updates, rng)
        if kwargs.get("held") is not None:     # strangers are held by nobody
            kwargs["held"] = np.concatenate([kwargs["held"], np.zeros(self.count, dtype=bool)])
        res = aggregate(rule, np.concatenate([updates, crafted]),
                        np.concatenate([weights, np.full(self.count, np.median(weights))]),
                        trust=None if trust is None else np.concatenate([trust, np.ones(self.count)]),
                        seed=seed, **kwargs)
        self.submitted += self.count
        self.accepted += int(np.count_nonzero(res.accepted[n:]))
        return AggregationResult(res.vector, res.accepted[:n], res.scores[:n], res.reasons[:n], res.info)

    def report(self) -> dict[str, int]:
        return {"unregistered_submitted": self.submitted, "unregistered_accepted": self.accepted}


def variants(unregistered: int) -> dict[str, tuple[dict, Any]]:
    """Variant name -> (config overrides on top of the full pipeline under attack, aggregator)."""
    return {
        "full fedchain": ({}, None),
        "clustering off (FedAvg)": ({"rule": "fedavg"}, None),
        "dynamic threshold off": ({}, FixedThreshold()),
        "admission off": ({}, Unregistered(unregistered, ATTACK)),
        "DP off": ({"clip_norm": None, "noise_multiplier": 0.0}, None),
        "sparsification off": ({"topk_fraction": None}, None),
        "full fedchain, no attack": ({"attack": None, "byzantine_fraction": 0.0}, None),
    }


def measure(seeds: int, rounds: int, unregistered: int, workers: int) -> dict:
    from learning.sim import SimConfig

    full = {**FMNIST, "rounds": rounds, "attack": ATTACK, "byzantine_fraction": FRACTION}
    table = variants(unregistered)
    jobs = [{"config": {**full, **over, "seed": s}, "aggregator": agg} for over, agg in table.values()
            for s in range(seeds)]
    rows = run_all(simulate_job, jobs, workers)
    out: dict[str, Any] = {}
    for k, name in enumerate(table):
        runs = rows[k * seeds:(k + 1) * seeds]
        acc = [r["final_accuracy"] for r in runs]
        cell: dict[str, Any] = {"accuracy": mean_std(acc), "per_seed": acc,
                                "precision": [r["summary"]["detection_precision"] for r in runs],
                                "recall": [r["summary"]["detection_recall"] for r in runs],
                                "max_epsilon": max(r["max_epsilon"] for r in runs)}
        if "aggregator" in runs[0]:
            cell["unregistered"] = {key: sum(r["aggregator"][key] for r in runs) for key in runs[0]["aggregator"]}
        out[name] = cell
    base = out["full fedchain"]["per_seed"]
    for cell in out.values():
        cell["delta_points"] = mean_std(100 * (a - b) for a, b in zip(cell["per_seed"], base))
    return {"attack": ATTACK, "fraction": FRACTION, "unregistered": unregistered, "seeds": seeds,
            "config": SimConfig.of(**full).to_dict(), "variants": out,
            "sim_wall_time": sum(r["wall_time"] for r in rows)}


def plot(result: dict) -> None:
    plt = plt_module()
    names = list(result["variants"])
    means = [100 * result["variants"][n]["accuracy"]["mean"] for n in names]
    stds = [100 * result["variants"][n]["accuracy"]["std"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    ax.barh(names[::-1], means[::-1], xerr=stds[::-1], color=["tab:gray"] + ["tab:blue"] * (len(names) - 1))
    ax.axvline(means[0], color="tab:red", linestyle="--", linewidth=0.8)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title(f"Fashion-MNIST, {result['attack']} by {result['fraction']:.0%} of nodes: one defence off at a time",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "ablation.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench ablation", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--unregistered", type=int, default=10, help="extra attackers when admission is off")
    args = parser.parse_args(argv)
    pin_threads(2)
    started = time.monotonic()
    result = measure(1 if args.quick else args.seeds, 2 if args.quick else args.rounds, args.unregistered, args.workers)
    result.update({"quick": args.quick, "workers": args.workers, "wall_time": time.monotonic() - started})
    path = write_result("ablation", result)
    plot(result)
    print(f"\n{'variant':<28}{'accuracy':>16}{'vs full':>14}")
    for name, cell in result["variants"].items():
        print(f"{name:<28}{pm(cell['accuracy']):>16}{pm(cell['delta_points'], 1.0):>14}")
    print(f"wrote {path} ({result['wall_time']:.0f} s)")
    return result


def report(result: dict) -> str:
    c = result["config"]
    lines = [
        "## Ablation of the defences (Secured-FL Table 3)",
        "",
        "Secured-FL's Table 3 removes one part of its system at a time. Here the full pipeline is the "
        f"product's: `{c['rule']}` with its dynamic threshold, admission of registered members only, DP "
        f"(clip {c['clip_norm']}, noise multiplier {c['noise_multiplier']}) and top-{c['topk_fraction']:.0%} "
        "sparsification with error feedback. Switched off one at a time: clustering (plain FedAvg), the dynamic "
        "threshold (no validation callback, fixed 3-MAD radius), admission (unregistered attackers submit: "
        f"{result['unregistered']} extra reversed copies of overheard updates join every aggregation), DP, "
        "sparsification.",
        "",
        f"Command: `python -m bench ablation{' --quick' if result['quick'] else ''}` ({result['wall_time']:.0f} s). "
        f"Fixed attack: `{result['attack']}` by {result['fraction']:.0%} of the {c['num_nodes']} registered nodes. "
        f"Fashion-MNIST, Dirichlet(0.5), 64-unit MLP, {c['rounds']} rounds of {c['local_epochs']} local epoch; "
        f"{result['seeds']} seeds, mean ± std; the difference to full fedchain is paired by seed.",
        "",
        "| variant | accuracy | vs full (points) | detection precision | detection recall |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in [n for n in variants(result["unregistered"]) if n in result["variants"]]:   # JSON sorts keys
        cell = result["variants"][name]
        prec = [p for p in cell["precision"] if p is not None]
        rec = [r for r in cell["recall"] if r is not None]
        lines.append(f"| {name} | {pm(cell['accuracy'])}% | {pm(cell['delta_points'], 1.0)} | "
                     f"{np.mean(prec):.2f} | {np.mean(rec):.2f} |" if prec and rec else
                     f"| {name} | {pm(cell['accuracy'])}% | {pm(cell['delta_points'], 1.0)} | - | - |")
    preset = c.get("privacy", {"preset": "off"})["preset"]
    eps = result["variants"]["full fedchain"]["max_epsilon"]
    lines += ["", f"Privacy: the full pipeline runs the genesis preset `{preset}`" + (
        f": no formal privacy; its update noise (multiplier {c['noise_multiplier']}) and clipping bound each "
        "update's influence, but no guarantee is claimed for them (`docs/privacy.md`)." if preset == "off" else
        f": record-level DP-SGD, at most epsilon {eps:.3g} spent per node after {c['rounds']} rounds.")]
    extra = result["variants"].get("admission off", {}).get("unregistered")
    if extra:
        lines += ["", f"With admission off, the rule accepted {extra['unregistered_accepted']} of the "
                  f"{extra['unregistered_submitted']} unregistered updates (all seeds)."]
    lines += ["", "![ablation](results/ablation.png)"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
