"""Accuracy under attack (paper 1 Table 2; Secured-FL Fig 5), every aggregation rule.

Two parts, because the full rule x attack x fraction product on Fashion-MNIST does not fit the
time budget:

Every run is the product's pipeline (the genesis defaults: clip, noise, top-k with error feedback
within the norm bound every node admits) with the rule under test; attackers send through that
pipeline too, as a careful attacker must to be admitted.

* Grid (fast configuration): scikit-learn digits, 20 nodes, Dirichlet(0.5), 64-unit MLP, one
  seed. Every rule of ``RULE_NAMES`` x every attack of :mod:`learning.attacks` (model poisoning:
  sign_flip, gaussian, alie, ipm, minmax, scale; data injection: label_flip; backdoor) x 10-50%
  Byzantine nodes, plus each rule's clean run (its own baseline).
* Headline: the default rule on full Fashion-MNIST, 3 seeds, every attack at 20% and 40%, and
  the clean run of each seed. The accuracy drop is paired by seed (same partition and initial
  model), then mean ± std over seeds.
* Weight lie: sample counts are self-reported. 20% of the nodes send IPM updates with jitter
  (distinct, honest-looking, so the defence accepts them) and claim 10^9 samples each, against the
  same attackers claiming their true counts, for each candidate ``weight_cap`` of
  :func:`learning.aggregation.aggregate` (None = no cap): the default rule on Fashion-MNIST,
  3 seeds, plus the clean accuracy each cap costs under label skew (Dirichlet) and quantity skew
  (a few nodes hold most samples). Then every averaging rule on digits, without and with the
  default cap.

Backdoor runs also report the attack success rate (triggered test images of other classes
labelled as the target). Evasion is a test-time attack: FGSM at radius eps on the final model of
the clean run; its "Byzantine fraction" is read as the share of test queries the attacker sends.
Attack parameters are the library defaults.

Run: ``python -m bench attacks [--quick] [--parts grid,headline,weight_lie]``; parts not run are
kept from the previous ``results/attacks.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import RESULTS, write_result
from bench.robustness import (
    DIGITS,
    FMNIST,
    mean_std,
    pin_threads,
    plt_module,
    pm,
    run_all,
    simulate_job,
)
from bench.simruns import describe
from bench.weight_lie import AVERAGING_RULES, CAPS, lie_lines, ran, weight_lie, weight_lie_rules

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)
HEADLINE_FRACTIONS = (0.2, 0.4)
EPS = (0.01, 0.03, 0.1)
EVASION_EPS = 0.1                        # the evasion rows use this radius (pixels scaled to [0, 1])
DROP_GOALS = {0.2: 3.0, 0.4: 8.0}        # points of accuracy lost, default rule, Fashion-MNIST
BACKDOOR_GOAL = 0.05
PLOTTED = ("sign_flip", "gaussian", "alie", "minmax", "label_flip", "backdoor")
PARTS = ("grid", "headline", "weight_lie", "weight_lie_rules")


def _attacks() -> tuple[str, ...]:
    from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS

    return MODEL_ATTACKS + DATA_ATTACKS


def _job(base: dict, rule: str, attack: str | None, fraction: float, seed: int, rounds: int,
         shares: tuple[float, ...]) -> dict:
    config = {**base, "rule": rule, "rounds": rounds, "seed": seed, "attack": attack,
              "byzantine_fraction": fraction if attack else 0.0}
    return {"config": config, "eps": EPS if attack is None else (), "evasion_shares": shares if attack is None else ()}


def grid(rules: tuple[str, ...], attacks: tuple[str, ...], fractions: tuple[float, ...], rounds: int,
         workers: int) -> dict:
    """Every rule's clean run and its run under every attack and fraction (digits, seed 0)."""
    jobs = [_job(DIGITS, rule, None, 0.0, 0, rounds, fractions) for rule in rules]
    jobs += [_job(DIGITS, rule, a, f, 0, rounds, ()) for rule in rules for a in attacks for f in fractions]
    rows = run_all(simulate_job, jobs, workers)
    clean = {row["config"]["rule"]: row for row in rows[:len(rules)]}
    table: dict[str, Any] = {rule: {"clean": clean[rule]["final_accuracy"],
                                    "evasion": clean[rule]["evasion_mix"][str(EVASION_EPS)],
                                    "fgsm": clean[rule]["fgsm_accuracy"], "attacks": {}} for rule in rules}
    for row in rows[len(rules):]:
        c = row["config"]
        cell = {"accuracy": row["final_accuracy"], "drop_points": 100 * (clean[c["rule"]]["final_accuracy"] -
                                                                         row["final_accuracy"]),
                "precision": row["summary"]["detection_precision"], "recall": row["summary"]["detection_recall"]}
        if "backdoor_success" in row:
            cell["backdoor_success"] = row["backdoor_success"]
        table[c["rule"]]["attacks"].setdefault(c["attack"], {})[str(c["byzantine_fraction"])] = cell
    return {"dataset": "digits", "config": {**DIGITS, "rounds": rounds, "seed": 0}, "rules": list(rules),
            "attacks": list(attacks), "fractions": list(fractions), "table": table,
            "wall_time": sum(r["wall_time"] for r in rows)}


def headline(rule: str, attacks: tuple[str, ...], fractions: tuple[float, ...], seeds: int, rounds: int,
             workers: int) -> dict:
    """The default rule on Fashion-MNIST: paired accuracy drop per attack and fraction over seeds."""
    jobs = [_job(FMNIST, rule, None, 0.0, s, rounds, fractions) for s in range(seeds)]
    jobs += [_job(FMNIST, rule, a, f, s, rounds, ()) for a in attacks for f in fractions for s in range(seeds)]
    rows = run_all(simulate_job, jobs, workers)
    clean = rows[:seeds]
    clean_acc = [r["final_accuracy"] for r in clean]
    out: dict[str, Any] = {
        "dataset": "fashion_mnist", "rule": rule, "seeds": seeds, "config": {**FMNIST, "rule": rule, "rounds": rounds},
        "clean": {"accuracy": mean_std(clean_acc), "per_seed": clean_acc},
        "fgsm": {e: mean_std(r["fgsm_accuracy"][e] for r in clean) for e in clean[0]["fgsm_accuracy"]},
        "attacks": {}, "wall_time": sum(r["wall_time"] for r in rows)}
    for row in rows[seeds:]:
        c = row["config"]
        cell = out["attacks"].setdefault(c["attack"], {}).setdefault(str(c["byzantine_fraction"]), {"runs": []})
        cell["runs"].append({"seed": c["seed"], "accuracy": row["final_accuracy"],
                             "drop_points": 100 * (clean_acc[c["seed"]] - row["final_accuracy"]),
                             "backdoor_success": row.get("backdoor_success"),
                             "precision": row["summary"]["detection_precision"],
                             "recall": row["summary"]["detection_recall"]})
    for per_fraction in out["attacks"].values():
        for cell in per_fraction.values():
            cell["accuracy"] = mean_std(r["accuracy"] for r in cell["runs"])
            cell["drop_points"] = mean_std(r["drop_points"] for r in cell["runs"])
            if cell["runs"][0]["backdoor_success"] is not None:
                cell["backdoor_success"] = mean_std(r["backdoor_success"] for r in cell["runs"])
    evasion = {str(f): [100 * (r["final_accuracy"] - r["evasion_mix"][str(EVASION_EPS)][str(f)]) for r in clean]
               for f in fractions}
    out["evasion"] = {"eps": EVASION_EPS, "drop_points": {f: mean_std(v) for f, v in evasion.items()}}
    out["goals"] = _goals(out, fractions)
    return out


def _goals(h: dict, fractions: tuple[float, ...]) -> dict:
    """Worst-case drop over the training-time attacks per fraction, against the goals."""
    goals: dict[str, Any] = {}
    for f in fractions:
        key = str(f)
        drops = {a: cells[key]["drop_points"]["mean"] for a, cells in h["attacks"].items() if key in cells}
        if not drops:
            continue
        worst = max(drops, key=drops.get)
        limit = DROP_GOALS.get(f)
        goals[key] = {"worst_attack": worst, "worst_drop_points": drops[worst], "goal_points": limit,
                      "met": None if limit is None else drops[worst] <= limit,
                      "worst_with_evasion_points": max(drops[worst], h["evasion"]["drop_points"][key]["mean"])}
    bd = [c["backdoor_success"]["mean"] for c in h["attacks"].get("backdoor", {}).values()]
    if bd:
        goals["backdoor"] = {"worst_success": max(bd), "goal": BACKDOOR_GOAL, "met": max(bd) <= BACKDOOR_GOAL}
    return goals


def plot(result: dict) -> None:
    plt = plt_module()
    g = result["grid"]
    attacks = [a for a in PLOTTED if a in g["attacks"]]
    cols = min(3, len(attacks))
    rows = -(-len(attacks) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, attack in zip(axes.ravel(), attacks):
        metric = "backdoor_success" if attack == "backdoor" else "accuracy"
        for i, rule in enumerate(g["rules"]):
            cells = g["table"][rule]["attacks"][attack]
            ys = [cells[str(f)][metric] for f in g["fractions"]]
            bold = rule == result["default_rule"]
            ax.plot([100 * f for f in g["fractions"]], ys, marker="o", markersize=3, color=colors(i % 10),
                    linewidth=2.5 if bold else 1.0, label=rule)
        ax.set_title(f"{attack} ({'attack success' if attack == 'backdoor' else 'test accuracy'})", fontsize=9)
        ax.set_xlabel("Byzantine nodes (%)")
        ax.set_ylim(0, 1)
    for ax in axes.ravel()[len(attacks):]:
        ax.axis("off")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.suptitle("digits, 20 nodes, Dirichlet(0.5): each rule under attack", fontsize=10)
    fig.tight_layout()
    fig.savefig(RESULTS / "attacks.png", dpi=110)
    plt.close(fig)


def _kept_parts(previous: dict) -> dict:
    """The parts of an earlier results file, each stamped with how and when it was measured (files
    from before parts could run alone carry that once, for the whole run)."""
    kept = {}
    for part in PARTS:
        if part in previous:
            kept[part] = {"command": f"python -m bench attacks{' --quick' if previous.get('quick') else ''}",
                          "part_wall_time": previous.get("wall_time", 0.0), "workers": previous.get("workers"),
                          "measured_at": previous.get("measured_at", "?"), **previous[part]}
    return kept


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench attacks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 rules, 3 attacks, 2 fractions, few rounds, 1 seed")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes (one thread each)")
    parser.add_argument("--rounds", type=int, default=15, help="Fashion-MNIST rounds")
    parser.add_argument("--grid-rounds", type=int, default=10, help="digits rounds")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--caps", default=",".join(str(c).lower() for c in CAPS),
                        help="weight caps of the weight-lie part, comma-separated ('none' = no cap)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated subset of {','.join(PARTS)}; the others are kept from the last results")
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    caps = tuple(None if c == "none" else float(c) for c in args.caps.split(",") if c)
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts must name some of {', '.join(PARTS)}")
    pin_threads(2)
    from learning.aggregation import DEFAULT_RULE, DEFAULT_WEIGHT_CAP, RULE_NAMES

    started = time.monotonic()
    attacks = _attacks()
    quick = args.quick
    runners = {
        "grid": lambda: grid(("fedavg", "multikrum", DEFAULT_RULE), ("sign_flip", "alie", "backdoor"), (0.2, 0.4), 4,
                             args.workers) if quick else grid(RULE_NAMES, attacks, FRACTIONS, args.grid_rounds,
                                                             args.workers),
        "headline": lambda: headline(DEFAULT_RULE, ("sign_flip", "backdoor"), (0.2,), 1, 2, args.workers) if quick
        else headline(DEFAULT_RULE, attacks, HEADLINE_FRACTIONS, args.seeds, args.rounds, args.workers),
        "weight_lie": lambda: weight_lie(DEFAULT_RULE, (None, DEFAULT_WEIGHT_CAP), 1, 3, args.workers) if quick
        else weight_lie(DEFAULT_RULE, caps, args.seeds, args.rounds, args.workers),
        "weight_lie_rules": lambda: weight_lie_rules(("fedavg", DEFAULT_RULE), (None, DEFAULT_WEIGHT_CAP), 3,
                                                     args.workers) if quick
        else weight_lie_rules(AVERAGING_RULES, caps, args.grid_rounds, args.workers),
    }
    previous = RESULTS / "attacks.json"
    result = _kept_parts(json.loads(previous.read_text())) if set(parts) != set(PARTS) and previous.exists() else {}
    command = "python -m bench attacks" + "".join(f" {a}" for a in (argv or []))
    for part in parts:
        part_started = time.monotonic()
        result[part] = runners[part]()
        result[part].update(command=command, quick=quick, workers=args.workers,
                            measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            part_wall_time=time.monotonic() - part_started)
    result.update(default_rule=DEFAULT_RULE, wall_time=time.monotonic() - started)
    result.pop("benchmark", None), result.pop("measured_at", None), result.pop("machine", None)
    path = write_result("attacks", result)
    if "grid" in result:
        plot(result)
    _print(result)
    print(f"wrote {path} ({result['wall_time']:.0f} s)")
    return result


def _print(result: dict) -> None:
    if "weight_lie" in result or "weight_lie_rules" in result:
        print(lie_lines(result, with_runs=False))
    if "headline" not in result:
        return
    h = result["headline"]
    print(f"\n{h['rule']} on Fashion-MNIST, {h['seeds']} seed(s): clean {pm(h['clean']['accuracy'])}%")
    print(f"{'attack':<12}" + "".join(f"{'acc ' + f:>16}{'drop ' + f:>16}" for f in next(iter(h['attacks'].values()))))
    for attack, cells in h["attacks"].items():
        print(f"{attack:<12}" + "".join(f"{pm(c['accuracy']):>16}{pm(c['drop_points'], 1.0):>16}" for c in cells.values()))
    for key, goal in h["goals"].items():
        print(f"goal {key}: {goal}")


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else f"{100 * x:.1f}{unit}"


def report(result: dict) -> str:
    if "headline" not in result or "grid" not in result:
        return "## Accuracy under attack\n\n" + lie_lines(result)
    h, g = result["headline"], result["grid"]
    fr = list(next(iter(h["attacks"].values())))
    lines = [
        "## Accuracy under attack (paper 1 Table 2; Secured-FL Fig 5)",
        "",
        "Paper 1 reports the accuracy impact of model poisoning, data injection and evasion; Secured-FL "
        "Fig 5 the accuracy of its defence as attackers grow. Here: model poisoning = sign_flip, gaussian, "
        "alie, ipm, minmax, scale (crafted updates); data injection = label_flip (all labels reversed); "
        "backdoor = 3x3 trigger on 10% of each attacker's samples, target class 0; evasion = FGSM at "
        f"eps {h['evasion']['eps']} (pixels in [0, 1]) on the final model, its fraction read as the share "
        "of test queries the attacker sends. Baseline: the same rule's clean run (same seed), in the same "
        "process.",
        "",
        f"Headline run: {ran(h, result)}; grid run: {ran(g, result)}. Headline: "
        f"`{h['rule']}` on full Fashion-MNIST, {h['config']['num_nodes']} nodes, Dirichlet(0.5), 64-unit MLP, "
        f"{h['config']['rounds']} rounds of {h['config']['local_epochs']} local epoch (batch "
        f"{h['config']['batch_size']}, lr {h['config']['lr']}, momentum {h['config']['momentum']}), the product's "
        f"pipeline ({describe(h['config'])}); attackers send through the same pipeline (norm bound included); "
        f"{h['seeds']} seeds, mean ± std, drop paired by seed.",
        "",
        f"Clean accuracy: {pm(h['clean']['accuracy'])}%.",
        "",
        "| attack | " + " | ".join(f"accuracy at {float(f):.0%} | drop (points) at {float(f):.0%}" for f in fr) + " |",
        "|---|" + "---:|---:|" * len(fr),
    ]
    for attack in [a for a in _attacks() if a in h["attacks"]]:        # library order (JSON sorts keys)
        cells = h["attacks"][attack]
        lines.append(f"| {attack} | " + " | ".join(f"{pm(cells[f]['accuracy'])}% | {pm(cells[f]['drop_points'], 1.0)}"
                                                   for f in fr) + " |")
    lines.append(f"| evasion (FGSM eps {h['evasion']['eps']}) | " + " | ".join(
        f"- | {pm(h['evasion']['drop_points'][f], 1.0)}" for f in fr) + " |")
    if "backdoor" in h["attacks"]:
        lines += ["", "Backdoor attack success rate: " + ", ".join(
            f"{float(f):.0%} attackers {pm(c['backdoor_success'])}%" for f, c in h["attacks"]["backdoor"].items()) + "."]
    lines += ["", "FGSM accuracy of the clean model (all test queries perturbed): " + ", ".join(
        f"eps {e}: {pm(s)}%" for e, s in h["fgsm"].items()) + ".", "", "Goals:"]
    for key, goal in h["goals"].items():
        if key == "backdoor":
            lines.append(f"- backdoor success <= {goal['goal']:.0%}: worst {goal['worst_success']:.1%} - "
                         f"**{'met' if goal['met'] else 'not met'}**.")
        elif goal["goal_points"] is not None:
            lines.append(f"- <= {goal['goal_points']:.0f} points lost at {float(key):.0%}: worst training-time attack "
                         f"{goal['worst_attack']} loses {goal['worst_drop_points']:.1f} - "
                         f"**{'met' if goal['met'] else 'not met'}**; counting evasion the worst loss is "
                         f"{goal['worst_with_evasion_points']:.1f} points.")
    lines += ["", f"Grid (fast configuration: digits, {g['config']['rounds']} rounds, seed 0, one run per cell, "
              f"so differences of a few points are noise): accuracy drop in points against each rule's clean run, "
              f"worst over the training-time attacks except backdoor; backdoor success at 30%; evasion loss at "
              f"30% of queries.", "",
              "| rule | clean | " + " | ".join(f"worst drop {f:.0%}" for f in g["fractions"])
              + " | backdoor success 30% | evasion 30% |", "|---|" + "---:|" * (len(g["fractions"]) + 3)]
    for rule in g["rules"]:
        t = g["table"][rule]
        worst = [max(cells[str(f)]["drop_points"] for a, cells in t["attacks"].items() if a != "backdoor")
                 for f in g["fractions"]]
        bd = t["attacks"].get("backdoor", {}).get("0.3", {}).get("backdoor_success")
        ev = t["evasion"].get("0.3")
        lines.append(f"| {rule} | {_fmt(t['clean'], '%')} | " + " | ".join(f"{w:.1f}" for w in worst)
                     + f" | {_fmt(bd, '%')} | {_fmt(None if ev is None else t['clean'] - ev)} |")
    lines += ["", "Per-attack, per-fraction accuracies of every rule are in `results/attacks.json` (`grid.table`).",
              "", "![accuracy vs Byzantine fraction per rule](results/attacks.png)"]
    if "weight_lie" in result or "weight_lie_rules" in result:
        lines += ["", lie_lines(result)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
