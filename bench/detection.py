"""Detection of malicious updates (Secured-FL Figs 3, 7, 8): precision, recall, confusion, ROC, PR.

Design: every detector judges the *same* updates. Each federation (Fashion-MNIST, 20 nodes,
Dirichlet(0.5)) follows the default rule, and at every round a panel runs every rule below on
that round's exact update matrix (same weights, same f, same validation callback), recording its
per-update suspicion scores and accept flags; the simulator's ground truth says which updates
came from Byzantine nodes. Rules that reject (clustering, krum, multikrum, bulyan) get
precision, recall and a confusion matrix of their verdicts; every rule's scores get ROC and PR
curves (PR AUC = average precision). Rules that accept everything (median, trimmed_mean, geomed,
centered_clip; fedavg as the plain baseline) are ranked by their score alone: an update's
distance to the aggregate.

Curves pool every update of every round and attack at one Byzantine fraction. Scores are used as
each rule emits them; the clustering score is scale-free (distance over the round's radius), raw
distances are not, so the table also gives the mean of per-round AUCs, which no scale drift can
affect.

Run: ``python -m bench detection [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.common import RESULTS, write_result
from bench.robustness import (
    FMNIST,
    pin_threads,
    plt_module,
    run_all,
    simulate_job,
    thin_curve,
)

REJECTING = ("clustering", "krum", "multikrum", "bulyan")
SCORING = ("median", "trimmed_mean", "geomed", "centered_clip", "fedavg")
FRACTIONS = (0.2, 0.3, 0.4)
AUC_GOAL = 0.95
_HUGE = 1e300        # stands in for +inf (an update excluded outright) so ranking stays well defined


class Panel:
    """Aggregator that runs several rules on the same inputs and records their verdicts.

    The federation moves with the configured rule's result; the others only judge. Picklable, so
    it travels to a worker process and its records come back with the run. Only a round's call
    (the one with a validation callback) is judged and recorded: the ``adaptive`` attacker queries
    the same aggregator without one, several times a round, and its queries once took the records'
    places in the rounds they were paired with.
    """

    def __init__(self, rules: tuple[str, ...]) -> None:
        self.rules = rules
        self.records: list[dict[str, dict[str, list]]] = []

    def __call__(self, rule: str, updates: np.ndarray, weights: np.ndarray, *, trust: np.ndarray | None = None,
                 f: int | None = None, seed: int = 0, evaluate: Any = None, **params: Any) -> Any:
        from learning.aggregation import aggregate

        if evaluate is None:                          # an oracle's query, not a round
            return aggregate(rule, updates, weights, trust=trust, f=f, seed=seed, **params)
        record, lead = {}, None
        for name in dict.fromkeys((rule, *self.rules)):
            res = aggregate(name, updates, weights, trust=trust, f=f, seed=seed, evaluate=evaluate,
                            **(params if name == rule else {}))
            scores = np.nan_to_num(np.asarray(res.scores, dtype=np.float64), posinf=_HUGE)
            record[name] = {"scores": scores.tolist(), "accepted": np.asarray(res.accepted, bool).tolist()}
            if name == rule:
                lead = res
        self.records.append(record)
        return lead

    def report(self) -> list[dict[str, dict[str, list]]]:
        return self.records


def _stats(truth: list[bool], scores: list[float], accepted: list[bool]) -> Any:
    from learning.detection import detection_stats

    return detection_stats(np.asarray(truth), np.asarray(scores), np.asarray(accepted))


def _summarise(runs: list[dict], rule: str, rejects: bool) -> dict:
    """Pooled detection statistics of ``rule`` over ``runs``, and the mean per-round ROC AUC."""
    truth, scores, accepted, per_round = [], [], [], []
    for run in runs:
        for rnd, rec in zip(run["rounds"], run["aggregator"]):
            truth += rnd["byzantine"]
            scores += rec[rule]["scores"]
            accepted += rec[rule]["accepted"]
            auc = _stats(rnd["byzantine"], rec[rule]["scores"], rec[rule]["accepted"]).roc_auc
            if not np.isnan(auc):
                per_round.append(auc)
    s = _stats(truth, scores, accepted).to_dict()
    roc_x, roc_y = thin_curve(s["roc_curve"]["fpr"], s["roc_curve"]["tpr"])
    pr_x, pr_y = thin_curve(s["pr_curve"]["recall"], s["pr_curve"]["precision"])
    out = {"roc_auc": s["roc_auc"], "pr_auc": s["pr_auc"], "round_auc_mean": float(np.mean(per_round)),
           "updates": len(truth), "malicious": int(sum(truth)),
           "roc": {"fpr": roc_x, "tpr": roc_y}, "pr": {"recall": pr_x, "precision": pr_y}}
    if rejects:
        out.update({k: s[k] for k in ("precision", "recall", "f1", "accuracy", "confusion")})
    return out


def measure(attacks: tuple[str, ...], fractions: tuple[float, ...], seeds: int, rounds: int, workers: int,
            lead: str) -> dict:
    panel = REJECTING + SCORING
    jobs = [{"config": {**FMNIST, "rule": lead, "rounds": rounds, "seed": s, "attack": a, "byzantine_fraction": f},
             "aggregator": Panel(panel), "keep_rounds": True}
            for f in fractions for a in attacks for s in range(seeds)]
    runs = run_all(simulate_job, jobs, workers)
    by_fraction = {str(f): [r for r in runs if r["config"]["byzantine_fraction"] == f] for f in fractions}
    rules = {rule: {"rejects": rule in REJECTING,
                    "by_fraction": {f: _summarise(rs, rule, rule in REJECTING) for f, rs in by_fraction.items()},
                    "by_attack": {a: _summarise([r for r in runs if r["config"]["attack"] == a], rule, False)["roc_auc"]
                                  for a in attacks}}
             for rule in panel}
    goal = {f: {"roc_auc": rules[lead]["by_fraction"][f]["roc_auc"],
                "met": rules[lead]["by_fraction"][f]["roc_auc"] >= AUC_GOAL} for f in by_fraction}
    return {"lead_rule": lead, "attacks": list(attacks), "fractions": list(fractions), "seeds": seeds,
            "config": {**FMNIST, "rounds": rounds}, "rules": rules, "goal": {"auc": AUC_GOAL, "by_fraction": goal},
            "accuracy": {f"{r['config']['attack']}@{r['config']['byzantine_fraction']}/{r['config']['seed']}":
                         r["final_accuracy"] for r in runs},
            "sim_wall_time": sum(r["wall_time"] for r in runs)}


def plot(result: dict) -> None:
    plt = plt_module()
    fractions = list(result["rules"][result["lead_rule"]]["by_fraction"])
    fig, axes = plt.subplots(2, len(fractions), figsize=(4.2 * len(fractions), 7.4), squeeze=False)
    colors = plt.get_cmap("tab10")
    for col, f in enumerate(fractions):
        for i, (rule, r) in enumerate(result["rules"].items()):
            s = r["by_fraction"][f]
            style = {"color": colors(i % 10), "linewidth": 2.5 if rule == result["lead_rule"] else 1.0,
                     "linestyle": "-" if r["rejects"] else "--"}
            axes[0][col].plot(s["roc"]["fpr"], s["roc"]["tpr"], label=f"{rule} {s['roc_auc']:.3f}", **style)
            axes[1][col].plot(s["pr"]["recall"], s["pr"]["precision"], label=f"{rule} {s['pr_auc']:.3f}", **style)
        axes[0][col].plot([0, 1], [0, 1], color="gray", linewidth=0.5)
        axes[0][col].set(title=f"ROC, {float(f):.0%} Byzantine", xlabel="false positive rate", ylabel="true positive rate")
        axes[1][col].set(title=f"PR, {float(f):.0%} Byzantine", xlabel="recall", ylabel="precision", ylim=(0, 1.02))
        for row in range(2):
            axes[row][col].legend(fontsize=6, loc="lower right" if row == 0 else "lower left", title="AUC",
                                  title_fontsize=6)
    fig.suptitle("Fashion-MNIST (solid: rules that reject, dashed: score only)", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "detection.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench detection", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 attacks, 20%% only, 3 rounds")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)
    pin_threads(2)
    from learning.aggregation import DEFAULT_RULE
    from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS

    started = time.monotonic()
    if args.quick:
        result = measure(("sign_flip", "alie"), (0.2,), 1, 3, args.workers, DEFAULT_RULE)
    else:
        result = measure(MODEL_ATTACKS + DATA_ATTACKS, FRACTIONS, args.seeds, args.rounds, args.workers, DEFAULT_RULE)
    result.update({"quick": args.quick, "workers": args.workers, "wall_time": time.monotonic() - started})
    path = write_result("detection", result)
    plot(result)
    _print(result)
    print(f"wrote {path} ({result['wall_time']:.0f} s)")
    return result


def _print(result: dict) -> None:
    fractions = list(result["goal"]["by_fraction"])
    print(f"\n{'rule':<14}" + "".join(f"{'AUC ' + f:>10}{'P ' + f:>8}{'R ' + f:>8}" for f in fractions))
    for rule, r in result["rules"].items():
        cells = [r["by_fraction"][f] for f in fractions]
        print(f"{rule:<14}" + "".join(f"{c['roc_auc']:>10.3f}{c.get('precision', float('nan')):>8.2f}"
                                      f"{c.get('recall', float('nan')):>8.2f}" for c in cells))
    print(f"goal AUC >= {AUC_GOAL} for {result['lead_rule']}: {result['goal']['by_fraction']}")


def report(result: dict) -> str:
    fractions = list(result["goal"]["by_fraction"])
    lead = result["lead_rule"]
    lines = [
        "## Detecting malicious updates (Secured-FL Figs 3, 7, 8)",
        "",
        "Secured-FL plots the precision/recall and ROC of its outlier removal. Here every detector judges "
        "the same updates: federations led by the default rule, and at every round each rule below runs on "
        "that round's exact update matrix; the simulator's ground truth says which updates are Byzantine "
        "(positive class = malicious). Curves pool all updates of all rounds and attacks "
        f"({', '.join(result['attacks'])}) at one Byzantine fraction.",
        "",
        f"Command: `python -m bench detection{' --quick' if result['quick'] else ''}` ({result['wall_time']:.0f} s). "
        f"Fashion-MNIST, {result['config']['num_nodes']} nodes, Dirichlet(0.5), 64-unit MLP, "
        f"{result['config']['rounds']} rounds, {result['seeds']} seed(s) per attack and fraction, led by `{lead}`.",
        "",
        "| rule | verdicts | " + " | ".join(f"ROC AUC {float(f):.0%} (per-round mean) | PR AUC {float(f):.0%}"
                                             for f in fractions) + " |",
        "|---|---|" + "---:|---:|" * len(fractions),
    ]
    order = [rule for rule in REJECTING + SCORING if rule in result["rules"]]    # JSON sorts keys
    for rule in order:
        r = result["rules"][rule]
        cells = [r["by_fraction"][f] for f in fractions]
        lines.append(f"| {rule} | {'reject' if r['rejects'] else 'score only'} | " + " | ".join(
            f"{c['roc_auc']:.3f} ({c['round_auc_mean']:.3f}) | {c['pr_auc']:.3f}" for c in cells) + " |")
    lines += ["", "Verdicts of the rules that reject (confusion `[[TN, FP], [FN, TP]]`, summed over rounds):", "",
              "| rule | fraction | precision | recall | F1 | confusion |", "|---|---:|---:|---:|---:|---|"]
    for rule in REJECTING:
        for f in fractions:
            c = result["rules"][rule]["by_fraction"][f]
            lines.append(f"| {rule} | {float(f):.0%} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
                         f"{c['confusion']} |")
    attacks = result["attacks"]
    lines += ["", "ROC AUC per attack (all fractions pooled):", "",
              "| rule | " + " | ".join(attacks) + " |", "|---|" + "---:|" * len(attacks)]
    for rule in order:
        by_attack = result["rules"][rule]["by_attack"]
        lines.append(f"| {rule} | " + " | ".join(f"{by_attack[a]:.3f}" for a in attacks) + " |")
    goal = result["goal"]["by_fraction"]
    met = all(g["met"] for g in goal.values())
    lines += ["", f"Goal: ROC AUC >= {AUC_GOAL} for `{lead}` at 20-40% attackers: " + ", ".join(
        f"{float(f):.0%} {g['roc_auc']:.3f}" for f, g in goal.items()) + f" - **{'met' if met else 'not met'}**.",
        "", "![ROC and PR curves](results/detection.png)"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
