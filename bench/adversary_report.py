"""The adversary benchmark's verdict and rendering: its goals, its plot and its REPORT.md section.

:mod:`bench.adversary` measures; this module judges the result against the goals (the worst value
over models and attacks) and renders it, with the findings prose of ``adversary_findings.md``
under the tables.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import RESULTS
from bench.robustness import plt_module, pm

DROP_GOALS = {0.2: 3.0, 0.4: 8.0}
BACKDOOR_GOAL = 0.05
AUC_GOAL = 0.95
CLEAN_GOAL = 1.0                    # points below FedAvg


def goals(result: dict) -> dict:
    """Each goal: the worst value over models and attacks, and whether it is met."""
    worst_drop = {str(f): max((c["drop"]["mean"], m, a) for m, e in result["models"].items()
                              for a, cells in e["attacks"].items() for ff, c in cells.items() if ff == str(f))
                  for f in result["fractions"]}
    backdoor = [(c["backdoor_success"]["mean"], m, a, f) for m, e in result["models"].items()
                for a, cells in e["attacks"].items() for f, c in cells.items() if "backdoor_success" in c]
    aucs = [(c["auc"], m, a, f) for m, e in result["models"].items() for a, cells in e["attacks"].items()
            for f, c in cells.items() if c["auc"] is not None]
    clean = [(-e["clean_vs_fedavg"]["mean"], m) for m, e in result["models"].items()]
    return {
        "drop": {f: {"worst": w[0], "model": w[1], "attack": w[2], "goal": DROP_GOALS.get(float(f), 8.0),
                     "met": w[0] <= DROP_GOALS.get(float(f), 8.0)} for f, w in worst_drop.items()},
        "backdoor": ({"worst": max(backdoor)[0], "where": list(max(backdoor)[1:]), "goal": BACKDOOR_GOAL,
                      "met": max(backdoor)[0] <= BACKDOOR_GOAL} if backdoor else None),
        "auc": ({"worst": min(aucs)[0], "where": list(min(aucs)[1:]), "goal": AUC_GOAL,
                 "met": min(aucs)[0] >= AUC_GOAL} if aucs else None),
        "clean": {"worst_below_fedavg": max(clean)[0], "model": max(clean)[1], "goal": CLEAN_GOAL,
                  "met": max(clean)[0] <= CLEAN_GOAL},
    }


def plot(result: dict) -> None:
    plt = plt_module()
    models = list(result["models"])
    fig, axes = plt.subplots(len(models), 2, figsize=(13, 4 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        cells = result["models"][model]["attacks"]
        names = list(cells)
        x = np.arange(len(names))
        for k, f in enumerate(result["fractions"]):
            drops = [cells[a][str(f)]["drop"]["mean"] for a in names]
            aucs = [cells[a][str(f)]["auc"] or 0.0 for a in names]
            axes[row][0].bar(x + 0.4 * k, drops, 0.4, label=f"{int(100 * f)}% Byzantine")
            axes[row][1].bar(x + 0.4 * k, aucs, 0.4, label=f"{int(100 * f)}% Byzantine")
        for ax, title in zip(axes[row], ("accuracy drop (points)", "detection ROC AUC")):
            ax.set_xticks(x + 0.2)
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
            ax.set_title(f"{model}: {title}")
            ax.legend(fontsize=8)
        axes[row][1].axhline(AUC_GOAL, color="k", lw=0.8, ls="--")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{result.get('name', 'adversary')}.png", dpi=110)
    plt.close(fig)


def _ablation_text(c: dict | None, attack: str) -> str:
    if c is None:
        return "-"
    if attack == "clean":
        return f"{c['drop']['mean']:.1f} / {c['honest']['rejected_per_round']['mean']:.2f}"
    auc = f"{c['auc']:.3f}" if c["auc"] is not None else "-"
    bd = f" / {100 * c['backdoor_success']['mean']:.1f}%" if "backdoor_success" in c else ""
    return f"{auc} / {c['drop']['mean']:.1f}{bd}"


def _cell_text(c: dict) -> list[str]:
    bd = pm(c["backdoor_success"]) + "%" if "backdoor_success" in c else "-"
    auc = f"{c['auc']:.3f}" if c["auc"] is not None else "-"
    return [pm(c["drop"], 1.0), bd, auc, _honest_text(c["honest"])]


def _honest_text(h: dict) -> str:
    """Honest rejections per round, and the rounds the guard skipped per run where there were any."""
    skipped = h.get("skipped_rounds", {}).get("mean", 0.0)
    return f"{h['rejected_per_round']['mean']:.2f}" + (f" ({skipped:.1f} skipped)" if skipped else "")


def _data_text(h: dict) -> str:
    """The share of the honest samples the rejected honest updates held, where the run recorded it."""
    return (f", that is {100 * h['updates_rejected']['mean']:.1f}% of the honest updates, holding "
            f"{100 * h['data_rejected']['mean']:.1f}% of their samples" if "data_rejected" in h else "")


FINDINGS = Path(__file__).with_name("adversary_findings.md")
"""What the measurements showed and why goals are missed: prose the report carries under its tables."""


def report(result: dict) -> str:
    g = result["goals"]
    lines = ["## Adaptive adversaries: backdoors, evasive attackers, detection", "",
             "The default rule (`clustering`: near copies, drift and direction, shared offset, outlier clusters, distance to the robust "
             "centre, then the median-norm and feature clips of what it accepts) against every attack of `learning.attacks` and `learning.adaptive`: the polite ones, the same "
             "with per-attacker noise (`+noise`, jitter 1 = the honest spread), `adaptive` (the rule in the loop: "
             "the largest push against the mean the rule still accepts), `drift` (one fixed direction, inside the "
             "median radius every round), `sybil` (all Byzantine identities join at once halfway through, fresh "
             "stake, noisy sign flips), `constrain_scale` (backdoored training boosted to the radius and norm "
             "bound), `dba` (the trigger split in three among the attackers, tested whole).", "",
             f"Last command: `{result.get('command', 'python -m bench adversary')}` "
             f"({result['wall_time_s']:.0f} s, measured {result['measured_at']}). "
             f"{result['task'].get('dataset')}, {result['task'].get('num_nodes')} nodes, Dirichlet("
             f"{result['task'].get('dirichlet_alpha')}), models {', '.join(result['models'])} (rounds, seeds, "
             "local training and pipeline per model below). Drop = points lost against the clean "
             "run of the same seed (mean ± std over seeds); AUC pools every update of every round and seed; "
             "honest rej./round = honest updates rejected per round (rounds the validation guard skipped, "
             "which reject and penalize nobody, are counted apart: rounds skipped per run). "
             "`python -m bench adversary` with no options runs every row below with its own seeds and attacks "
             "(the MLP's rows 8 seeds, the CNN's rows 3 on four attacks, the ablation 3) in about an hour and a half here; "
             "each row names the command it last ran with.", ""]
    for model, e in result["models"].items():
        lines += [f"**{model}** (`{e.get('command', result.get('command', ''))}`: {e.get('rounds', result['rounds'])} "
                  f"rounds, {e.get('seeds', result['seeds'])} seed(s); "
                  f"{e.get('setup', str(result['task'].get('local_epochs')) + ' local epoch(s) per round, ' + result['pipeline'])}"
                  f"): clean {pm(e['clean'])}%, plain FedAvg {pm(e['fedavg'])}% "
                  f"(difference {pm(e['clean_vs_fedavg'], 1.0)} points)"
                  + (f"; FedAvg on the same pipeline {pm(e['pipeline_fedavg'])}%: clean minus it (the rule's share) "
                     f"{pm(e['rule_cost'], 1.0)}, it minus plain FedAvg (the pipeline's) {pm(e['pipeline_cost'], 1.0)} points"
                     if "pipeline_fedavg" in e else "")
                  + f"; honest updates rejected per round with no "
                  f"attacker {_honest_text(e['clean_honest'])}{_data_text(e['clean_honest'])}, honest stake lost to penalties "
                  f"{e['clean_honest']['stake_lost']['mean']:.0f} per run"
                  + (f", honest weight withheld by standing {100 * e['clean_honest']['standing_withheld']['mean']:.1f}% "
                     f"(lowest honest standing {e['clean_honest']['standing_lowest']['mean']:.2f}, mean over seeds)"
                     if "standing_withheld" in e["clean_honest"] else "") + ".", ""]
        head = ["attack"]
        for f in result["fractions"]:
            p = int(100 * f)
            head += [f"drop {p}%", f"backdoor {p}%", f"AUC {p}%", f"honest rej./round {p}%"]
        rows = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for a, cells in e["attacks"].items():
            rows.append("| " + " | ".join([a] + [t for f in result["fractions"] for t in _cell_text(cells[str(f)])])
                        + " |")
        lines += rows + [""]
    if result["ablation"]:
        first = next(iter(result["ablation"].values()))   # --keep may carry it over from another model's run
        frac = int(100 * first["fraction"])
        from bench.adversary import ABLATION_ATTACKS   # the measuring module imports this one

        names = [a for a in ("clean",) + ABLATION_ATTACKS if any(a in v["cells"] for v in result["ablation"].values())]
        lines += [f"Ablation ({first['model']}, {first['seeds']} seed(s), {first['rounds']} rounds, {frac}% Byzantine): one part "
                  "of the rule switched off at a time, or one pipeline setting changed. Clean: points below "
                  "the full rule's clean accuracy / honest "
                  "updates rejected per round; attacks: AUC / drop in points against the full rule's clean run "
                  "(/ backdoor success).", "",
                  "| variant | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for variant, v in result["ablation"].items():
            lines.append(f"| {variant} | " + " | ".join(_ablation_text(v["cells"].get(a), a) for a in names) + " |")
        lines.append("")
    lines.append("Goals:")
    for f, d in g["drop"].items():
        lines.append(f"- accuracy drop <= {d['goal']:g} points at {int(100 * float(f))}%: worst {d['worst']:.1f} "
                     f"({d['attack']}, {d['model']}) - **{'met' if d['met'] else 'not met'}**"
                     + ("" if d["met"] else f", by {d['worst'] - d['goal']:.1f} points"))
    if g["backdoor"]:
        b = g["backdoor"]
        lines.append(f"- backdoor success <= 5%: worst {100 * b['worst']:.1f}% ({', '.join(map(str, b['where']))}) - "
                     f"**{'met' if b['met'] else 'not met'}**")
    if g["auc"]:
        a = g["auc"]
        lines.append(f"- detection ROC AUC >= 0.95: worst {a['worst']:.3f} ({', '.join(map(str, a['where']))}) - "
                     f"**{'met' if a['met'] else 'not met'}**")
    c = g["clean"]
    lines.append(f"- clean accuracy within 1 point of FedAvg: worst {c['worst_below_fedavg']:.1f} points below "
                 f"({c['model']}) - **{'met' if c['met'] else 'not met'}**")
    lines += ["", FINDINGS.read_text().rstrip("\n"), "", "![accuracy drop and AUC per attack](results/adversary.png)", ""]
    return "\n".join(lines)


def report_console(result: dict) -> str:
    return report({**result, "measured_at": "now"})
