"""fedchain's aggregation rules against Flower's, on the same client updates (needs ``flwr``).

Flower's server-side aggregation functions (``flwr.server.strategy.aggregate``: ``aggregate``
(FedAvg), ``aggregate_krum`` (Krum; MultiKrum with ``to_keep``), ``aggregate_median``
(FedMedian), ``aggregate_trimmed_avg`` (FedTrimmedAvg), ``aggregate_bulyan``) against their
fedchain counterparts, plus fedchain's default rule, which Flower does not have.

Design: one separate federation per system, so each follows its own global model (the only way
to measure the accuracy a system reaches), with the same seed: same partition, same Byzantine
nodes, same initial model, same local-training randomness, hence identical first-round updates.
Within every round of every paired federation *both* functions run on that round's exact
honest + malicious updates, back to back (order alternating by round), so the milliseconds per
aggregation compare like with like, and the relative distance between the two aggregates shows
whether they compute the same thing. The federation then moves with its own system's aggregate.

Exact conversion: each flat update is split into the model's per-layer arrays (views, in
the model's parameter order and shape) and paired with its integer sample count, which is
Flower's ``list[tuple[NDArrays, int]]``. Updates (deltas) are passed rather than full weights:
every function here commutes with adding the same global model to all inputs, and deltas avoid
float32 rounding that is no part of either algorithm. Both sides get the same ``f`` (our effective
value: Krum-type rules need ``n >= 2f + 3``, Bulyan ``n >= 4f + 3``); FedTrimmedAvg cuts
``proportiontocut`` such that ``int(p * n) = f``, the count ours trims. Conversion is outside the
timed call. Flower does not say which updates it used, so its runs record no detection verdicts.
Flower has no bound on claimed sample counts, so fedchain runs here without its weight cap
(``weight_cap=None``): the comparison is of the rules themselves; ``bench attacks`` measures the cap.

Run: ``python -m bench flower [--quick]``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.common import RESULTS, percentiles, write_result
from bench.robustness import (
    FMNIST,
    mean_std,
    pin_threads,
    plt_module,
    run_all,
    simulate_job,
)

LABELS = {"fedavg": "FedAvg", "krum": "Krum", "multikrum": "MultiKrum", "median": "FedMedian",
          "trimmed_mean": "FedTrimmedAvg", "bulyan": "Bulyan"}
ATTACKS = (None, "sign_flip", "gaussian", "alie", "label_flip")
FRACTION = 0.2
LAST = 3            # accuracy reached = mean test accuracy of the last LAST rounds (less round-to-round noise)
# Known, checked reasons two implementations of one rule can disagree beyond rounding.
WHY_DIFFERENT = {"bulyan": ": the difference comes from the coordinate-wise step: when several values "
                           "are equally close to the median (frequent here: many first-layer coordinates are exactly 0 "
                           "in several updates), Flower's `argpartition` keeps an arbitrary subset of the tied values "
                           "and fedchain deterministically the lower ones; both are valid Bulyan outputs"}
SAME = 1e-5         # aggregates this close (relative) are the same computation up to float rounding
MISSING = ("bench flower needs Flower, an optional extra: pip install 'fedchain[bench]' (or pip install flwr); "
           "it is never needed to run fedchain itself")


def require_flower() -> Any:
    """The ``flwr.server.strategy.aggregate`` module, or SystemExit with the install command."""
    try:
        from flwr.server.strategy import aggregate as flower
    except ImportError as exc:
        raise SystemExit(f"{MISSING} ({exc})") from exc
    return flower


def effective_f(rule: str, f: int | None, n: int) -> int:
    """The number of Byzantine inputs our rule works with (requested ``f`` reduced as it would be)."""
    f = 0 if f is None else int(f)
    limit = {"krum": (n - 3) // 2, "multikrum": (n - 3) // 2, "bulyan": (n - 3) // 4, "trimmed_mean": (n - 1) // 2}
    return min(f, limit.get(rule, f))


def flower_call(rule: str, f: int, n: int) -> Callable[[list], list]:
    """Flower's function for ``rule`` with the parameters that match ours."""
    fl = require_flower()
    calls: dict[str, Callable[[list], list]] = {
        "fedavg": fl.aggregate,
        "krum": lambda res: fl.aggregate_krum(res, num_malicious=f, to_keep=0),
        "multikrum": lambda res: fl.aggregate_krum(res, num_malicious=f, to_keep=n - f),
        "median": fl.aggregate_median,
        "trimmed_mean": lambda res: fl.aggregate_trimmed_avg(res, proportiontocut=(f + 0.25) / n),
        "bulyan": lambda res: fl.aggregate_bulyan(list(res), num_malicious=f, aggregation_rule=fl.aggregate_krum,
                                                  to_keep=0),
    }
    return calls[rule]


def to_flower(updates: np.ndarray, weights: np.ndarray, shapes: list[tuple[int, ...]]) -> list[tuple[list, int]]:
    """Flower's ``[(per-layer arrays, num_examples), ...]`` for flat ``updates`` (views, no copy)."""
    counts = np.asarray(weights, dtype=np.float64)
    if not np.array_equal(counts, np.round(counts)):
        raise ValueError("Flower needs integer example counts; staleness-discounted weights have no equivalent")
    bounds = np.cumsum([0] + [int(np.prod(s)) for s in shapes])
    if bounds[-1] != updates.shape[1]:
        raise ValueError(f"layer shapes hold {bounds[-1]} values, updates have {updates.shape[1]}")
    return [([row[a:b].reshape(s) for a, b, s in zip(bounds[:-1], bounds[1:], shapes)], int(c))
            for row, c in zip(updates, counts)]


class Paired:
    """Aggregator computing fedchain's ``rule`` and Flower's counterpart on the same updates.

    The federation follows ``follow`` (``"fedchain"`` or ``"flower"``); both are timed.
    """

    def __init__(self, rule: str, follow: str) -> None:
        if rule not in LABELS or follow not in ("fedchain", "flower"):
            raise ValueError(f"no Flower counterpart for {rule!r} or unknown system {follow!r}")
        self.rule, self.follow = rule, follow
        self.shapes: list[tuple[int, ...]] = []
        self.ms: dict[str, list[float]] = {"fedchain": [], "flower": []}
        self.rel_diff: list[float] = []

    def bind(self, sim: Any) -> None:
        self.shapes = list(sim.model.shapes)

    def __call__(self, rule: str, updates: np.ndarray, weights: np.ndarray, *, f: int | None = None, seed: int = 0,
                 **_: Any) -> Any:
        from learning.aggregation import AggregationResult, aggregate

        if rule != self.rule:
            raise ValueError(f"paired aggregator for {self.rule!r} called for {rule!r}")
        n = updates.shape[0]
        fe = effective_f(rule, f, n)
        flower_fn, results = flower_call(rule, fe, n), to_flower(updates, weights, self.shapes)
        out: dict[str, Any] = {}

        def ours() -> None:
            t = time.perf_counter()
            out["fedchain"] = aggregate(rule, updates, weights, f=fe, seed=seed, weight_cap=None)
            self.ms["fedchain"].append(1000 * (time.perf_counter() - t))

        def theirs() -> None:
            t = time.perf_counter()
            layers = flower_fn(results)
            self.ms["flower"].append(1000 * (time.perf_counter() - t))
            out["flower"] = np.concatenate([np.ravel(a) for a in layers]).astype(np.float32)

        for step in ((ours, theirs) if len(self.rel_diff) % 2 == 0 else (theirs, ours)):
            step()
        mine = out["fedchain"].vector
        self.rel_diff.append(float(np.linalg.norm(mine - out["flower"]) / max(float(np.linalg.norm(mine)), 1e-30)))
        if self.follow == "fedchain":
            return out["fedchain"]
        return AggregationResult(out["flower"], np.ones(n, dtype=bool), np.zeros(n), [""] * n, {"system": "flower"})

    def report(self) -> dict[str, Any]:
        return {"ms": self.ms, "rel_diff": self.rel_diff}


def measure(rules: tuple[str, ...], attacks: tuple[str | None, ...], rounds: int, seed: int, workers: int,
            default_rule: str) -> dict:
    require_flower()
    base = {**FMNIST, "rounds": rounds, "seed": seed}
    jobs, keys = [], []
    for attack in attacks:
        # the Byzantine count the rules are told, as a chain's genesis would (rule_params f)
        atk = {"attack": attack, "byzantine_fraction": FRACTION if attack else 0.0,
               "rule_params": {"f": math.ceil(FRACTION * base["num_nodes"])} if attack else {}}
        for rule in rules:
            for system in ("fedchain", "flower"):
                jobs.append({"config": {**base, **atk, "rule": rule}, "aggregator": Paired(rule, system)})
                keys.append((attack or "none", rule, system))
        jobs.append({"config": {**base, **atk, "rule": default_rule}})
        keys.append((attack or "none", default_rule, "fedchain"))
    rows = run_all(simulate_job, jobs, workers)
    acc: dict[str, dict[str, dict[str, float]]] = {}
    final: dict[str, dict[str, dict[str, float]]] = {}
    timing: dict[str, dict[str, list[float]]] = {r: {"fedchain": [], "flower": []} for r in rules}
    agree: dict[str, list[float]] = {r: [] for r in rules}
    for (attack, rule, system), row in zip(keys, rows):
        acc.setdefault(attack, {}).setdefault(rule, {})[system] = float(np.mean(row["accuracy"][-LAST:]))
        final.setdefault(attack, {}).setdefault(rule, {})[system] = row["final_accuracy"]
        if "aggregator" in row:
            for s in ("fedchain", "flower"):
                timing[rule][s] += row["aggregator"]["ms"][s]
            agree[rule] += row["aggregator"]["rel_diff"]
    speed = {r: {s: percentiles(v) for s, v in t.items()} for r, t in timing.items()}
    for r, t in speed.items():
        t["ratio_flower_over_fedchain"] = t["flower"]["p50"] / t["fedchain"]["p50"]
    gaps = {r: mean_std(100 * (acc[a][r]["fedchain"] - acc[a][r]["flower"]) for a in acc) for r in rules}
    diff = {r: {"max": max(v), "median": float(np.median(v))} for r, v in agree.items()}
    # Rules whose aggregates agree to float rounding compute the same thing; their accuracy gaps
    # are what rounding alone does to a trajectory, the floor below which no gap means anything.
    same = [abs(100 * (acc[a][r]["fedchain"] - acc[a][r]["flower"])) for r in rules if diff[r]["max"] < SAME
            for a in acc]
    floor = max(same, default=0.0)
    return {"config": base, "fraction": FRACTION, "rules": list(rules), "default_rule": default_rule,
            "attacks": [a or "none" for a in attacks], "accuracy": acc, "final_accuracy": final,
            "last_rounds": LAST, "ms_per_aggregation": speed, "accuracy_gap_points": gaps, "aggregate_rel_diff": diff,
            "rounding_noise_points": floor, "flower_ahead": _flower_ahead(speed, acc, rules, floor),
            "sim_wall_time": sum(r["wall_time"] for r in rows)}


def _flower_ahead(speed: dict, acc: dict, rules: tuple[str, ...], floor: float) -> list[str]:
    """Plain statements of every place Flower beat fedchain: faster, or more accurate by more than
    the rounding noise ``floor`` (and at least half a point)."""
    ahead = [f"{LABELS[r]}: Flower's function is faster ({speed[r]['flower']['p50']:.2f} ms vs "
             f"{speed[r]['fedchain']['p50']:.2f} ms median)" for r in rules if speed[r]["ratio_flower_over_fedchain"] < 1]
    for attack, per_rule in acc.items():
        for r in rules:
            gap = 100 * (per_rule[r]["flower"] - per_rule[r]["fedchain"])
            if gap > max(0.5, floor):
                ahead.append(f"{LABELS[r]} under {attack}: Flower's federation {gap:.1f} points more accurate")
    return ahead


def plot(result: dict) -> None:
    plt = plt_module()
    rules = result["rules"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    x = np.arange(len(rules))
    for k, system in enumerate(("fedchain", "flower")):
        ax[0].bar(x + (k - 0.5) * 0.38, [result["ms_per_aggregation"][r][system]["p50"] for r in rules], 0.38,
                  label=system)
    ax[0].set(xticks=x, yscale="log", ylabel="ms per aggregation (median)", title="same updates, same process")
    ax[0].set_xticklabels([LABELS[r] for r in rules], fontsize=8)
    ax[0].legend(fontsize=8)
    attacks = result["attacks"]
    width = 0.8 / (2 * len(rules))
    for i, r in enumerate(rules):
        for k, system in enumerate(("fedchain", "flower")):
            pos = np.arange(len(attacks)) - 0.4 + width * (2 * i + k + 0.5)
            ax[1].bar(pos, [100 * result["accuracy"][a][r][system] for a in attacks], width,
                      color=plt.get_cmap("tab10")(i), alpha=1.0 if system == "fedchain" else 0.45,
                      label=f"{LABELS[r]} ({system})")
    ax[1].set(xticks=np.arange(len(attacks)), ylabel=f"test accuracy (%), mean of last {result['last_rounds']} rounds",
              ylim=(0, 122), yticks=range(0, 101, 20),
              title=f"accuracy reached, {result['fraction']:.0%} Byzantine (pale: Flower)")
    ax[1].set_xticklabels(attacks, fontsize=8)
    ax[1].legend(fontsize=5.5, ncol=4, loc="upper center")
    fig.tight_layout()
    fig.savefig(RESULTS / "flower.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench flower", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="FedAvg and Krum only, 2 attacks, 2 rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    require_flower()
    pin_threads(2)
    from learning.aggregation import DEFAULT_RULE

    started = time.monotonic()
    if args.quick:
        result = measure(("fedavg", "krum"), (None, "sign_flip"), 2, args.seed, args.workers, DEFAULT_RULE)
    else:
        result = measure(tuple(LABELS), ATTACKS, args.rounds, args.seed, args.workers, DEFAULT_RULE)
    import flwr

    result.update({"quick": args.quick, "workers": args.workers, "flwr_version": flwr.__version__,
                   "wall_time": time.monotonic() - started})
    path = write_result("flower", result)
    plot(result)
    _print(result)
    print(f"wrote {path} ({result['wall_time']:.0f} s)")
    return result


def _print(result: dict) -> None:
    print(f"\n{'rule':<14}{'fedchain ms':>12}{'Flower ms':>11}{'agg diff':>10}" +
          "".join(f"{a[:10]:>12}" for a in result["attacks"]))
    for r in result["rules"]:
        t = result["ms_per_aggregation"][r]
        print(f"{LABELS[r]:<14}{t['fedchain']['p50']:>12.2f}{t['flower']['p50']:>11.2f}"
              f"{result['aggregate_rel_diff'][r]['max']:>10.1e}" + "".join(
                  f"{100 * result['accuracy'][a][r]['fedchain']:>6.1f}/{100 * result['accuracy'][a][r]['flower']:<5.1f}"
                  for a in result["attacks"]))
    print("Flower ahead: " + ("; ".join(result["flower_ahead"]) or "nowhere"))


def report(result: dict) -> str:
    c, rules, attacks = result["config"], result["rules"], result["attacks"]
    d = result["default_rule"]
    lines = [
        "## fedchain against Flower's aggregation functions",
        "",
        f"Flower {result['flwr_version']} (`flwr.server.strategy.aggregate`) is what a user would pick instead. "
        "One federation per system (same seed: same partition, Byzantine nodes, initial model and training "
        "randomness), each following its own global model; inside every paired round both functions run on the "
        "same honest + malicious updates, back to back, so their times compare like with like. Flat updates "
        "are split exactly into Flower's per-layer arrays with integer example counts; both sides get the same f.",
        "",
        f"Command: `python -m bench flower{' --quick' if result['quick'] else ''}` ({result['wall_time']:.0f} s). "
        f"Fashion-MNIST, {c['num_nodes']} nodes, Dirichlet(0.5), 64-unit MLP, {c['rounds']} rounds, seed "
        f"{c['seed']}, {result['fraction']:.0%} Byzantine; one thread per process.",
        "",
        "| function | fedchain ms (p50 / p95) | Flower ms (p50 / p95) | Flower / fedchain | max relative "
        "difference of the aggregates |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rules:
        t = result["ms_per_aggregation"][r]
        lines.append(f"| {LABELS[r]} | {t['fedchain']['p50']:.2f} / {t['fedchain']['p95']:.2f} | "
                     f"{t['flower']['p50']:.2f} / {t['flower']['p95']:.2f} | {t['ratio_flower_over_fedchain']:.2f}x | "
                     f"{result['aggregate_rel_diff'][r]['max']:.1e} |")
    differ = [r for r in rules if result["aggregate_rel_diff"][r]["max"] >= SAME]
    lines += ["", "Aggregates agree to float rounding (relative difference below "
              f"{SAME:g}) for " + ", ".join(LABELS[r] for r in rules if r not in differ) + "." + "".join(
                  f" {LABELS[r]} differs in some rounds (median {result['aggregate_rel_diff'][r]['median']:.1e}, "
                  f"max {result['aggregate_rel_diff'][r]['max']:.1e}){WHY_DIFFERENT.get(r, '')}." for r in differ),
              "", f"Accuracy reached (%, mean test accuracy of the last {result['last_rounds']} rounds), "
              "fedchain / Flower, and fedchain's default rule (no Flower counterpart):",
              "", "| attack | " + " | ".join(LABELS[r] for r in rules) + f" | {d} |",
              "|---|" + "---:|" * (len(rules) + 1)]
    for a in attacks:
        cells = result["accuracy"][a]
        lines.append(f"| {a} | " + " | ".join(f"{100 * cells[r]['fedchain']:.1f} / {100 * cells[r]['flower']:.1f}"
                                             for r in rules) + f" | {100 * cells[d]['fedchain']:.1f} |")
    ahead = result["flower_ahead"]
    lines += ["", f"Rounding noise: where both functions compute the same aggregate up to float rounding, the "
              f"federations still drift apart by up to {result['rounding_noise_points']:.1f} points (one seed; "
              "tiny differences are amplified over the rounds), so accuracy gaps below that mean nothing.",
              "", "Where Flower is ahead: " + ("; ".join(ahead) + "." if ahead else "nowhere in this run."),
              "", "![fedchain vs Flower](results/flower.png)"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
