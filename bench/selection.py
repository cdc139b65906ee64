"""Node selection at scale: all, random, trust and PSO (paper 1, eq. 8) in one attacked federation.

A chain's update pool hands a block at most ``max_updates`` updates; when more wait, the genesis
selection policy (:mod:`learning.selection`) picks which. The simulator applies the same policy
to the same features (:meth:`learning.sim.Simulator._selected`), so this benchmark measures the
policies a chain can be configured with, on the product's pipeline (genesis defaults: clip 1,
noise 0.01, top-10% float16 with error feedback within the norm bound, the default robust rule).

* Task: Fashion-MNIST (Debian's files through ``learning.data``), Dirichlet(0.5) label skew, the
  64-unit MLP, one local epoch of batch 64 at lr 0.1 with momentum 0.9 (the benchmarks' Fashion-
  MNIST task, :data:`bench.robustness.FMNIST`).
* Devices: asynchronous arrivals (the simulator's async mode). Each node's job takes lognormal
  (0, 0.5) simulated seconds times its share of the data; every ``buffer`` arrivals form a round's
  candidates (updates more than 4 versions old are dropped first, as a chain's admission does),
  and the policy picks ``max_updates`` of them (``all`` takes every candidate).
* Attack: 20% of the nodes send inner-product-manipulation updates with per-attacker noise of the
  honest spread (``ipm``, jitter 1): distinct and honest-looking, so the default rule misses some
  of them instead of removing all at once, and trust (the stake share rounds reward and penalize)
  has something to learn.

Every strategy of one seed sees the same arrivals (nodes restart as soon as they finish, whoever
is selected), so the simulated clock is the same for all of them: accuracy per simulated second
compares what the selected updates do to the model. Metrics per round: test accuracy, bytes of
the aggregated updates and of every uploaded candidate (exact wire encoding), attackers selected
and accepted; per run: honest nodes never selected, distinct nodes selected.

Run: ``python -m bench selection [--quick] [--seeds N] [--sizes 50,100] [--rounds R]`` (default: 50 nodes,
2 seeds, 30 rounds).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.common import RESULTS, finish, md_table
from bench.robustness import DIGITS, FMNIST
from bench.simruns import by_label, curve_stats, describe, mean_std, pm, pyplot, run_all, with_seeds
from learning.selection import POLICIES

ATTACK = {"attack": "ipm", "byzantine_fraction": 0.2, "attack_params": {"jitter": 1.0}}
SPEED_SIGMA = 0.5
CANDIDATES = 0.5      # a round's candidates: this share of the nodes' arrivals
SELECTED = 0.4        # max_updates: this share of the candidates
RUN_KEYS = ("sim_time", "accuracy", "nodes", "num_byzantine", "false_neg", "false_pos", "bytes_sent",
            "uploaded_bytes", "candidates", "byzantine", "skipped")


def _profile(quick: bool) -> dict[str, Any]:
    if quick:
        return {"task": DIGITS, "sizes": (16,), "rounds": 4, "seeds": 1, "target": 0.5}
    return {"task": FMNIST, "sizes": (50,), "rounds": 30, "seeds": 2, "target": 0.7}


def round_shape(nodes: int) -> tuple[int, int]:
    """(candidates per round, max_updates) for a federation of ``nodes``."""
    buffer = max(2, round(CANDIDATES * nodes))
    return buffer, max(1, round(SELECTED * buffer))


def config(task: dict[str, Any], nodes: int, strategy: str, rounds: int) -> dict[str, Any]:
    buffer, k = round_shape(nodes)
    return {**task, **ATTACK, "num_nodes": nodes, "rounds": rounds, "mode": "async", "speed_sigma": SPEED_SIGMA,
            "clients_per_round": buffer, "max_updates": k, "selection": strategy}


def summarise(runs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    """One strategy at one size over its seeds (each run a simulator record)."""
    def per_run(fn: Any) -> dict[str, Any]:
        return mean_std([fn(r) for r in runs])

    def span_mean(r: dict[str, Any]) -> float:
        """Accuracy averaged over the simulated span (area under accuracy vs time / span)."""
        t = np.array(r["sim_time"])
        acc = np.array([np.nan if a is None else a for a in r["accuracy"]])
        ok = ~np.isnan(acc)
        if ok.sum() < 2:
            return float(acc[ok].mean())
        return float(np.trapezoid(acc[ok], t[ok]) / (t[ok][-1] - t[ok][0]))

    def reach(r: dict[str, Any]) -> float | None:
        return next((t for t, a in zip(r["sim_time"], r["accuracy"]) if a is not None and a >= target), None)

    def never(r: dict[str, Any]) -> int:
        seen = {i for nodes in r["nodes"] for i in nodes}
        return len(set(range(r["config"]["num_nodes"])) - set(r["byzantine"]) - seen)

    return {
        "final_accuracy": per_run(lambda r: r["final_accuracy"]),
        "span_accuracy": per_run(span_mean),
        "time_to_target": per_run(reach),
        "reached": sum(reach(r) is not None for r in runs),
        "sim_seconds": per_run(lambda r: r["sim_time"][-1]),
        "selected_per_round": per_run(lambda r: float(np.mean([len(n) for n in r["nodes"]]))),
        "attackers_selected_per_round": per_run(lambda r: float(np.mean(r["num_byzantine"]))),
        "attackers_accepted_per_round": per_run(lambda r: float(np.mean(r["false_neg"]))),
        "honest_rejected_per_round": per_run(lambda r: float(np.mean(r["false_pos"]))),
        "honest_never_selected": per_run(never),
        "distinct_selected": per_run(lambda r: len({i for nodes in r["nodes"] for i in nodes})),
        "bytes_aggregated_per_round": per_run(lambda r: float(np.mean(r["bytes_sent"]))),
        "bytes_uploaded_per_round": per_run(lambda r: float(np.mean(r["uploaded_bytes"]))),
    }


def overlap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Mean Jaccard similarity of two runs' selected node sets, round by round (same arrivals)."""
    pairs = zip(a["nodes"], b["nodes"])
    return float(np.mean([len(set(x) & set(y)) / len(set(x) | set(y)) for x, y in pairs]))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench selection")
    ap.add_argument("--quick", action="store_true", help="digits, 16 nodes, 4 rounds, 1 seed")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="comma-separated node counts (default 50)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the sizes of the previous results not run now")
    args = ap.parse_args(argv)
    prof = _profile(args.quick)
    seeds = args.seeds or prof["seeds"]
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else prof["sizes"]
    rounds = args.rounds or prof["rounds"]
    started = time.perf_counter()
    specs = [spec for n in sizes for s in POLICIES
             for spec in with_seeds(f"{n}/{s}", config(prof["task"], n, s, rounds), seeds, nodes=n, strategy=s)]
    records = run_all(specs, workers=args.workers)
    groups = by_label(records)
    rows, runs, similarity = [], [], []
    for n in sizes:
        for s in POLICIES:
            rows.append({"nodes": n, "strategy": s, **summarise(groups[f"{n}/{s}"], prof["target"])})
        for seed in range(seeds):
            by_strategy = {s: groups[f"{n}/{s}"][seed] for s in POLICIES}
            similarity.append({"nodes": n, "seed": seed, **{f"{a}~{b}": overlap(by_strategy[a], by_strategy[b])
                                                            for i, a in enumerate(POLICIES) for b in POLICIES[i + 1:]}})
    for rec in records:
        runs.append({"size": rec["tags"]["nodes"], "strategy": rec["tags"]["strategy"], "seed": rec["config"]["seed"],
                     "speeds": rec["speeds"], **{k: rec[k] for k in RUN_KEYS}})
    measured = {"seeds": seeds, "rounds": rounds, "wall_time_s": time.perf_counter() - started,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    shapes = {str(n): {**dict(zip(("candidates", "max_updates"), round_shape(n))), **measured} for n in sizes}
    previous = RESULTS / "selection.json"
    if args.keep and previous.exists():
        prev = json.loads(previous.read_text())
        old = [n for n in prev["sizes"] if n not in sizes] if prev["quick"] == args.quick else []
        for n in old:   # results written before per-size records hold their run's facts at the top level
            shapes[str(n)] = {**{k: prev[k] for k in ("seeds", "rounds", "wall_time_s", "measured_at")},
                              **prev["round_shape"][str(n)]}
        rows += [row for row in prev["rows"] if row["nodes"] in old]
        similarity += [sim for sim in prev["similarity"] if sim["nodes"] in old]
        runs += [run for run in prev["runs"] if run["size"] in old]
        sizes = tuple(sorted({*sizes, *old}))
    result = {"quick": args.quick, "seeds": seeds, "sizes": list(sizes), "rounds": rounds,
              "strategies": list(POLICIES), "dataset": prof["task"]["dataset"], "target": prof["target"],
              "round_shape": shapes, "speed_sigma": SPEED_SIGMA, "attack": ATTACK,
              "pipeline": describe(config(prof["task"], sizes[0], "all", rounds)), "workers": args.workers,
              "rows": rows, "similarity": similarity, "runs": runs}
    return finish("selection", result, started, plot, table)


# ----------------------------------------------------------------------------- output


def table(r: dict[str, Any]) -> str:
    headers = ["nodes", "strategy", "final accuracy (%)", "accuracy over the span (%)",
               f"time to {100 * r['target']:.0f}% (sim s)", "attackers selected / round", "attackers accepted / round",
               "honest never selected", "distinct selected", "kB aggregated / round", "kB uploaded / round"]
    body = [[row["nodes"], row["strategy"], pm(row["final_accuracy"]), pm(row["span_accuracy"]),
             f"{pm(row['time_to_target'], 1, 2)} ({row['reached']}/{row['final_accuracy']['n']})",
             pm(row["attackers_selected_per_round"], 1, 2), pm(row["attackers_accepted_per_round"], 1, 2),
             pm(row["honest_never_selected"], 1, 1), pm(row["distinct_selected"], 1, 1),
             pm(row["bytes_aggregated_per_round"], 1e-3, 0), pm(row["bytes_uploaded_per_round"], 1e-3, 0)]
            for row in r["rows"]]
    return md_table(headers, body)


def plot(r: dict[str, Any]) -> None:
    plt = pyplot()
    sizes = r["sizes"]
    fig, axes = plt.subplots(len(sizes), 2, figsize=(11, 3.8 * len(sizes)), squeeze=False)
    for row_axes, n in zip(axes, sizes):
        acc_ax, bytes_ax = row_axes
        for s in r["strategies"]:
            runs = [run for run in r["runs"] if run["size"] == n and run["strategy"] == s]
            t, _ = curve_stats(runs, "sim_time")
            acc, sd = curve_stats(runs, "accuracy")
            acc_ax.plot(t, 100 * acc, label=s)
            acc_ax.fill_between(t, 100 * (acc - sd), 100 * (acc + sd), alpha=0.15)
        acc_ax.set(xlabel="simulated seconds", ylabel="test accuracy (%)",
                   title=f"{n} nodes: accuracy vs simulated time (mean of {size_facts(r, n)['seeds']} seeds)")
        acc_ax.legend()
        rows = [row for row in r["rows"] if row["nodes"] == n]
        x = np.arange(len(rows))
        bytes_ax.bar(x - 0.2, [row["bytes_aggregated_per_round"]["mean"] / 1e3 for row in rows], 0.4,
                     label="aggregated")
        bytes_ax.bar(x + 0.2, [row["bytes_uploaded_per_round"]["mean"] / 1e3 for row in rows], 0.4,
                     label="uploaded (every candidate)")
        bytes_ax.set_xticks(x, [row["strategy"] for row in rows])
        bytes_ax.set(ylabel="kB per round", title=f"{n} nodes: update bytes per round")
        bytes_ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "selection.png", dpi=110)
    plt.close(fig)


def size_facts(r: dict[str, Any], n: int) -> dict[str, Any]:
    """Candidates, max_updates, seeds, rounds, wall time and date of the run that measured size ``n``."""
    return {**{k: r.get(k) for k in ("seeds", "rounds", "wall_time_s", "measured_at")}, **r["round_shape"][str(n)]}


def _command(r: dict[str, Any], n: int) -> str:
    f = size_facts(r, n)
    return (f"`python -m bench selection{' --quick' if r['quick'] else ''} --sizes {n} --seeds {f['seeds']} "
            f"--rounds {f['rounds']}` ({f['wall_time_s']:.0f} s, {r['workers']} worker processes, "
            f"measured {f['measured_at']})")


def _best(rows: list[dict[str, Any]], key: str, low: bool = False) -> str:
    """The strategies with the best mean of ``key`` (every one that ties), and that mean."""
    vals = {row["strategy"]: row[key]["mean"] for row in rows if row[key]["mean"] is not None}
    best = min(vals.values()) if low else max(vals.values())
    names = " = ".join(f"`{s}`" for s, v in vals.items() if v == best)
    return f"{names} ({best:.2f})" if low else f"{names} ({100 * best:.1f}%)"


def _paired(r: dict[str, Any], n: int, a: str, b: str) -> dict[str, Any]:
    """Final accuracy of ``a`` minus ``b`` in points, paired by seed."""
    def final(s: str) -> dict[int, float]:
        return {run["seed"]: [x for x in run["accuracy"] if x is not None][-1]
                for run in r["runs"] if run["size"] == n and run["strategy"] == s}
    fa, fb = final(a), final(b)
    return mean_std([100 * (fa[s] - fb[s]) for s in sorted(fa)])


def composition(r: dict[str, Any], n: int) -> dict[str, dict[str, float]]:
    """Per strategy, over all its seeds: the share of aggregated updates sent by attackers, and
    the share sent by the fastest fifth of the nodes (shortest jobs), from the per-round senders."""
    out: dict[str, dict[str, float]] = {}
    for s in r["strategies"]:
        picked = byz = fast = 0
        for run in (x for x in r["runs"] if x["size"] == n and x["strategy"] == s):
            fastest = set(np.argsort(run["speeds"])[: max(1, len(run["speeds"]) // 5)].tolist())
            senders = [i for nodes in run["nodes"] for i in nodes]
            picked += len(senders)
            byz += sum(i in set(run["byzantine"]) for i in senders)
            fast += sum(i in fastest for i in senders)
        out[s] = {"attackers": byz / picked, "fastest_fifth": fast / picked}
    return out


def findings(r: dict[str, Any]) -> str:
    """The verdict, in words computed from the numbers."""
    lines = []
    for n in r["sizes"]:
        rows = [row for row in r["rows"] if row["nodes"] == n]
        by = {row["strategy"]: row for row in rows}
        shape = size_facts(r, n)
        pso_rand, pso_trust = _paired(r, n, "pso", "random"), _paired(r, n, "pso", "trust")
        pso_all = _paired(r, n, "pso", "all")
        sim = [s for s in r["similarity"] if s["nodes"] == n]
        jac = {k: float(np.mean([s[k] for s in sim])) for k in sim[0] if "~" in k}
        lines.append(
            f"- **{n} nodes** ({shape['candidates']} candidates a round, {shape['max_updates']} selected): "
            f"best final accuracy {_best(rows, 'final_accuracy')}, best accuracy over the span "
            f"{_best(rows, 'span_accuracy')}; fewest attackers selected per round "
            f"{_best(rows, 'attackers_selected_per_round', low=True)}; fewest attackers accepted per round "
            f"{_best(rows, 'attackers_accepted_per_round', low=True)}. PSO minus random: "
            f"{pm(pso_rand, 1, 1)} points; PSO minus trust: {pm(pso_trust, 1, 1)}; PSO minus all: "
            f"{pm(pso_all, 1, 1)}. Honest nodes never selected: trust {pm(by['trust']['honest_never_selected'], 1, 1)}, "
            f"PSO {pm(by['pso']['honest_never_selected'], 1, 1)}, random "
            f"{pm(by['random']['honest_never_selected'], 1, 1)}. Selected-set overlap (Jaccard, per round): "
            f"PSO~trust {jac['trust~pso']:.2f}, PSO~random {jac['random~pso']:.2f}, random~trust "
            f"{jac['random~trust']:.2f}. Share of aggregated updates sent by attackers / by the fastest fifth "
            f"of the nodes: " + ", ".join(f"{s} {100 * c['attackers']:.0f}% / {100 * c['fastest_fifth']:.0f}%"
                                          for s, c in composition(r, n).items()) + ".")
    span_best = {n: max((row for row in r["rows"] if row["nodes"] == n), key=lambda row: row["span_accuracy"]["mean"])
                 ["strategy"] for n in r["sizes"]}
    pso_best = [n for n in r["sizes"] if span_best[n] == "pso"]
    fast, rand = (" / ".join(f"{100 * composition(r, n)[s]['fastest_fifth']:.0f}%" for n in r["sizes"])
                  for s in ("pso", "random"))
    lines.append(f"- **Verdict**: accuracy per simulated second (accuracy over the span) is best with "
                 + ", ".join(f"`{s}` at {n} nodes" for n, s in span_best.items())
                 + "; selecting saves aggregated bytes only (uploads are unchanged). PSO "
                 + ("is the best strategy at " + ", ".join(map(str, pso_best)) + " nodes"
                    if pso_best else "is the best strategy at no size measured")
                 + f"; it hands {fast} of its slots to the fastest fifth of the nodes (random: {rand}), and "
                   "differences of a point or two between the selecting strategies are within the spread between seeds.")
    return "\n".join(lines)


def report(r: dict[str, Any]) -> str:
    sizes = ", ".join(str(n) for n in r["sizes"])
    return f"""## Node selection: all, random, trust and PSO (paper 1, eq. 8)

Paper 1 selects which nodes' updates a round aggregates by particle swarm optimisation over speed,
trust, data size and staleness (eq. 8). fedchain's pool applies the genesis `selection` policy when
more updates wait than a block admits (`max_updates`); the simulator applies the same policy to
the same features. Here: {r['dataset']}, {sizes} nodes, mean ± std over seeds;
the product's pipeline ({r['pipeline']}); asynchronous arrivals, each job lognormal(0, {r['speed_sigma']})
simulated seconds times the node's data share; each round's candidates are the next
{CANDIDATES:.0%} of the nodes' arrivals, of which `random`, `trust` and `pso` pick {SELECTED:.0%}
(`all` takes every one). 20% attackers send `ipm` updates with jitter 1 (each attacker adds noise
of the honest spread: honest-looking, so the rule misses some of them and trust has something to
learn). Every strategy of a seed sees the same arrivals, so the simulated clock is the same for all.

Commands (with `--keep` to add a size to earlier results): {'; '.join(_command(r, n) for n in r['sizes'])}.

{table(r)}

{findings(r)}

Reading the numbers: bytes *uploaded* per round are the same for every strategy (up to the few
bytes by which an encoded update's size follows its values), because on a
chain every node gossips its update before a proposer selects; selection only shrinks what a block
aggregates (and a delegate re-runs), not the network's upload. Nor can PSO's straggler term
(min speed over the set) shorten a round: the chain selects among updates that have already
arrived, and its speed feature (1 / (1 + seconds from the base model to the update's arrival))
then prefers the nodes that finish soonest, whoever they are; an attacker that skips training
arrives first of all. Trust starts equal (every stake 100) and ties go to the lower sender, so
`trust` keeps picking the same early nodes, which then gain stake by being accepted; PSO
normalises every feature to [0, 1] over the candidates, so a stake of 102 against 100 already
counts as the full trust term (weight 0.35), and the nodes it picked early and the rule accepted
stay picked. Attackers the rule accepts gain stake like honest nodes (+2 a round), and honest
nodes the rule rejects lose 5, so trust can favour accepted attackers.

![accuracy vs simulated time per strategy; bytes per round](results/selection.png)
"""


if __name__ == "__main__":
    main()
