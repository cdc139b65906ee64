"""Hierarchical aggregation (cluster heads, :mod:`learning.hierarchy`): accuracy per round and the
aggregation work per block, flat against hierarchical.

* Accuracy: the simulator (synchronous rounds, every node every round) on Fashion-MNIST with the
  benchmarks' task (:data:`bench.robustness.FMNIST`: Dirichlet(0.5), the 64-unit MLP, one local
  epoch) and the genesis default pipeline, for 20 nodes flat, 100 nodes flat, and 100 nodes in
  clusters of 10 and 20 (partials combined by the weighted geometric median, the default, and by
  the genesis rule itself). No attackers: the question is what the hierarchy costs an honest
  federation. The goal: 100 nodes in clusters lose at most 1 point against the flat round.
* Work per block: wall time of :func:`learning.round.run_round` (the proposer's round, the
  default rule with the public-evaluation callback a chain uses) on synthetic updates of the
  model's dimension, n = 100, 300, 1000, flat against hierarchical; and a verifier's share of a
  hierarchical round (its ``verify`` clusters plus the combination). One spawned process, one
  thread, best of ``repeats``; the ratios are what to read, not the seconds.

Run: ``python -m bench hierarchy [--quick] [--seeds N] [--rounds R] [--sizes 100,300,1000]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from bench.common import RESULTS, finish, md_table, one_thread_children
from bench.robustness import DIGITS, FMNIST
from bench.simruns import by_label, curve_stats, describe, mean_std, pm, pyplot, run_all, with_seeds

THRESHOLD = 50
ATTACK = {"attack": "ipm", "byzantine_fraction": 0.2, "attack_params": {"jitter": 1.0}}
"""Inner-product manipulation with per-attacker noise of the honest spread (as in ``bench selection``):
honest-looking attackers, randomly spread over the clusters, so some clusters have an attacker majority."""
VARIANTS: dict[str, tuple[int, dict[str, Any], dict[str, Any]]] = {
    "20 flat": (20, {}, {}),
    "100 flat": (100, {}, {}),
    "100 in clusters of 10": (100, {"threshold": THRESHOLD, "cluster_size": 10}, {}),
    "100 in clusters of 20": (100, {"threshold": THRESHOLD, "cluster_size": 20}, {}),
    "100 in clusters of 10, rule combines": (100, {"threshold": THRESHOLD, "cluster_size": 10, "combine": "rule"}, {}),
    "100 flat, 20% IPM": (100, {}, ATTACK),
    "100 in clusters of 10, 20% IPM": (100, {"threshold": THRESHOLD, "cluster_size": 10}, ATTACK),
    "100 in clusters of 20, 20% IPM": (100, {"threshold": THRESHOLD, "cluster_size": 20}, ATTACK),
}
GOAL_POINTS = 1.0


def baseline(name: str) -> str:
    """The flat federation a variant is compared with: 100 flat, under the same attack."""
    return "100 flat, 20% IPM" if name.endswith("IPM") else "100 flat"


def _profile(quick: bool) -> dict[str, Any]:
    if quick:
        return {"task": DIGITS, "rounds": 3, "seeds": 1, "sizes": (60,), "repeats": 1, "scale": 0.2}
    return {"task": FMNIST, "rounds": 20, "seeds": 2, "sizes": (100, 300, 1000), "repeats": 3, "scale": 1.0}


def config(task: dict[str, Any], nodes: int, hierarchy: dict[str, Any], attack: dict[str, Any],
           rounds: int) -> dict[str, Any]:
    return {**task, **attack, "num_nodes": nodes, "rounds": rounds, "hierarchy": hierarchy}


# ----------------------------------------------------------------------------- work per block


def _timing(task: dict[str, Any], sizes: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    """Worker: run_round flat and hierarchical at each size (one thread, best of ``repeats``)."""
    from learning.federation import split
    from learning.hierarchy import Hierarchy, assign, combine, global_cap, run_cluster, verifier_clusters
    from learning.models import build_model, get_flat, num_params, set_flat
    from learning.round import round_weights, run_round
    from learning.sim import SimConfig
    from learning.aggregation import aggregate
    from learning.train import evaluate

    settings = SimConfig.of(**{k: v for k, v in task.items() if k != "num_nodes"}).fl
    fed = split(settings, 1)
    net = build_model(settings.model, fed.pool.input_shape, fed.pool.num_classes, settings.seed)
    model, dim = get_flat(net), num_params(net)

    def score(candidate: np.ndarray) -> float:
        set_flat(net, candidate)
        return evaluate(net, fed.public_eval.x, fed.public_eval.y)[0]

    rng = np.random.default_rng(0)
    direction = rng.normal(size=dim).astype(np.float32)
    rows = []
    for n in sizes:
        updates = ((direction + rng.normal(size=(n, dim)).astype(np.float32)) / np.sqrt(dim)).astype(np.float32)
        senders = [f"node{i}" for i in range(n)]
        samples, zero, trust = [100.0] * n, [0.0] * n, [1.0 / n] * n
        row: dict[str, Any] = {"n": n, "dim": dim}
        for name, (_, hier, attack) in VARIANTS.items():
            if not hier or hier.get("combine") or attack:
                continue
            label = f"clusters of {hier['cluster_size']}"
            s = dataclasses.replace(settings, hierarchy=hier)
            best = best_verify = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = run_round(s, model, updates, samples, zero, trust, seed=7, evaluate=score, senders=senders)
                best = min(best, time.perf_counter() - t0)
                # a verifier: its clusters and the combination (what hierarchy_check re-runs)
                h = Hierarchy.parse(hier)
                t0 = time.perf_counter()
                weights = round_weights(samples, zero, s.staleness_a)
                capped, params = global_cap(weights, weights > 0, s.rule_params)
                labels = assign(7, senders, h.cluster_size)
                lr = np.float32(s.server_lr)
                for c in verifier_clusters(7, "verifier", int(labels.max()) + 1, h.verify):
                    members = np.flatnonzero(labels == c)
                    run_cluster(aggregate, s.rule, params, c, np.arange(members.size), updates[members],
                                capped[members], np.asarray(trust)[members], 7, lambda d: score(model + lr * d))
                used = [p for p in out.partials if p.kept]
                combine(aggregate, h.combine, s.rule, params, np.stack([p.vector for p in used]),
                        np.array([p.weight for p in used]), 7, lambda d: score(model + lr * d))
                best_verify = min(best_verify, time.perf_counter() - t0)
            row[label] = {"proposer_s": best, "verifier_s": best_verify, "clusters": len(out.partials)}
            print(f"  n={n} {label}: proposer {best:.2f} s, verifier {best_verify:.2f} s", flush=True)
        best = np.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            run_round(settings, model, updates, samples, zero, trust, seed=7, evaluate=score, senders=senders)
            best = min(best, time.perf_counter() - t0)
        row["flat_s"] = best
        print(f"  n={n} flat: {best:.2f} s", flush=True)
        rows.append(row)
    return rows


def timing(task: dict[str, Any], sizes: tuple[int, ...], repeats: int) -> list[dict[str, Any]]:
    with one_thread_children(), ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_timing, task, sizes, repeats).result()


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench hierarchy")
    ap.add_argument("--quick", action="store_true", help="digits, 3 rounds, 1 seed, n = 60 only")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="update counts of the timing (default 100,300,1000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timing-only", action="store_true",
                    help="measure the work per block again, keep the accuracy runs of the previous results")
    args = ap.parse_args(argv)
    prof = _profile(args.quick)
    seeds, rounds = args.seeds or prof["seeds"], args.rounds or prof["rounds"]
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else prof["sizes"]
    started = time.perf_counter()
    variants = {name: (max(4, round(nodes * prof["scale"])) if args.quick else nodes, hier, attack)
                for name, (nodes, hier, attack) in VARIANTS.items()}
    if args.quick:
        variants = {name: (nodes, {**hier, "threshold": 8, "cluster_size": 5} if hier else {}, attack)
                    for name, (nodes, hier, attack) in variants.items()}
    rows, runs = [], []
    if args.timing_only:
        previous = json.loads((RESULTS / "hierarchy.json").read_text())
        rows, runs, seeds, rounds = previous["rows"], previous["runs"], previous["seeds"], previous["rounds"]
        variants = {k: tuple(v) for k, v in previous["variants"].items()}
        accuracy_run = previous["accuracy_run"]
    else:
        specs = [spec for name, (nodes, hier, attack) in variants.items()
                 for spec in with_seeds(name, config(prof["task"], nodes, hier, attack, rounds), seeds, variant=name)]
        groups = by_label(run_all(specs, workers=args.workers))
        finals = {name: {r["config"]["seed"]: r["final_accuracy"] for r in recs} for name, recs in groups.items()}
        means = {name: {r["config"]["seed"]: float(np.mean([a for a in r["accuracy"] if a is not None]))
                        for r in recs} for name, recs in groups.items()}
        for name, recs in groups.items():
            rows.append({"variant": name, "nodes": variants[name][0], "hierarchy": variants[name][1],
                         "final_accuracy": mean_std([r["final_accuracy"] for r in recs]),
                         "mean_accuracy": mean_std(list(means[name].values())),
                         "baseline": baseline(name),
                         "vs_flat_final": mean_std([100 * (finals[name][s] - finals[baseline(name)][s])
                                                    for s in finals[name]]),
                         "vs_flat_mean": mean_std([100 * (means[name][s] - means[baseline(name)][s])
                                                   for s in means[name]]),
                         "accepted_share": mean_std([float(np.sum(r["num_accepted"]) / np.sum(r["num_updates"]))
                                                     for r in recs]),
                         "attackers_accepted_per_round": mean_std([float(np.mean(r["false_neg"])) for r in recs]),
                         "honest_rejected_per_round": mean_std([float(np.mean(r["false_pos"])) for r in recs]),
                         "wall_per_round_s": mean_std([float(np.mean(r["wall_time"])) for r in recs])})
            runs += [{"variant": name, "seed": r["config"]["seed"], "accuracy": r["accuracy"],
                      "num_accepted": r["num_accepted"], "skipped": r["skipped"]} for r in recs]
        accuracy_run = {"wall_time_s": time.perf_counter() - started,
                        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    work = timing(prof["task"], sizes, prof["repeats"])
    work_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = {"quick": args.quick, "seeds": seeds, "rounds": rounds, "dataset": prof["task"]["dataset"],
              "pipeline": describe(config(prof["task"], 20, {}, {}, rounds)), "attack": ATTACK, "variants": {k: list(v) for k, v in variants.items()},
              "rows": rows, "runs": runs, "work": work, "work_measured_at": work_at, "accuracy_run": accuracy_run, "goal_points": GOAL_POINTS, "workers": args.workers}
    return finish("hierarchy", result, started, plot, table)


# ----------------------------------------------------------------------------- output


def _labels(r: dict[str, Any]) -> list[str]:
    return [k for k in r["work"][0] if k.startswith("clusters of")] if r["work"] else []


def table(r: dict[str, Any]) -> str:
    acc = md_table(["federation", "nodes", "final accuracy (%)", "accuracy averaged over rounds (%)",
                    "final minus flat (points)", "average minus flat (points)", "updates accepted (%)",
                    "attackers accepted / round", "honest rejected / round"],
                   [[row["variant"], row["nodes"], pm(row["final_accuracy"]), pm(row["mean_accuracy"]),
                     pm(row["vs_flat_final"], 1), pm(row["vs_flat_mean"], 1), pm(row["accepted_share"]),
                     pm(row["attackers_accepted_per_round"], 1, 1), pm(row["honest_rejected_per_round"], 1, 1)]
                    for row in r["rows"]]) if r["rows"] else "(accuracy not run)"
    headers = ["updates", "flat round (s)"]
    for label in _labels(r):
        headers += [f"{label}: proposer (s)", "flat / proposer", "verifier (s)", "flat / verifier"]
    body = []
    for w in r["work"]:
        line: list[Any] = [w["n"], w["flat_s"]]
        for label in _labels(r):
            h = w[label]
            line += [h["proposer_s"], w["flat_s"] / h["proposer_s"], h["verifier_s"], w["flat_s"] / h["verifier_s"]]
        body.append(line)
    return acc + "\n\n" + md_table(headers, body)


def plot(r: dict[str, Any]) -> None:
    plt = pyplot()
    fig, (acc_ax, work_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name in r["variants"]:
        recs = [run for run in r["runs"] if run["variant"] == name]
        if not recs:
            continue
        mean, sd = curve_stats(recs, "accuracy")
        x = np.arange(1, len(mean) + 1)
        acc_ax.plot(x, 100 * mean, label=name)
        acc_ax.fill_between(x, 100 * (mean - sd), 100 * (mean + sd), alpha=0.12)
    acc_ax.set(xlabel="round", ylabel="test accuracy (%)", title=f"{r['dataset']}: accuracy per round")
    acc_ax.legend(fontsize=8)
    n = [w["n"] for w in r["work"]]
    work_ax.plot(n, [w["flat_s"] for w in r["work"]], "o-", label="flat")
    for label in _labels(r):
        work_ax.plot(n, [w[label]["proposer_s"] for w in r["work"]], "s-", label=f"{label}: proposer")
        work_ax.plot(n, [w[label]["verifier_s"] for w in r["work"]], "^--", label=f"{label}: verifier")
    work_ax.set(xscale="log", yscale="log", xlabel="updates per block", ylabel="seconds (one thread)",
                title="aggregation work per block")
    work_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "hierarchy.png", dpi=110)
    plt.close(fig)


def findings(r: dict[str, Any]) -> str:
    lines = []
    by = {row["variant"]: row for row in r["rows"]}
    for name, row in by.items():
        if "clusters" not in name:
            continue
        cost = -row["vs_flat_final"]["mean"]
        vs20 = 100 * (row["final_accuracy"]["mean"] - by["20 flat"]["final_accuracy"]["mean"])
        lines.append(f"- **{name}**: final accuracy {pm(row['final_accuracy'])}%, {pm(row['vs_flat_final'], 1)} "
                     f"points against {row['baseline']} (averaged over rounds {pm(row['vs_flat_mean'], 1)}), "
                     f"{vs20:+.2f} against 20 flat: the goal (hierarchy costs <= {r['goal_points']:g} point) is "
                     f"{'met' if cost <= r['goal_points'] else 'NOT met'}.")
    if "20 flat" in by and "100 flat" in by:
        gap = 100 * (by["100 flat"]["final_accuracy"]["mean"] - by["20 flat"]["final_accuracy"]["mean"])
        lines.append(f"- **100 nodes against 20**: 100 flat ends {gap:+.2f} points from 20 flat, with or without "
                     "clusters: a federation of 100 smaller, more skewed shards does "
                     f"{'not ' if gap < -r['goal_points'] else ''}reach the 20-node accuracy per round in "
                     f"{r['rounds']} rounds, and the hierarchy neither causes nor closes that gap.")
    if "100 flat, 20% IPM" in by:
        byz = round(ATTACK["byzantine_fraction"] * 100)
        accepted = {name: row["attackers_accepted_per_round"]["mean"] for name, row in by.items() if name.endswith("IPM")}
        flat = accepted.pop("100 flat, 20% IPM")
        if max([flat, *accepted.values()]) <= byz / 10:
            verdict = ("flat and in clusters alike the rule drops nearly all of them (the drift and direction tests "
                       "need ten updates, which every cluster of 10 or 20 has), so the hierarchy keeps what the "
                       "flat rule catches")
        elif accepted and 2 * flat < min(accepted.values()):
            verdict = ("flat, the rule drops most of them; in clusters most pass, so the hierarchy loses what the "
                       "flat rule catches")
        else:
            verdict = ("it misses them flat and in clusters alike, so this compares the two under an attack the rule "
                       "does not stop, not the rule's detection")
        lines.append("- **Attackers**: of " + str(byz) + " jittered-IPM attackers per round the default rule accepts "
                     + ", ".join(f"{pm(row['attackers_accepted_per_round'], 1, 1)} ({name})"
                                 for name, row in by.items() if name.endswith("IPM"))
                     + ": " + verdict + ".")
    for w in r["work"]:
        parts = [f"{label}: the proposer's round at {w['flat_s'] / w[label]['proposer_s']:.2f}x the speed of flat, "
                 f"a verifier's share at {w['flat_s'] / w[label]['verifier_s']:.1f}x" for label in _labels(r)]
        lines.append(f"- **n = {w['n']}** (flat {w['flat_s']:.2f} s): " + "; ".join(parts) + ".")
    return "\n".join(lines)


def report(r: dict[str, Any]) -> str:
    cmd = f"python -m bench hierarchy{' --quick' if r['quick'] else ''} --seeds {r['seeds']} --rounds {r['rounds']}"
    return f"""## Hierarchical aggregation: cluster heads

Above a genesis threshold of updates, a round places its updates in clusters drawn from the
height (`learning/hierarchy.py`), runs the genesis rule in each cluster and combines the
partial aggregates robustly; verifiers re-run the clusters they are assigned plus the combination
(`node/fl/hierarchy_check.py`). Accuracy: the simulator on {r['dataset']}, {r['rounds']} synchronous
rounds, mean ± std over {r['seeds']} seeds, the genesis pipeline ({r['pipeline']}); without attackers,
and with 20% of the nodes sending `ipm` updates with jitter 1 (spread over the clusters at random, so
some clusters have an attacker majority). "Flat" is 100 flat under the same attack.
Work: `run_round` on synthetic updates of the model's size, one thread, with the public-evaluation
callback a chain uses; "verifier" is a delegate's share of a hierarchical block (its
`verify` = 2 clusters and the combination), measured {r['work_measured_at']} (`--timing-only` measures it
again and keeps the accuracy runs). Command: `{cmd}` (accuracy runs {r['accuracy_run']['wall_time_s']:.0f} s with
{r['workers']} worker processes, finished {r['accuracy_run']['measured_at']}).

{table(r)}

{findings(r)}

![accuracy per round; aggregation work per block](results/hierarchy.png)
"""


if __name__ == "__main__":
    main()
