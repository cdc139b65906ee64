"""The default rule against adaptive adversaries: accuracy, backdoors, detection, honest cost.

Every run is the product (:func:`bench.simruns.fedchain`: the genesis defaults' clip, noise,
top-k float16 encoding with error feedback and the norm bound) on Fashion-MNIST, 20 nodes,
Dirichlet(0.5), for the 64-unit MLP and the small CNN; attackers send through the same pipeline.
The CNN runs as the product's Fashion-MNIST preset trains it (:data:`CNN_PRESET`: the preset's
client clip and local epochs over the genesis defaults), the MLP with :data:`bench.robustness.FMNIST`
in synchronous rounds and again with asynchronous arrivals and staleness (:data:`ASYNC_MLP`).
``--noise-multiplier`` replaces the genesis update noise in every product run (to measure what
the noise costs detection).
Every attack of :mod:`learning.attacks` and :mod:`learning.adaptive`, plus the evasive variants
(each attacker adds its own noise of the honest spread, ``jitter`` 1) and a sybil burst (the
Byzantine identities join together halfway through, with fresh stake, sending noisy sign flips),
at each Byzantine fraction, for every seed. Three baselines per seed: the clean run (same rule,
no attacker), FedAvg on the same pipeline (the rule swapped for the weighted mean, everything
else identical: what the rule costs honest nodes) and plain FedAvg (dense, no clip or noise, a
constant step: what the pipeline and the rule cost together).

Measured: accuracy drop against the clean run of the same seed (paired); backdoor success
(triggered test images of other classes labelled 0, whole trigger even for the distributed one);
detection ROC AUC of the rule's suspicion scores pooled over rounds and seeds; honest updates
rejected per round and honest stake lost to penalties; clean accuracy against FedAvg.

Ablation: the rule with one defence switched off at a time (``drift=False``: no test of each
update's direction against the way the model has been moving; ``direction=0``: no test of each
update's direction against the majority's; ``offset=0``: no shared-offset test; ``collusion=0``: no near-copy test; ``norm_clip=0``: no clip to the median norm;
``feature_clip=0``: no clip of each feature group to its median norm, ``=1``: a tighter one than
the default 1.5; ``tune_margin=0``: the best-validating radius wins by any margin; ``guard=0``: no
skip of a round whose aggregate validates worse than the current model; ``standing`` off: every
sender's weight its claim, whatever its last accepted scores), and the pipeline with the
client's clip norm at 3 instead of the genesis 1 (the setting that costs clean accuracy most), with no
attacker and on the evasive and backdoor attacks at the highest fraction, first model, every
seed: what each part buys against attackers and what it costs honest nodes.

Run: ``python -m bench adversary [--quick] [--seeds N] [--rounds R] [--models tabular_mlp,cnn,tabular_mlp/async]``.
``--quick`` (:data:`QUICK`): digits, the MLP, one seed, 4 rounds, four of the new attacks at 40%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, finish
from bench.robustness import BACKDOORS, DIGITS, FMNIST, mean_std, pin_threads, plt_module, pm, run_all, simulate_job
from bench.simruns import FEDAVG, describe
from cli.data import PRESET_MODELS, PRESET_SETTINGS

FRACTIONS = (0.2, 0.4)
DROP_GOALS = {0.2: 3.0, 0.4: 8.0}
BACKDOOR_GOAL = 0.05
AUC_GOAL = 0.95
CLEAN_GOAL = 1.0                    # points below FedAvg
NOISY = {"jitter": 1.0}
# label -> (attack, attack parameters, extra simulation settings)
ATTACKS: dict[str, tuple[str, dict, dict]] = {
    "sign_flip": ("sign_flip", {}, {}), "gaussian": ("gaussian", {}, {}), "alie": ("alie", {}, {}),
    "ipm": ("ipm", {}, {}), "minmax": ("minmax", {}, {}), "scale": ("scale", {}, {}),
    "label_flip": ("label_flip", {}, {}), "backdoor": ("backdoor", {}, {}),
    "alie+noise": ("alie", NOISY, {}), "ipm+noise": ("ipm", NOISY, {}), "minmax+noise": ("minmax", NOISY, {}),
    "adaptive": ("adaptive", {}, {}), "drift": ("drift", {}, {}), "sybil": ("sign_flip", NOISY, {"sybil": True}),
    "constrain_scale": ("constrain_scale", {}, {}), "dba": ("dba", {}, {}),
    "backdoor_centre": ("backdoor", {"at": "centre"}, {}),
}
ABLATION: dict[str, dict[str, dict]] = {
    "full rule": {}, "drift test off": {"rule_params": {"drift": False}},
    "direction test off": {"rule_params": {"direction": 0.0}},
    "shared-offset test off": {"rule_params": {"offset": 0.0}},
    "near-copy test off": {"rule_params": {"collusion": 0.0}}, "norm clip off": {"rule_params": {"norm_clip": 0.0}},
    "feature clip off": {"rule_params": {"feature_clip": 0.0}},
    "feature clip 1": {"rule_params": {"feature_clip": 1.0}},
    "no radius-tuning margin": {"rule_params": {"tune_margin": 0.0}},
    "validation guard off": {"rule_params": {"guard": 0.0}},
    "client clip 3": {"pipeline": {"clip_norm": 3.0}},
    "standing off": {"pipeline": {"standing": False}},
}
"""Variant -> what it changes: the rule's parameters, or an FL setting (standing, or the
client's clip norm is the genesis default of 1, the largest factor in what the pipeline costs clean
accuracy against plain FedAvg)."""
ABLATION_ATTACKS = ("alie+noise", "ipm+noise", "adaptive", "backdoor", "constrain_scale")
CNN_PRESET = {**{key: FMNIST[key] for key in ("dataset", "partition", "dirichlet_alpha", "num_nodes")},
              "model": PRESET_MODELS["fashion_mnist"], **PRESET_SETTINGS["fashion_mnist"]}
"""What a device of ``fedchain testnet create --dataset fashion_mnist`` trains: the CNN with the genesis
defaults (step size, schedule, batch) and the preset's changes to them (client clip, local epochs).
The clip is the setting that moves both clean accuracy and backdoor success most, so the CNN rows
measure the preset's, not the genesis default sized for the MLP."""
ASYNC_BUFFER = 10
ASYNC_MLP = {**FMNIST, "mode": "async", "clients_per_round": ASYNC_BUFFER}
"""The MLP as a chain runs it: every node trains from the newest model it holds at its own pace
(lognormal(0, 0.5) times its data share), every ten arrivals are aggregated with the staleness
weight, an update more than ``max_staleness`` versions behind is dropped, and a sender counts once
per aggregation (its newest update), as a chain's pool keeps it."""
VARIANTS: dict[str, tuple[str, dict, int]] = {"cnn": ("cnn", CNN_PRESET, 1),
                                              "tabular_mlp/async": ("tabular_mlp", ASYNC_MLP, 2)}
"""Row label -> (model, the task and settings its runs use in place of the benchmark's task, how
many aggregations a round is). An asynchronous aggregation takes half the nodes' updates, so twice
as many of them make as many local jobs as the synchronous rounds."""
QUICK = {"task": DIGITS, "models": ("tabular_mlp",), "seeds": 1, "rounds": 4,
         "attacks": ("ipm+noise", "adaptive", "dba", "sybil"), "fractions": (0.4,)}


def _config(task: dict, variant: str, label: str | None, fraction: float, seed: int, rounds: int,
            rule_params: dict | None = None, pipeline: dict | None = None) -> dict:
    model, setup, per_round = VARIANTS.get(variant, (variant, task, 1))
    rounds *= per_round
    config = {**setup, **(pipeline or {}), "model": model, "rounds": rounds, "seed": seed,
              "eval_every": rounds}   # final model only
    if rule_params:
        config["rule_params"] = rule_params
    if label is None:
        return config
    attack, params, extra = ATTACKS[label]
    config.update(attack=attack, byzantine_fraction=fraction, attack_params=dict(params))
    if extra.get("sybil"):
        config["byzantine_from_round"] = rounds // 2
    return config


def _setup(config: dict) -> str:
    """A variant's training and pipeline, in words (the CNN's and the asynchronous MLP's differ
    from the MLP's: :data:`VARIANTS`)."""
    from learning.sim import SimConfig

    sim = SimConfig.of(**config)
    fl = sim.fl
    timing = ("" if sim.mode == "sync" else
              f"asynchronous arrivals (speeds lognormal(0, {sim.speed_sigma:g}) times the data share), "
              f"{sim.rounds} aggregations of {sim.clients_per_round} arrivals, one per sender, staleness "
              f"weight (1 + s)^-{fl.staleness_a:g}, updates over {fl.max_staleness} versions old dropped; ")
    return f"{timing}{fl.local_epochs} local epoch(s) per job, batch {fl.batch_size}, {describe(config)}"


def _auc(runs: list[dict]) -> float | None:
    """ROC AUC of the rule's scores, every update of every round and seed pooled."""
    from learning.detection import detection_stats

    decided = [rnd for r in runs for rnd in r["rounds"] if not rnd.get("skipped")]   # a skipped round scores nobody
    truth = [b for rnd in decided for b in rnd["byzantine"]]
    scores = [1e300 if s is None else s for rnd in decided for s in rnd["scores"]]
    if not any(truth) or all(truth):
        return None
    accepted = [True] * len(truth)
    auc = detection_stats(np.asarray(truth), np.asarray(scores, dtype=np.float64), np.asarray(accepted)).roc_auc
    return None if np.isnan(auc) else float(auc)


def _honest_cost(runs: list[dict], penalty: int) -> dict:
    """Honest updates rejected per round and the stake it cost; a skipped round rejects and
    penalizes nobody, so it is counted apart (rounds skipped per run). And the weight standing
    withholds from honest updates (the share of their claims it takes, over every honest update of
    every round) and the lowest standing any honest update had, per run."""
    fp = [[rnd["fp"] for rnd in r["rounds"] if not rnd.get("skipped")] for r in runs]
    honest = [[s for rnd in r["rounds"] for s, b in zip(rnd.get("standing") or [], rnd["byzantine"]) if not b]
              for r in runs]
    return {"rejected_per_round": mean_std(sum(f) / max(1, len(f)) for f in fp),
            "stake_lost": mean_std(penalty * sum(f) for f in fp),
            "skipped_rounds": mean_std(sum(bool(rnd.get("skipped")) for rnd in r["rounds"]) for r in runs),
            "standing_withheld": mean_std(1.0 - sum(h) / len(h) if h else 0.0 for h in honest),
            "standing_lowest": mean_std(min(h, default=1.0) for h in honest)}


def measure(task: dict, models: tuple[str, ...], attacks: tuple[str, ...], fractions: tuple[float, ...],
            seeds: int, rounds: int, workers: int, ablation: bool = True, pipeline: dict | None = None) -> dict:
    """Every run of the benchmark; ``pipeline`` overrides genesis pipeline settings (e.g. the
    update noise) in every run but plain FedAvg."""
    from learning.settings import FLSettings

    penalty = FLSettings().penalty_rejected
    jobs: list[dict] = []
    keys: list[tuple] = []          # (model, ablation variant, run kind, fraction) of each job

    def add(key: tuple, config: dict, keep: bool = True) -> None:
        keys.append(key)
        jobs.append({"config": config, "keep_rounds": keep})

    for model in models:
        for s in range(seeds):
            add((model, None, "clean", 0.0), _config(task, model, None, 0.0, s, rounds, pipeline=pipeline))
            add((model, None, "pipeline_fedavg", 0.0),
                {**_config(task, model, None, 0.0, s, rounds, pipeline=pipeline), "rule": "fedavg"}, False)
            add((model, None, "fedavg", 0.0), {**_config(task, model, None, 0.0, s, rounds), **FEDAVG}, False)
            for a in attacks:
                for f in fractions:
                    add((model, None, a, f), _config(task, model, a, f, s, rounds, pipeline=pipeline))
    ablation_fraction = max(fractions)
    for variant, change in ABLATION.items():
        params, settings = change.get("rule_params"), {**(pipeline or {}), **change.get("pipeline", {})}
        for s in range(seeds):
            if ablation and change:
                add((models[0], variant, "clean", 0.0), _config(task, models[0], None, 0.0, s, rounds, params, settings))
            for a in ABLATION_ATTACKS:
                if ablation and change and a in attacks:
                    add((models[0], variant, a, ablation_fraction),
                        _config(task, models[0], a, ablation_fraction, s, rounds, params, settings))
    rows = run_all(simulate_job, jobs, workers)
    out: dict[str, Any] = {"models": {}, "attacks": list(attacks), "fractions": list(fractions), "seeds": seeds,
                           "rounds": rounds, "task": task, "pipeline": describe({**task, **(pipeline or {})}),
                           "pipeline_overrides": dict(pipeline or {}), "ablation": {}}
    by_key: dict[tuple, list[dict]] = {}
    for key, row in zip(keys, rows):
        by_key.setdefault(key, []).append(row)
    for model in models:
        clean = by_key[(model, None, "clean", 0.0)]
        fedavg = by_key[(model, None, "fedavg", 0.0)]
        same_pipeline = by_key[(model, None, "pipeline_fedavg", 0.0)]
        clean_acc = [r["final_accuracy"] for r in clean]

        def gap(a: list[dict], b: list[dict]) -> dict:
            return mean_std(100 * (x["final_accuracy"] - y["final_accuracy"]) for x, y in zip(a, b))

        entry: dict[str, Any] = {
            "clean": mean_std(clean_acc), "fedavg": mean_std(r["final_accuracy"] for r in fedavg),
            "pipeline_fedavg": mean_std(r["final_accuracy"] for r in same_pipeline),
            "clean_vs_fedavg": gap(clean, fedavg), "rule_cost": gap(clean, same_pipeline),
            "pipeline_cost": gap(same_pipeline, fedavg),
            "clean_honest": _honest_cost(clean, penalty), "attacks": {}, "seeds": seeds,
            "rounds": rounds * VARIANTS.get(model, ("", {}, 1))[2],
            "setup": _setup(_config(task, model, None, 0.0, 0, rounds, pipeline=pipeline))}
        for a in attacks:
            for f in fractions:
                runs = by_key[(model, None, a, f)]
                cell = {"accuracy": mean_std(r["final_accuracy"] for r in runs),
                        "drop": mean_std(100 * (c0 - r["final_accuracy"]) for c0, r in zip(clean_acc, runs)),
                        "auc": _auc(runs), "honest": _honest_cost(runs, penalty),
                        "recall": mean_std(r["summary"]["detection_recall"] or 0.0 for r in runs)}
                if ATTACKS[a][0] in BACKDOORS:
                    cell["backdoor_success"] = mean_std(r["backdoor_success"] for r in runs)
                entry["attacks"].setdefault(a, {})[str(f)] = cell
        out["models"][model] = entry
    base = [r["final_accuracy"] for r in by_key[(models[0], None, "clean", 0.0)]]   # the full rule's, per seed
    for variant, change in ABLATION.items() if ablation else ():
        cells = {}
        for a in ("clean",) + ABLATION_ATTACKS:
            key = (models[0], variant if change else None, a, 0.0 if a == "clean" else ablation_fraction)
            runs = by_key.get(key, [])
            if not runs:
                continue
            cells[a] = {"auc": _auc(runs), "drop": mean_std(100 * (b - r["final_accuracy"]) for b, r in zip(base, runs)),
                        "honest": _honest_cost(runs, penalty)}
            if ATTACKS.get(a, ("",))[0] in BACKDOORS:
                cells[a]["backdoor_success"] = mean_std(r["backdoor_success"] for r in runs)
        out["ablation"][variant] = {**change, "fraction": ablation_fraction, "cells": cells,
                                    "model": models[0], "seeds": seeds, "rounds": rounds}
    out["goals"] = goals(out)
    return out


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
    fig.savefig(RESULTS / "adversary.png", dpi=110)
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
             "which reject and penalize nobody, are counted apart: rounds skipped per run).", ""]
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
                  f"attacker {_honest_text(e['clean_honest'])}, honest stake lost to penalties "
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench adversary")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--models", default=",".join(["tabular_mlp", *VARIANTS]),
                        help=f"models and variants: tabular_mlp, {', '.join(VARIANTS)}")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--noise-multiplier", type=float, default=None,
                        help="update noise of every product run (default: the genesis setting)")
    parser.add_argument("--keep", action="store_true", help="keep the other models' results of the last run")
    args = parser.parse_args(argv)
    pin_threads(1)
    started = time.perf_counter()
    if args.quick:
        q = QUICK
        result = measure(q["task"], q["models"], q["attacks"], q["fractions"], q["seeds"], q["rounds"], args.workers)
    else:
        attacks = tuple(a for a in args.attacks.split(",") if a)
        unknown = sorted(set(attacks) - set(ATTACKS))
        if unknown:
            raise SystemExit(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
        pipeline = {} if args.noise_multiplier is None else {"noise_multiplier": args.noise_multiplier}
        result = measure(FMNIST, tuple(args.models.split(",")), attacks, FRACTIONS, args.seeds, args.rounds,
                         args.workers, ablation=not args.no_ablation, pipeline=pipeline)
    result["quick"] = args.quick
    result["command"] = "python -m bench adversary " + " ".join(argv if argv is not None else sys.argv[2:])
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for entry in result["models"].values():  # each model says how and when it was run (--keep mixes runs)
        entry.update(command=result["command"], seeds=result["seeds"], measured_at=now)
    previous = RESULTS / "adversary.json"
    if args.keep and previous.exists():
        old = json.loads(previous.read_text())
        kept = {m: e for m, e in old["models"].items() if m not in result["models"]}
        result["models"] = {**kept, **result["models"]}
        if kept and not result["ablation"]:
            result["ablation"] = old["ablation"]
        result["goals"] = goals(result)
    result["part_measured_at"] = {m: e.get("measured_at") for m, e in result["models"].items()}
    return finish("adversary", result, started, plot, report_console)


def report_console(result: dict) -> str:
    return report({**result, "measured_at": "now"})
