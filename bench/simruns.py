"""Many simulator runs for the benchmarks: seeded configurations, a process pool, per-round records.

Runs are independent and CPU-bound and the machine has two cores, so they go to a pool of
worker processes, each pinned to one torch/BLAS thread so that two runs never fight over a core.
Workers are *spawned*, not forked: forking a process whose OpenMP pool has run can deadlock.
Every run is a pure function of its :class:`~learning.sim.SimConfig`, so a result never depends
on which worker ran it or in which order.

The fedchain profile used across the benchmarks lives here too (:func:`fedchain`), so every
table compares the same system against its baselines.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bench.common import one_thread_children
from learning.aggregation import DEFAULT_RULE
from learning.sim import RoundStats, SimConfig, Simulator
from learning.train import local_train

LR_BETA = 10.0
"""beta of eta_t = eta_0 / sqrt(t + beta): the step decays to half its first size after 3*beta rounds."""


@dataclass(frozen=True)
class RunSpec:
    """One simulator run: a label shared by its seeds, the SimConfig fields, and what to record."""

    label: str
    config: dict[str, Any]
    meter: bool = False            # count each round's CPU seconds of local work (energy)
    tags: dict[str, Any] = field(default_factory=dict)   # free-form grouping keys, echoed back


def fedchain(base: dict[str, Any], topk: float = 0.05, dtype: str = "float16") -> dict[str, Any]:
    """FedAvg config ``base`` turned into fedchain's: robust default rule, top-k with error feedback,
    and the decaying step eta_t = eta_0 / sqrt(t + beta) of paper eq. 6.

    eta_0 = lr * sqrt(beta), so round 0 takes the same step as FedAvg with ``lr`` and later
    rounds smaller ones: the comparison is then about the schedule, not about a larger step.
    """
    return {**base, "rule": DEFAULT_RULE, "topk_fraction": topk, "compress_dtype": dtype,
            "error_feedback": True, "lr_schedule": "inv_sqrt", "lr_beta": LR_BETA,
            "lr": base["lr"] * math.sqrt(LR_BETA)}


def with_seeds(label: str, config: dict[str, Any], seeds: int, meter: bool = False,
               **tags: Any) -> list[RunSpec]:
    """The same run for seeds 0..seeds-1 (the seed drives partition, init, batches and noise)."""
    return [RunSpec(label, {**config, "seed": s}, meter, tags) for s in range(seeds)]


# ----------------------------------------------------------------------------- running




def run_all(specs: list[RunSpec], workers: int = 2, verbose: bool = True) -> list[dict[str, Any]]:
    """Run every spec (in a pool of ``workers`` spawned processes); records in the order of ``specs``."""
    if not specs:
        return []
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    records: list[dict[str, Any] | None] = [None] * len(specs)
    with one_thread_children(), ProcessPoolExecutor(max_workers=min(workers, len(specs)),
                                            mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(simulate, spec): i for i, spec in enumerate(specs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            records[i] = future.result()
            if verbose:
                rec = records[i]
                print(f"  [{done}/{len(specs)}] {rec['label']} seed {rec['config']['seed']}: "
                      f"acc {rec['final_accuracy']:.4f} in {rec['total_wall']:.1f} s", flush=True)
    return [r for r in records if r is not None]


def simulate(spec: RunSpec) -> dict[str, Any]:
    """Worker: run one spec and return a compact, JSON-ready per-round record."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    cfg = SimConfig(**spec.config)
    sim = MeteredSimulator(cfg) if spec.meter else Simulator(cfg)
    speeds = [n.speed for n in sim.nodes]
    result = sim.run()
    rounds = result.rounds
    record: dict[str, Any] = {
        "label": spec.label, "tags": spec.tags, "config": result.config.to_dict(), "dim": sim.dim,
        "accuracy": [r.accuracy for r in rounds], "loss": [r.loss for r in rounds],
        "train_loss": [r.train_loss for r in rounds], "sim_time": [r.sim_time for r in rounds],
        "bytes_sent": [r.bytes_sent for r in rounds], "dense_bytes": [r.dense_bytes for r in rounds],
        "num_updates": [r.num_updates for r in rounds], "num_accepted": [r.num_accepted for r in rounds],
        "dropped_stale": [r.dropped_stale for r in rounds], "max_epsilon": [r.max_epsilon for r in rounds],
        "wall_time": [r.wall_time for r in rounds],
        # a synchronous round lasts as long as its slowest participant takes (simulated seconds)
        "straggler_time": [max(speeds[i] for i in r.nodes) for r in rounds],
        "speeds": speeds,
        "final_accuracy": result.final_accuracy(),
        "total_wall": time.perf_counter() - started,
    }
    if spec.meter:
        record["cpu_train"] = [c[0] for c in sim.cpu_rounds]
        record["cpu_compress"] = [c[1] for c in sim.cpu_rounds]
    return record


class _MeteredCompressor:
    """A node's compressor that adds the CPU time of each compression to the simulator's meter."""

    def __init__(self, inner: Any, meter: MeteredSimulator) -> None:
        self.inner = inner
        self.meter = meter

    def compress(self, delta: np.ndarray) -> Any:
        t0 = time.process_time()
        out = self.inner.compress(delta)
        self.meter.cpu_compress += time.process_time() - t0
        return out


class MeteredSimulator(Simulator):
    """The simulator, plus the CPU seconds (``time.process_time``) of every node's local work.

    Local work is what a device does itself: training from the global model, clipping and noise
    (both inside ``_train``), and top-k compression with error feedback (wrapped compressors).
    Evaluation and aggregation are not billed to the devices. ``cpu_rounds`` holds one
    (train, compress) pair of CPU seconds per aggregation, summed over that round's nodes.
    """

    def __init__(self, cfg: SimConfig) -> None:
        super().__init__(cfg)
        self.cpu_train = 0.0
        self.cpu_compress = 0.0
        self.cpu_rounds: list[tuple[float, float]] = []
        # One untimed step first, so one-time costs (thread pools, allocator, first autograd
        # pass) are not billed to whichever node trains first. The shared model is reloaded
        # from the global vector before every job, so this leaves no trace in the run.
        first = self.nodes[0]
        local_train(self.model, first.x[:cfg.batch_size or len(first.x)], first.y[:cfg.batch_size or len(first.y)],
                    start=self.global_flat, lr=cfg.lr, optimizer=cfg.optimizer)
        for node in self.nodes:
            if node.compressor is not None:
                node.compressor = _MeteredCompressor(node.compressor, self)  # type: ignore[assignment]

    def _train(self, node: Any) -> Any:
        t0 = time.process_time()
        job = super()._train(node)
        self.cpu_train += time.process_time() - t0
        return job

    def _aggregate(self, jobs: list, *args: Any) -> RoundStats:
        stats = super()._aggregate(jobs, *args)
        self.cpu_rounds.append((self.cpu_train, self.cpu_compress))
        self.cpu_train = self.cpu_compress = 0.0
        return stats


# ----------------------------------------------------------------------------- summaries


def by_label(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records grouped by label, labels in first-seen order, seeds in order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        out.setdefault(rec["label"], []).append(rec)
    return out


def mean_std(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one value) of the non-None values."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "n": 0, "values": []}
    arr = np.asarray(vals)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "n": int(arr.size), "values": vals}


def pm(stat: dict[str, Any], scale: float = 100.0, digits: int = 2) -> str:
    """``mean ± std`` of a :func:`mean_std` result, scaled (default: fractions to percent)."""
    if stat.get("mean") is None:
        return "-"
    return f"{stat['mean'] * scale:.{digits}f} ± {stat['std'] * scale:.{digits}f}"


def first_reaching(values: list[float | None], target: float) -> int | None:
    """1-based index of the first value >= target (a round number), or None if never reached."""
    return next((i + 1 for i, v in enumerate(values) if v is not None and v >= target), None)


def curve_stats(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-round mean and std across seeds of ``key`` (runs truncated to the shortest)."""
    length = min(len(r[key]) for r in records)
    arr = np.array([[np.nan if v is None else v for v in r[key][:length]] for r in records], dtype=float)
    return arr.mean(axis=0), arr.std(axis=0)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display on a benchmark machine)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
