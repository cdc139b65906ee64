"""Shared plumbing of the robustness benchmarks (attacks, detection, ablation, flower).

One simulator run is :func:`simulate`: build a :class:`learning.sim.Simulator` from a config dict
(optionally with an aggregator that replaces or wraps :func:`learning.aggregation.aggregate`),
run it, then probe the final global model: clean test accuracy per round, accuracy on FGSM
copies of the test set (evasion), backdoor success when the attack is a backdoor. Runs are
independent and deterministic by seed, so :func:`run_all` spreads them over worker processes.

Workers are *spawned*, not forked: a forked child of a process that already started torch's
thread pools can deadlock, and a fresh interpreter takes its thread limits from the environment
set here before it imports numpy.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from bench.common import THREAD_VARS, one_thread_children
from bench.simruns import fedchain

# The tasks (data, model, local training); everything else is the product's pipeline, the genesis
# defaults (bench.simruns.fedchain), with the rule a run compares set on top.
# Fast configuration: scikit-learn digits (1 437 training images, 8x8), for full cross products.
DIGITS = fedchain({"dataset": "digits", "partition": "dirichlet", "dirichlet_alpha": 0.5, "num_nodes": 20,
                   "model": "tabular_mlp", "lr": 0.1, "momentum": 0.9, "local_epochs": 2, "batch_size": 16})
# Main configuration: Fashion-MNIST (60 000 training images), the product's 64-unit MLP, one
# local epoch per round (the product default is 4; one keeps the suite inside its time budget).
FMNIST = fedchain({"dataset": "fashion_mnist", "partition": "dirichlet", "dirichlet_alpha": 0.5, "num_nodes": 20,
                   "model": "tabular_mlp", "lr": 0.1, "momentum": 0.9, "local_epochs": 1, "batch_size": 64})
BACKDOOR_TARGET = 0   # learning.attacks' default target label
BACKDOORS = ("backdoor", "dba", "constrain_scale")
"""Attacks that plant the trigger (constrain_scale trains on backdoored data, then boosts)."""


def pin_threads(n: int) -> None:
    """Limit BLAS/OpenMP/torch threads of this process and of processes it spawns later: the
    libraries loaded already through ``threadpoolctl``, the rest (torch, loaded only by a CNN run,
    reads ``OMP_NUM_THREADS``) through the environment."""
    from threadpoolctl import threadpool_limits

    for var in THREAD_VARS:
        os.environ[var] = str(n)
    threadpool_limits(n)


def _worker_init() -> None:
    pin_threads(1)


def run_all(fn: Callable[[Any], dict], jobs: Sequence[Any], workers: int) -> list[dict]:
    """``[fn(job) for job in jobs]``, in order, on ``workers`` spawned processes of one thread each.

    ``workers <= 1`` runs in this process (handy for debugging; results are identical).
    """
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    with one_thread_children():
        ctx = multiprocessing.get_context("spawn")
        rows, step, started = [], max(1, len(jobs) // 10), time.monotonic()
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            for done, row in enumerate(pool.map(fn, jobs), 1):
                rows.append(row)
                if done % step == 0 or done == len(jobs):
                    print(f"  {done}/{len(jobs)} runs ({time.monotonic() - started:.0f} s)", flush=True)
        return rows


def _mix_accuracy(correct_clean: np.ndarray, correct_adv: np.ndarray, share: float, seed: int) -> float:
    """Accuracy when a random ``share`` of the test queries are the attacker's FGSM copies."""
    rng = np.random.default_rng([seed, 1000])
    chosen = np.zeros(correct_clean.size, dtype=bool)
    chosen[rng.choice(correct_clean.size, round(share * correct_clean.size), replace=False)] = True
    return float(np.where(chosen, correct_adv, correct_clean).mean())


def probe_model(sim: Any, eps: Sequence[float], evasion_shares: Sequence[float]) -> dict:
    """Evasion and backdoor measurements on the simulator's final global model."""
    from learning.attacks import backdoor_success_rate
    from learning.evasion import fgsm
    from learning.models import set_flat

    cfg, test, shape = sim.cfg, sim.fed.test, sim.fed.pool.image_shape
    set_flat(sim.model, sim.global_flat)

    def predict(x: np.ndarray) -> np.ndarray:
        return sim.model.logits(np.ascontiguousarray(x, np.float32)).argmax(1)

    clip = (0.0, 1.0) if shape is not None else None
    correct = predict(test.x) == test.y
    out: dict[str, Any] = {"fgsm_accuracy": {}, "evasion_mix": {}}
    for e in eps:
        adv_correct = predict(fgsm(sim.model, test.x, test.y, e, clip=clip)) == test.y
        out["fgsm_accuracy"][str(e)] = float(adv_correct.mean())
        out["evasion_mix"][str(e)] = {str(s): _mix_accuracy(correct, adv_correct, s, cfg.fl.seed) for s in evasion_shares}
    if cfg.attack in BACKDOORS:        # the distributed backdoor is tested with the whole trigger
        target = cfg.attack_params.get("target_label", BACKDOOR_TARGET)
        out["backdoor_success"] = backdoor_success_rate(predict, test.x, test.y, target, shape,
                                                        size=cfg.attack_params.get("size", 3),
                                                        value=cfg.attack_params.get("value", 1.0),
                                                        at=cfg.attack_params.get("at", "corner"))
    return out


def simulate(config: dict, aggregator: Any = None, eps: Sequence[float] = (), evasion_shares: Sequence[float] = (),
             keep_rounds: bool = False) -> dict:
    """Run one federation and measure it (see the module docstring).

    ``aggregator`` (optional) is passed to the simulator; if it has ``bind(sim)`` it is called
    first (to learn e.g. the layer shapes), and its ``report()`` is stored under ``aggregator``.
    ``keep_rounds`` keeps each round's ground truth, scores and verdict counts.
    """
    from learning.aggregation import aggregate
    from learning.sim import SimConfig, Simulator

    started = time.perf_counter()
    sim = Simulator(SimConfig.of(**config), aggregator=aggregate if aggregator is None else aggregator)
    if hasattr(aggregator, "bind"):
        aggregator.bind(sim)
    result = sim.run()
    row: dict[str, Any] = {
        "config": config, "accuracy": [r.accuracy for r in result.rounds], "final_accuracy": result.final_accuracy(),
        "summary": result.summary(), "byzantine_nodes": result.byzantine,
        "max_epsilon": result.rounds[-1].max_epsilon if result.rounds else 0.0,
        **probe_model(sim, eps, evasion_shares)}
    if keep_rounds:
        row["rounds"] = [{"byzantine": r.byzantine, "scores": [s if math.isfinite(s) else None for s in r.scores],
                          "accepted": r.num_accepted, "tp": r.true_pos, "fp": r.false_pos, "fn": r.false_neg,
                          "tn": r.true_neg, "skipped": bool(r.skipped), "standing": r.standing,
                          "verdicts": r.verdicts, "claims": r.claims}
                         for r in result.rounds]
    if hasattr(aggregator, "report"):
        row["aggregator"] = aggregator.report()
    row["wall_time"] = time.perf_counter() - started
    return row


def simulate_job(job: dict) -> dict:
    """:func:`simulate` of one job's keyword arguments (picklable entry point for :func:`run_all`)."""
    return simulate(**job)


def mean_std(values: Iterable[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value) of ``values``."""
    a = np.asarray(list(values), dtype=np.float64)
    if a.size == 0:
        raise ValueError("mean_std of no values")
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if a.size > 1 else 0.0, "n": int(a.size)}


def pm(stat: dict[str, float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean ± std`` text of a :func:`mean_std` result (percent points by default)."""
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def thin_curve(xs: Sequence[float], ys: Sequence[float], points: int = 200) -> tuple[list[float], list[float]]:
    """At most ``points`` evenly spaced samples of a curve (first and last kept), for JSON and plots."""
    if len(xs) <= points:
        return list(xs), list(ys)
    idx = np.unique(np.linspace(0, len(xs) - 1, points).round().astype(int))
    return [float(xs[i]) for i in idx], [float(ys[i]) for i in idx]


def plt_module() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
