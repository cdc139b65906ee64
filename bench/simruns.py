"""Many simulator runs for the benchmarks: seeded configurations, a process pool, per-round records.

Runs are independent and CPU-bound and the machine has two cores, so they go to a pool of
worker processes, each pinned to one torch/BLAS thread so that two runs never fight over a core.
Workers are *spawned*, not forked: forking a process whose OpenMP pool has run can deadlock.
Every run is a pure function of its :class:`~learning.sim.SimConfig`, so a result never depends
on which worker ran it or in which order.

The product profile used across the benchmarks lives here too, read from the genesis defaults
(:data:`PRODUCT`, :func:`fedchain`), and so does the FedAvg baseline (:data:`FEDAVG`): every table
compares the settings a chain runs by default against the same baseline.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import one_thread_children
from learning.settings import FLSettings
from learning.sim import RoundStats, SimConfig, Simulator
from learning.train import local_train

PRODUCT = FLSettings()
"""The genesis defaults (what ``fedchain testnet create`` writes): the product every benchmark's
"fedchain" runs."""
TASK_KEYS = frozenset({"dataset", "data_dir", "partition", "dirichlet_alpha", "clients", "val_fraction", "model",
                       "seed", "eval_samples", "local_epochs", "batch_size", "lr", "optimizer", "momentum"})
"""FL settings that describe the task (data, model, local training): a benchmark chooses them per
data set, for fedchain and its baselines alike. Every other FL setting is the product's."""
FEDAVG = {"rule": "fedavg", "topk_fraction": None, "clip_norm": None, "noise_multiplier": 0.0,
          "lr_schedule": "constant"}
"""FedAvg as McMahan et al. run it: dense float32 updates, no clipping or noise, a constant step."""


@dataclass(frozen=True)
class RunSpec:
    """One simulator run: a label shared by its seeds, the SimConfig fields, and what to record."""

    label: str
    config: dict[str, Any]
    meter: bool = False            # count each round's CPU seconds of local work (energy)
    tags: dict[str, Any] = field(default_factory=dict)   # free-form grouping keys, echoed back


def fedchain(task: dict[str, Any]) -> dict[str, Any]:
    """The product on ``task``: the task's FL settings and simulation knobs, and the genesis
    defaults for the whole pipeline (rule, clip, noise, top-k encoding, error feedback, schedule,
    staleness). A benchmark that changes part of the pipeline says so explicitly on top of this."""
    fl_names = {f.name for f in dataclasses.fields(FLSettings)}
    pipeline = sorted(k for k in task if k in fl_names and k not in TASK_KEYS)
    if pipeline:
        raise ValueError(f"a task may not set the product's pipeline settings {pipeline}")
    return dict(task)


def fedavg(task: dict[str, Any]) -> dict[str, Any]:
    """The FedAvg baseline on ``task``."""
    return {**task, **FEDAVG}


def describe(config: dict[str, Any]) -> str:
    """The pipeline of a run, in words, for report headers."""
    s = SimConfig.of(**config).fl
    dp = (f"clip {s.clip_norm:g}, noise multiplier {s.noise_multiplier:g}" if s.clip_norm is not None
          else "no clipping or noise")
    enc = (f"top-{100 * s.topk_fraction:g}% {s.encoding}{' with error feedback' if s.error_feedback else ''}"
           if s.topk_fraction is not None else "dense float32")
    lr = (f"eta_t = {s.lr:g}/sqrt(t + {s.lr_beta:g})" if s.lr_schedule == "inv_sqrt" else f"constant lr {s.lr:g}")
    return f"rule `{s.rule}`, {dp}, {enc}, {lr}"


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
    """Worker: run one spec and return a compact, JSON-ready per-round record (one thread: the
    pool spawns its workers inside :func:`bench.common.one_thread_children`)."""
    started = time.perf_counter()
    cfg = SimConfig.of(**spec.config)
    sim = MeteredSimulator(cfg) if spec.meter else Simulator(cfg)
    speeds = [n.speed for n in sim.nodes]
    result = sim.run()
    rounds = result.rounds
    record: dict[str, Any] = {
        "label": spec.label, "tags": spec.tags, "config": result.config.to_dict(), "dim": sim.dim,
        "accuracy": [r.accuracy for r in rounds], "loss": [r.loss for r in rounds],
        "train_loss": [r.train_loss for r in rounds], "sim_time": [r.sim_time for r in rounds],
        "bytes_sent": [r.bytes_sent for r in rounds], "dense_bytes": [r.dense_bytes for r in rounds],
        "uploaded_bytes": [r.uploaded_bytes for r in rounds], "candidates": [r.candidates for r in rounds],
        "nodes": [r.nodes for r in rounds], "num_byzantine": [r.num_byzantine for r in rounds],
        "false_neg": [r.false_neg for r in rounds], "false_pos": [r.false_pos for r in rounds],
        "byzantine": result.byzantine,
        "num_updates": [r.num_updates for r in rounds], "num_accepted": [r.num_accepted for r in rounds],
        "dropped_stale": [r.dropped_stale for r in rounds], "max_epsilon": [r.max_epsilon for r in rounds],
        "wall_time": [r.wall_time for r in rounds], "skipped": [r.skipped for r in rounds],
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


class MeteredSimulator(Simulator):
    """The simulator, plus the CPU seconds (``time.process_time``) of every node's local work.

    Local work is what a device does itself: its release (training from the global model,
    clipping and noise) and sending it (top-k compression with error feedback within the norm
    bound). Evaluation and aggregation are not billed to the devices. ``cpu_rounds`` holds one
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
        first, s = self.nodes[0].client, cfg.fl
        rows = s.batch_size or len(first.x)
        local_train(self.model, first.x[:rows], first.y[:rows], start=self.global_flat, lr=s.lr, optimizer=s.optimizer)

    def _train(self, node: Any) -> Any:
        t0 = time.process_time()
        job = super()._train(node)
        self.cpu_train += time.process_time() - t0
        return job

    def _send(self, jobs: list) -> list:
        t0 = time.process_time()
        sent = super()._send(jobs)
        self.cpu_compress += time.process_time() - t0
        return sent

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
