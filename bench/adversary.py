"""The default rule against adaptive adversaries: accuracy, backdoors, detection, honest cost.

Every run is the product (:func:`bench.simruns.fedchain`: the genesis defaults' clip, noise,
top-k float16 encoding with error feedback and the norm bound) on Fashion-MNIST, 20 nodes,
Dirichlet(0.5), for the 64-unit MLP and the small CNN; attackers send through the same pipeline.
The CNN runs as the product's Fashion-MNIST preset trains it (:data:`CNN_PRESET`: the preset's
client clip and local epochs over the genesis defaults), the MLP with :data:`bench.robustness.FMNIST`
in synchronous rounds, and both again with asynchronous arrivals and staleness (:data:`ASYNC_MLP`,
:data:`ASYNC_CNN`).
``--set KEY=VALUE`` changes a genesis FL setting and ``--rule KEY=VALUE`` a parameter of the rule in
every product run (e.g. ``--set noise_multiplier=0.01`` to measure what update noise costs
detection); ``--save-as NAME`` writes ``results/NAME.json`` and ``.png`` instead of the table's.
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
skip of a round whose aggregate validates worse than the current model; ``standing`` on: each
sender's weight scaled by its standing, :mod:`learning.standing`, off by default), and the pipeline with the
client's clip norm at 3 instead of the genesis 1 (the setting that costs clean accuracy most), with no
attacker and on the evasive and backdoor attacks at the highest fraction, first model, every
seed: what each part buys against attackers and what it costs honest nodes.

Run: ``python -m bench adversary [--quick] [--seeds N] [--rounds R] [--models tabular_mlp,cnn,tabular_mlp/async,cnn/async]``.
With no ``--seeds`` or ``--attacks`` each row runs its own (:data:`SEEDS`, :data:`CNN_ATTACKS`), so the
bare command reproduces the report's table (about an hour and a half here); ``--keep`` re-runs some rows only.
``--quick`` (:data:`QUICK`): digits, the MLP, one seed, 4 rounds, four of the new attacks at 40%.
The goals, the plot and the report section are :mod:`bench.adversary_report`'s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from bench.adversary_report import goals, plot, report, report_console  # noqa: F401 (report: REPORT.md's section)
from bench.common import RESULTS, finish
from bench.robustness import BACKDOORS, DIGITS, FMNIST, mean_std, pin_threads, run_all, simulate_job
from bench.simruns import FEDAVG, describe
from cli.common import CliError, json_assignments
from cli.data import PRESET_MODELS, PRESET_SETTINGS

FRACTIONS = (0.2, 0.4)
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
    "standing on": {"pipeline": {"standing": True}},
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
ASYNC_CNN = {**CNN_PRESET, "mode": "async", "clients_per_round": ASYNC_BUFFER}
"""The CNN preset's devices with the asynchronous MLP's arrivals, buffer and staleness."""
VARIANTS: dict[str, tuple[str, dict, int]] = {"cnn": ("cnn", CNN_PRESET, 1),
                                              "tabular_mlp/async": ("tabular_mlp", ASYNC_MLP, 2),
                                              "cnn/async": ("cnn", ASYNC_CNN, 2)}
"""Row label -> (model, the task and settings its runs use in place of the benchmark's task, how
many aggregations a round is). An asynchronous aggregation takes half the nodes' updates, so twice
as many of them make as many local jobs as the synchronous rounds."""
SEEDS = {"tabular_mlp": 8, "tabular_mlp/async": 8, "cnn": 3, "cnn/async": 3}
"""Seeds per row by default. One asynchronous MLP run ends 2-4 points from another of the same attack
on a different seed, so its mean over 3 cannot tell a 3-point goal from noise; the MLP's rows run 8.
A CNN run takes 2-5 minutes here, so its rows (synchronous and asynchronous) run 3."""
CNN_ATTACKS = ("backdoor", "constrain_scale", "ipm+noise", "backdoor_centre")
"""The CNN's attacks by default (both its rows): those the MLP's rows leave open (the backdoors) and the one that broke
the CNN's drop goal before the direction test."""
ABLATION_SEEDS = 3
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
    changed = [f"{key} {value}" for key, value in fl.rule_params.items()] + (["standing on"] if fl.standing else [])
    return (f"{timing}{fl.local_epochs} local epoch(s) per job, batch {fl.batch_size}, {describe(config)}"
            + "".join(f", {c}" for c in changed))


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
    penalizes nobody, so it is counted apart (rounds skipped per run). The share of the honest
    updates' samples (their claims) that the rejected ones held: a count per round hides whose
    data is lost, and the rule rejects the largest devices most (``adversary_findings.md``). And
    the weight standing withholds from honest updates (the share of their claims it takes, over
    every honest update of every round) and the lowest standing any honest update had, per run."""
    fp = [[rnd["fp"] for rnd in r["rounds"] if not rnd.get("skipped")] for r in runs]
    honest = [[s for rnd in r["rounds"] for s, b in zip(rnd.get("standing") or [], rnd["byzantine"]) if not b]
              for r in runs]
    samples = [[(c, ok) for rnd in r["rounds"] if not rnd.get("skipped")
                for c, ok, b in zip(rnd.get("claims") or [], rnd.get("verdicts") or [], rnd["byzantine"]) if not b]
               for r in runs]
    data = {}
    if all(samples):                  # runs recorded before the claims were kept say nothing of them
        data = {"data_rejected": mean_std(sum(c for c, ok in h if not ok) / max(sum(c for c, _ in h), 1e-300)
                                          for h in samples),
                "updates_rejected": mean_std(sum(not ok for _, ok in h) / len(h) for h in samples)}
    return {**data, "rejected_per_round": mean_std(sum(f) / max(1, len(f)) for f in fp),
            "stake_lost": mean_std(penalty * sum(f) for f in fp),
            "skipped_rounds": mean_std(sum(bool(rnd.get("skipped")) for rnd in r["rounds"]) for r in runs),
            "standing_withheld": mean_std(1.0 - sum(h) / len(h) if h else 0.0 for h in honest),
            "standing_lowest": mean_std(min(h, default=1.0) for h in honest)}


def measure(task: dict, plan: dict[str, tuple[int, tuple[str, ...]]], fractions: tuple[float, ...],
            rounds: int, workers: int, ablation_seeds: int = ABLATION_SEEDS, pipeline: dict | None = None,
            rule_params: dict | None = None) -> dict:
    """Every run of the benchmark: ``plan`` maps each row (model or variant) to its seeds and attacks,
    the ablation runs on the first row (``ablation_seeds`` 0: none); ``pipeline`` overrides genesis
    pipeline settings (e.g. the update noise) in every run but plain FedAvg, ``rule_params`` the
    rule's parameters in every run of the rule (the ablation's changes go on top)."""
    from learning.settings import FLSettings

    penalty = FLSettings().penalty_rejected
    jobs: list[dict] = []
    keys: list[tuple] = []          # (model, ablation variant, run kind, fraction) of each job

    def add(key: tuple, config: dict, keep: bool = True) -> None:
        keys.append(key)
        jobs.append({"config": config, "keep_rounds": keep})

    models = tuple(plan)
    for model, (seeds, attacks) in plan.items():
        for s in range(seeds):
            add((model, None, "clean", 0.0), _config(task, model, None, 0.0, s, rounds, rule_params, pipeline))
            add((model, None, "pipeline_fedavg", 0.0),
                {**_config(task, model, None, 0.0, s, rounds, pipeline=pipeline), "rule": "fedavg"}, False)
            add((model, None, "fedavg", 0.0), {**_config(task, model, None, 0.0, s, rounds), **FEDAVG}, False)
            for a in attacks:
                for f in fractions:
                    add((model, None, a, f), _config(task, model, a, f, s, rounds, rule_params, pipeline))
    ablation_fraction = max(fractions)
    for variant, change in ABLATION.items():
        params = {**(rule_params or {}), **change.get("rule_params", {})}
        settings = {**(pipeline or {}), **change.get("pipeline", {})}
        for s in range(ablation_seeds):
            if change:
                add((models[0], variant, "clean", 0.0), _config(task, models[0], None, 0.0, s, rounds, params, settings))
            for a in ABLATION_ATTACKS:
                if change and a in plan[models[0]][1]:
                    add((models[0], variant, a, ablation_fraction),
                        _config(task, models[0], a, ablation_fraction, s, rounds, params, settings))
    rows = run_all(simulate_job, jobs, workers)
    every_attack = list(dict.fromkeys(a for _, attacks in plan.values() for a in attacks))
    out: dict[str, Any] = {"models": {}, "attacks": every_attack, "fractions": list(fractions),
                           "seeds": {model: seeds for model, (seeds, _) in plan.items()},
                           "rounds": rounds, "task": task, "pipeline": describe({**task, **(pipeline or {})}),
                           "pipeline_overrides": dict(pipeline or {}), "rule_overrides": dict(rule_params or {}),
                           "ablation": {}}
    by_key: dict[tuple, list[dict]] = {}
    for key, row in zip(keys, rows):
        by_key.setdefault(key, []).append(row)
    for model, (seeds, attacks) in plan.items():
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
            "setup": _setup(_config(task, model, None, 0.0, 0, rounds, rule_params, pipeline))}
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
    for variant, change in ABLATION.items() if ablation_seeds else ():
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
                                    "model": models[0], "seeds": ablation_seeds, "rounds": rounds}
    out["goals"] = goals(out)
    return out


def _assignments(items: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` options as a dict, each VALUE read as JSON, as ``fedchain testnet create --set`` reads them."""
    try:
        return json_assignments(items, flag)
    except CliError as exc:
        raise SystemExit(str(exc)) from exc


def _check_overrides(models: tuple[str, ...], pipeline: dict[str, Any], rule_params: dict[str, Any]) -> None:
    """Stop before the first run when ``--set`` / ``--rule`` name a value no product run could take:
    each model's run is checked as a simulation and as the genesis a chain would refuse."""
    from learning.settings import FLSettings
    from learning.sim import SimConfig

    for model in models:
        try:
            sim = SimConfig.of(**_config(FMNIST, model, None, 0.0, 0, 1, rule_params, pipeline))
            sim.validate()
            FLSettings.from_app_state(sim.fl.to_app_state())
        except (TypeError, ValueError) as exc:   # SimConfig takes no unknown keyword; SettingsError is a ValueError
            raise SystemExit(f"--set/--rule: {exc}") from exc


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench adversary")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of every row (default: each row's, SEEDS)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--models", default=",".join(["tabular_mlp", *VARIANTS]),
                        help=f"models and variants: tabular_mlp, {', '.join(VARIANTS)}")
    parser.add_argument("--attacks", default=None, help="attacks of every row (default: all; the CNN's CNN_ATTACKS)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ablation", action="store_true")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a genesis FL setting of every product run (VALUE in JSON, e.g. standing=true)")
    parser.add_argument("--rule", action="append", default=[], metavar="KEY=VALUE",
                        help="a parameter of the rule in every product run (e.g. feature_clip=1.0)")
    parser.add_argument("--save-as", default="adversary", help="results/NAME.json and .png (default: the table's)")
    parser.add_argument("--keep", action="store_true", help="keep the other models' results of the last run")
    args = parser.parse_args(argv)
    pin_threads(1)
    started = time.perf_counter()
    if args.quick:
        q = QUICK
        plan = {model: (q["seeds"], q["attacks"]) for model in q["models"]}
        result = measure(q["task"], plan, q["fractions"], q["rounds"], args.workers, ablation_seeds=q["seeds"])
    else:
        attacks = None if args.attacks is None else tuple(a for a in args.attacks.split(",") if a)
        unknown = sorted(set(attacks or ()) - set(ATTACKS))
        if unknown:
            raise SystemExit(f"unknown attack(s) {unknown}; choose from {', '.join(ATTACKS)}")
        models = tuple(args.models.split(","))
        unknown = sorted(set(models) - {"tabular_mlp", *VARIANTS})
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; choose from tabular_mlp, {', '.join(VARIANTS)}")
        plan = {m: (args.seeds or SEEDS[m],
                    attacks or (CNN_ATTACKS if VARIANTS.get(m, (m,))[0] == "cnn" else tuple(ATTACKS)))
                for m in models}
        pipeline, rule_params = _assignments(args.set, "--set"), _assignments(args.rule, "--rule")
        _check_overrides(models, pipeline, rule_params)
        result = measure(FMNIST, plan, FRACTIONS, args.rounds, args.workers,
                         ablation_seeds=0 if args.no_ablation else args.seeds or ABLATION_SEEDS,
                         pipeline=pipeline, rule_params=rule_params)
    result["quick"] = args.quick
    result["command"] = "python -m bench adversary " + " ".join(argv if argv is not None else sys.argv[2:])
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for entry in result["models"].values():  # each model says how and when it was run (--keep mixes runs)
        entry.update(command=result["command"], measured_at=now)
    result["name"] = args.save_as
    previous = RESULTS / f"{args.save_as}.json"
    if args.keep and previous.exists():
        old = json.loads(previous.read_text())
        kept = {m: e for m, e in old["models"].items() if m not in result["models"]}
        result["models"] = {**kept, **result["models"]}
        if kept and not result["ablation"]:
            result["ablation"] = old["ablation"]
        result["goals"] = goals(result)
    result["part_measured_at"] = {m: e.get("measured_at") for m, e in result["models"].items()}
    return finish(args.save_as, result, started, plot, report_console)
