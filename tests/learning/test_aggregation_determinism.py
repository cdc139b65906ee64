"""Every output field of every rule is bit-identical whatever the BLAS kernel and thread count.

Delegates on different CPUs re-run a block's aggregation and must agree bit for bit. OpenBLAS
picks a kernel per CPU generation; ``OPENBLAS_CORETYPE`` forces one, so the CPUs of a mixed
fleet can be imitated on one machine. Each setting runs in its own process (OpenBLAS reads it when
numpy loads). A kernel this CPU cannot execute (e.g. SkylakeX without AVX-512) dies with a signal
and is left out; the test fails unless at least two kernels that run give different raw float64
``x @ x.T`` bits, because otherwise it would prove nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from learning.attacks import craft_updates

ROOT = Path(__file__).resolve().parents[2]
KERNELS = ("Haswell", "Prescott", "Sandybridge", "Nehalem")
THREADS = (1, 2)


def _recorded_round(path: Path) -> None:
    """20 updates of 20,000 values: non-IID honest clients (some sparse, with -0.0), a jittered
    IPM group, two ALIE near copies, a scaled sign flip, a sender claiming 2^64 - 1 samples and
    one with zero weight; staleness 0-4, trust, and the values ``evaluate`` returns in call order;
    a second round with its reference (the way the model has been moving)."""
    rng = np.random.default_rng(2024)
    n, d = 20, 20_000
    mean = rng.normal(size=d) * 0.05
    groups = rng.normal(size=(3, d)) * 0.05
    x = (mean + groups[rng.integers(3, size=n)] + 0.1 * rng.normal(size=(n, d))).astype(np.float32)
    x[3:7] *= rng.random((4, d)) < 0.3                             # top-k style sparse rows
    x[5] = -x[5]                                                   # their zeros become -0.0
    x[10:13] = craft_updates("ipm", x[10:13], x[:10], rng, jitter=1.0)
    x[13:15] = craft_updates("alie", x[13:15], x[:10], rng)
    x[15] = -4.0 * x[15]
    counts = rng.integers(200, 3000, n).astype(np.float64)
    counts[16] = 2.0 ** 64 - 1
    counts[17] = 0.0
    # a second round as the product's pipeline makes them (DP noise dominates), with six IPM
    # attackers who each add their own noise: it reaches the shared-offset test
    signal = rng.normal(size=d) * 0.002
    noisy = (signal + 0.01 * rng.normal(size=(n, d))).astype(np.float32)
    noisy[14:] = craft_updates("ipm", noisy[14:], noisy[:14], rng, eps=1.0, jitter=1.0)
    np.savez(path, updates=x, counts=counts, staleness=rng.integers(0, 5, n), trust=rng.uniform(0.1, 1.0, n),
             evaluate=np.array([0.71, 0.74, 0.74, 0.70, 0.73]), offset_round=noisy,
             reference=(3 * signal + 0.001 * rng.normal(size=d)).astype(np.float32))


def _child(path: Path, kernel: str, threads: int) -> dict | None:
    """Digests from one process under ``kernel``; None if the kernel cannot run on this CPU."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_CORETYPE": kernel,
           "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "tests.learning.kernel_child", str(path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    if proc.returncode < 0:                  # killed by a signal: an instruction this CPU lacks
        return None
    assert proc.returncode == 0, f"{kernel}/{threads}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_field_is_bit_identical_across_blas_kernels_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "round.npz"
    _recorded_round(path)
    runs = {(k, t): _child(path, k, t) for k in KERNELS for t in THREADS}
    ran = {key: out for key, out in runs.items() if out is not None}
    assert len({k for k, _ in ran}) >= 2, f"fewer than two kernels run on this CPU: {sorted(ran)}"
    raw = {out.pop("raw_blas_gram") for out in ran.values()}
    assert len(raw) >= 2, ("every kernel that runs here gives the same float64 x @ x.T bits, so this test "
                           f"cannot show independence from the kernel (ran: {sorted(ran)})")
    reference_key, reference = next(iter(ran.items()))
    for key, out in ran.items():
        for name, fields in reference.items():
            assert out[name] == fields, f"{name} differs between {reference_key} and {key}"


def test_the_recorded_rounds_exercise_the_drift_and_direction_tests_shared_offset_near_copy_and_feature_clip(
        tmp_path: Path) -> None:
    """The rounds above reach every phase of the default rule, so the kernel comparison covers
    them all: the noisy IPM group is no near copy, but points against the reference and, without
    one, against the majority; with the direction test off too, it shares an offset; and with a
    fine layout the feature clip scales some groups."""
    from learning.aggregation import aggregate

    path = tmp_path / "round.npz"
    _recorded_round(path)
    rec = np.load(path)
    assert aggregate("clustering", rec["updates"], np.ones(20), seed=3).info["near_copies"] >= 2
    for params, count, reason in (({"reference": rec["reference"]}, "against_drift",
                                   "clustering: against the model's drift"),
                                  ({}, "against", "clustering: against the majority"),
                                  ({"direction": 0.0}, "shared_offset", "clustering: shared offset")):
        res = aggregate("clustering", rec["offset_round"], np.ones(20), seed=3, **params)
        assert res.info[count] == 6
        assert set(res.reasons[14:]) == {reason} and all(r == "" for r in res.reasons[:14])
    groups = np.arange(rec["updates"].shape[1]) // 4   # the layout the kernel comparison clips by
    clipped = aggregate("clustering", rec["updates"], np.ones(20), seed=3, groups=groups).vector
    assert clipped.tobytes() != aggregate("clustering", rec["updates"], np.ones(20), seed=3).vector.tobytes()
