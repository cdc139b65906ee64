"""The weight-lie parts of the attacks benchmark: what a lie about sample counts is worth.

Sample counts are self-reported, so an attacker may claim 10^9 samples to outweigh everyone.
These parts measure, for each candidate ``weight_cap`` of :func:`learning.aggregation.aggregate`,
what such a lie takes from accuracy and what the cap costs honest federations (``weight_lie``:
the default rule on Fashion-MNIST over seeds; ``weight_lie_rules``: every averaging rule on
digits), and write their section of the report. They are run by ``python -m bench attacks``
(:mod:`bench.attacks`), apart from its grid and headline because they ask a different question.
"""

from __future__ import annotations

from typing import Any

from bench.robustness import DIGITS, FMNIST, mean_std, pm, run_all, simulate_job

CAPS = (None, 10.0, 3.0, 2.0, 1.5, 1.0)
CLAIM = 1e9
# In-distribution poisoning that passes the defences as honest: what a weight lie can amplify.
LIAR = {"attack": "ipm", "attack_params": {"jitter": 1.0}, "byzantine_fraction": 0.2}
AVERAGING_RULES = ("fedavg", "trust", "multikrum", "geomed", "centered_clip", "clustering")


def _lie_job(base: dict, rule: str, cap: float | None, seed: int, rounds: int, **change: Any) -> dict:
    return {"config": {**base, "rule": rule, "rounds": rounds, "seed": seed, "rule_params": {"weight_cap": cap},
                       **change}}


LIE_CONDITIONS = {"clean": {}, "clean_quantity": {"partition": "quantity"}, "truthful": LIAR,
                  "lie": {**LIAR, "claimed_samples": CLAIM}}


def weight_lie(rule: str, caps: tuple[float | None, ...], seeds: int, rounds: int, workers: int) -> dict:
    """Per cap: clean accuracy (two partitions) and accuracy under IPM+jitter with true and with
    10^9 claimed counts (Fashion-MNIST, ``rule``), paired by seed against no cap."""
    jobs = [_lie_job(FMNIST, rule, cap, s, rounds, **cond)
            for cap in caps for cond in LIE_CONDITIONS.values() for s in range(seeds)]
    rows = run_all(simulate_job, jobs, workers)
    acc = iter(row["final_accuracy"] for row in rows)
    runs = {str(cap): {name: [next(acc) for _ in range(seeds)] for name in LIE_CONDITIONS} for cap in caps}
    uncapped = runs[str(None)]
    table = {}
    for cap, cells in runs.items():
        table[cap] = {name: mean_std(v) for name, v in cells.items()}
        table[cap]["lie_gain_points"] = mean_std(100 * (t - a) for t, a in zip(cells["truthful"], cells["lie"]))
        for name in ("clean", "clean_quantity"):
            table[cap][f"{name}_cost_points"] = mean_std(100 * (u - c) for u, c in zip(uncapped[name], cells[name]))
    return {"dataset": "fashion_mnist", "rule": rule, "seeds": seeds, "claim": CLAIM, "attack": LIAR,
            "config": {**FMNIST, "rounds": rounds}, "caps": [str(c) for c in caps], "table": table,
            "wall_time": sum(r["wall_time"] for r in rows)}


def weight_lie_rules(rules: tuple[str, ...], caps: tuple[float | None, ...], rounds: int, workers: int) -> dict:
    """Every averaging rule on digits (seed 0) under the same attack, true counts and 10^9, per cap."""
    cells = [(r, cap, name) for r in rules for cap in caps for name in ("truthful", "lie")]
    rows = run_all(simulate_job, [_lie_job(DIGITS, r, cap, 0, rounds, **LIE_CONDITIONS[name]) for r, cap, name in cells],
                   workers)
    table: dict[str, Any] = {}
    for (r, cap, name), row in zip(cells, rows):
        table.setdefault(r, {}).setdefault(str(cap), {})[name] = row["final_accuracy"]
    return {"dataset": "digits", "config": {**DIGITS, "rounds": rounds, "seed": 0}, "caps": [str(c) for c in caps],
            "claim": CLAIM, "attack": LIAR, "table": table, "wall_time": sum(r["wall_time"] for r in rows)}


def lie_goal(w: dict) -> dict | None:
    """Whether a lie changes nothing at the library's default cap (within 2 std of the true-count
    runs over seeds, and at least 1 point)."""
    from learning.aggregation import DEFAULT_WEIGHT_CAP

    cell = w["table"].get(str(DEFAULT_WEIGHT_CAP))
    if cell is None:
        return None
    noise = 100 * max(0.01, 2 * cell["truthful"]["std"])
    gain = cell["lie_gain_points"]["mean"]
    return {"default_cap": DEFAULT_WEIGHT_CAP, "lie_gain_points": gain, "seed_noise_points": noise,
            "met": abs(gain) <= noise}


def ran(part: dict, result: dict) -> str:
    """How a part was measured: its command, time, workers and date (older files: the run's)."""
    command = part.get("command", f"python -m bench attacks{' --quick' if result.get('quick') else ''}")
    seconds = part.get("part_wall_time", result.get("wall_time", 0.0))
    return (f"`{command}` ({seconds:.0f} s, {part.get('workers', result.get('workers'))} worker processes, "
            f"measured {part.get('measured_at', result.get('measured_at', '?'))})")


def _cap_name(cap: str) -> str:
    return "none" if cap == "None" else f"{float(cap):g} x median"


def lie_lines(result: dict, with_runs: bool = True) -> str:
    """Markdown of the weight-lie parts (Fashion-MNIST cap sweep, every averaging rule on digits)."""
    lines = ["### A lie about sample counts", ""]
    w = result.get("weight_lie")
    if w is not None:
        c, t = w["config"], w["table"]
        lines += [
            f"Sample counts are self-reported. {w['attack']['byzantine_fraction']:.0%} of the nodes send "
            f"{w['attack']['attack']} updates (eps 0.5) with jitter {w['attack']['attack_params']['jitter']} (each "
            "attacker adds its own noise of the honest spread, so they are neither near copies nor outliers and "
            f"the defence accepts them), once claiming their true sample counts and once claiming {w['claim']:.0e} "
            f"samples each. `{w['rule']}` on full Fashion-MNIST ({c['num_nodes']} nodes, {c['partition']} "
            f"{c['dirichlet_alpha']}, {c['model']}, {c['rounds']} rounds), {w['seeds']} seeds, mean ± std; "
            "costs and gains are paired by seed. Clean runs measure what each cap costs honest federations: "
            "label skew (Dirichlet 0.5: the largest node holds up to ~2.7x the median count) and quantity skew "
            "(Dirichlet 0.5 over sizes: up to ~21x the median). Cap = `weight_cap` of `aggregate` (every "
            "positive weight clipped to cap x the median positive weight; none = the library before the cap)."
            + (f" Run: {ran(w, result)}." if with_runs else ""),
            "",
            "| weight cap | clean, label skew | cost (points) | clean, quantity skew | cost (points) | "
            "attackers, true counts | attackers claim 1e9 | accuracy the lie takes (points) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for cap in w["caps"]:
            r = t[cap]
            lines.append(f"| {_cap_name(cap)} | {pm(r['clean'])}% | {pm(r['clean_cost_points'], 1.0)} | "
                         f"{pm(r['clean_quantity'])}% | {pm(r['clean_quantity_cost_points'], 1.0)} | "
                         f"{pm(r['truthful'])}% | {pm(r['lie'])}% | {pm(r['lie_gain_points'], 1.0)} |")
        goal = lie_goal(w)
        if goal:
            lines += ["", f"Goal: with the default cap ({goal['default_cap']:g} x median) a lie changes nothing: "
                          f"it takes {goal['lie_gain_points']:.1f} points against a seed noise of "
                          f"{goal['seed_noise_points']:.1f} (2 std of the true-count runs, at least 1 point) - "
                          f"**{'met' if goal['met'] else 'not met'}**."]
    d = result.get("weight_lie_rules")
    if d is not None:
        lines += ["", f"Every averaging rule, fast configuration (digits, {d['config']['rounds']} rounds, seed 0, one "
                      "run per cell, so a few points are noise; same attack), accuracy (%) with true counts / "
                      "claiming 1e9" + (f". Run: {ran(d, result)}." if with_runs else ":"), "",
                  "| rule | " + " | ".join(f"cap {_cap_name(c)}" for c in d["caps"]) + " |",
                  "|---|" + "---:|" * len(d["caps"])]
        for rule in sorted(d["table"], key=lambda r: AVERAGING_RULES.index(r)):     # library order
            cells = d["table"][rule]
            lines.append(f"| {rule} | " + " | ".join(f"{100 * cells[c]['truthful']:.1f} / {100 * cells[c]['lie']:.1f}"
                                                     for c in d["caps"]) + " |")
        lines += ["", "Even at 1 x median a lie is not worth nothing: an attacker whose true count is below the "
                      "median can still raise its weight to the median's (true of any cap >= 1)."]
    return "\n".join(lines)
