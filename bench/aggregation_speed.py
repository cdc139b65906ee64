"""Aggregation speed against the plainest numpy/scipy/sklearn expression of the same math.

Every rule runs on the same (n, d) float32 updates as its baseline, in the same process, and the
ratio ours/baseline is reported (goal <= 1.3). Baselines:

  fedavg, trust   np.average(x, axis=0, weights=...)
  krum            float64 Gram distances, np.sort per row, argmin
  multikrum       the same, then the mean of the m best rows
  median          np.median(x, axis=0)
  trimmed_mean    scipy.stats.trim_mean(x, beta, axis=0)
  geomed          Weiszfeld on the d-dimensional data, as many steps as ours took
  bulyan          Gram distances, Krum re-sorted after each pick, np.sort + trimmed middle mean
  centered_clip   medoid start, clipping steps on the d-dimensional data
  clustering      sklearn KMeans(2) + mean of the largest cluster

BLAS threads are pinned (``--threads``, default 1) before numpy is imported, so ours and the
baselines run under the same conditions. ``--robustness`` adds a table of each rule's error
against the honest mean under each attack of :mod:`learning.attacks` (synthetic updates), the
evidence behind ``DEFAULT_RULE``. Writes ``bench/results/aggregation_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

FULL_SIZES = [(20, 100_000), (100, 100_000), (100, 1_000_000), (500, 100_000)]
QUICK_SIZES = [(20, 10_000), (50, 20_000)]
MEMORY_BUDGET = 12 << 30


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes only (seconds)")
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads for ours and baselines")
    p.add_argument("--robustness", action="store_true", help="also tabulate error under attacks")
    p.add_argument("--out", default=str(Path(__file__).with_name("results") / "aggregation_speed.json"))
    return p.parse_args(argv)


# One BLAS thread unless told otherwise, set before numpy loads (when this module loads it first);
# main() also limits the pools at run time, so the setting holds under `python -m bench` too.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np
import scipy.stats

from learning.aggregation import RULE_NAMES, aggregate
from learning.attacks import MODEL_ATTACKS, craft_updates


def _plain_sq_dists(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    sq = np.einsum("ij,ij->i", x64, x64)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x64 @ x64.T), 0.0)


def _plain_krum_scores(dist: np.ndarray, f: int) -> np.ndarray:
    return np.sort(dist, axis=1)[:, 1:dist.shape[0] - f - 1].sum(axis=1)


def base_krum(x: np.ndarray, f: int) -> np.ndarray:
    return x[np.argmin(_plain_krum_scores(_plain_sq_dists(x), f))]


def base_multikrum(x: np.ndarray, f: int) -> np.ndarray:
    best = np.argsort(_plain_krum_scores(_plain_sq_dists(x), f))[:x.shape[0] - f]
    return x[best].mean(axis=0)


def base_bulyan(x: np.ndarray, f: int) -> np.ndarray:
    dist = _plain_sq_dists(x)
    left, chosen = list(range(x.shape[0])), []
    for _ in range(x.shape[0] - 2 * f):
        sub = dist[np.ix_(left, left)]
        pick = left[int(np.argmin(_plain_krum_scores(sub, f) if len(left) > f + 2 else np.zeros(len(left))))]
        chosen.append(pick)
        left.remove(pick)
    srt = np.sort(x[chosen], axis=0)
    return srt[f:len(chosen) - f].mean(axis=0)


def base_geomed(x: np.ndarray, steps: int) -> np.ndarray:
    v = x.mean(axis=0, dtype=np.float64)
    nu = 1e-6 * float(np.median(np.linalg.norm(x, axis=1)))
    for _ in range(steps):
        beta = 1.0 / np.maximum(np.linalg.norm(x - v, axis=1), nu)
        v = (beta @ x) / beta.sum()
    return v


def base_centered_clip(x: np.ndarray, iters: int = 3) -> np.ndarray:
    v = x[int(np.argmin(np.sqrt(_plain_sq_dists(x)).sum(axis=1)))].astype(np.float64)
    for _ in range(iters):
        diff = x - v
        norms = np.linalg.norm(diff, axis=1)
        factor = np.minimum(1.0, np.median(norms) / np.maximum(norms, 1e-300))
        v = v + (diff * factor[:, None]).mean(axis=0)
    return v


def base_clustering(x: np.ndarray) -> np.ndarray:
    from sklearn.cluster import KMeans
    labels = KMeans(n_clusters=2, n_init=3, random_state=0).fit_predict(x)
    return x[labels == np.argmax(np.bincount(labels))].mean(axis=0)


def _interleaved(ours, base, repeats: int) -> tuple[float, float]:
    """Best-of-``repeats`` times of both, alternating runs so background load hits both alike."""
    t_ours = t_base = float("inf")
    for _ in range(repeats):
        for which, fn in (("ours", ours), ("base", base)):
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            if which == "ours":
                t_ours = min(t_ours, elapsed)
            else:
                t_base = min(t_base, elapsed)
    return t_ours, t_base


def _peak_bytes(n: int, d: int) -> int:
    """Largest working set of a baseline: float64 copies of the data plus ``x - v`` temporaries."""
    return 3 * 8 * n * d


def _cases(x: np.ndarray) -> dict[str, tuple]:
    """(ours, baseline) callables per rule on the updates ``x``."""
    n = x.shape[0]
    rng = np.random.default_rng(1)
    w = np.ones(n)
    trust = rng.uniform(0.5, 1.0, n)
    f_krum, f_bulyan, trim = (n - 3) // 2, (n - 3) // 4, int(0.1 * n)
    steps = aggregate("geomed", x).info["iterations"]
    return {
        "fedavg": (lambda: aggregate("fedavg", x, w), lambda: np.average(x, axis=0, weights=w)),
        "trust": (lambda: aggregate("trust", x, w, trust=trust), lambda: np.average(x, axis=0, weights=w * trust)),
        "krum": (lambda: aggregate("krum", x), lambda: base_krum(x, f_krum)),
        "multikrum": (lambda: aggregate("multikrum", x), lambda: base_multikrum(x, f_krum)),
        "median": (lambda: aggregate("median", x), lambda: np.median(x, axis=0)),
        "trimmed_mean": (lambda: aggregate("trimmed_mean", x), lambda: scipy.stats.trim_mean(x, trim / n, axis=0)),
        "geomed": (lambda: aggregate("geomed", x), lambda: base_geomed(x, steps)),
        "bulyan": (lambda: aggregate("bulyan", x), lambda: base_bulyan(x, f_bulyan)),
        "centered_clip": (lambda: aggregate("centered_clip", x), lambda: base_centered_clip(x)),
        "clustering": (lambda: aggregate("clustering", x), lambda: base_clustering(x)),
    }


def speed_table(sizes: list[tuple[int, int]], repeats: int) -> list[dict]:
    rows: list[dict] = []
    for n, d in sizes:
        if _peak_bytes(n, d) > MEMORY_BUDGET:
            print(f"skip ({n}, {d}): baselines would need ~{_peak_bytes(n, d) >> 30} GiB", flush=True)
            rows.append({"n": n, "d": d, "skipped": "memory"})
            continue
        x = np.random.default_rng(0).standard_normal((n, d), dtype=np.float32)
        x[: n // 10] *= 5.0                                   # a few outliers
        cases = _cases(x)
        assert set(cases) == set(RULE_NAMES)
        for rule, (ours, base) in cases.items():
            t_ours, t_base = _interleaved(ours, base, repeats)
            rows.append({"n": n, "d": d, "rule": rule, "ours_s": t_ours, "baseline_s": t_base,
                         "ratio": t_ours / t_base})
            print(f"({n:4d}, {d:8d}) {rule:14s} ours {t_ours:8.3f}s  baseline {t_base:8.3f}s  "
                  f"ratio {t_ours / t_base:5.2f}", flush=True)
    return rows


SCENARIOS = [("none", 0.0)] + [(a, frac) for a in MODEL_ATTACKS for frac in (0.2, 0.4)]


def _synthetic(n: int, d: int, snr: float, rng: np.random.Generator) -> np.ndarray:
    """Non-IID updates: shared direction (norm ``snr``), one of 3 group shifts (norm 0.5), noise (norm 1)."""
    mu = rng.normal(size=d) * (snr / np.sqrt(d))
    groups = rng.normal(size=(3, d)) * (0.5 / np.sqrt(d))
    return (mu + groups[rng.integers(3, size=n)] + rng.normal(size=(n, d)) / np.sqrt(d)).astype(np.float32)


def robustness_table(seeds: int = 3, n: int = 30, d: int = 2000) -> list[dict]:
    """Relative error to the honest mean, per rule and attack, on synthetic non-IID updates."""
    rules = [r for r in RULE_NAMES if r != "trust"]
    rows = []
    for snr in (1.0, 0.3):
        print(f"\nrelative error to the honest mean, signal/noise {snr} (lower is better)")
        print(f"{'attack':>16s} " + " ".join(f"{r[:9]:>9s}" for r in rules))
        for attack, frac in SCENARIOS:
            errs: dict[str, list[float]] = {rule: [] for rule in rules}
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                x = _synthetic(n, d, snr, rng)
                bad = round(frac * n)
                honest = x[bad:].astype(np.float64).mean(axis=0)
                if bad:
                    x[:bad] = craft_updates(attack, x[:bad], x[bad:], rng)
                for rule, e in errs.items():
                    e.append(float(np.linalg.norm(aggregate(rule, x).vector - honest) / np.linalg.norm(honest)))
            means = {rule: float(np.mean(e)) for rule, e in errs.items()}
            rows += [{"snr": snr, "attack": attack, "byzantine": frac, "rule": r, "rel_error": v}
                     for r, v in means.items()]
            print(f"{attack:>11s} {frac:4.0%} " + " ".join(f"{means[r]:9.3f}" for r in rules))
    return rows


def main(argv: list[str] | None = None) -> dict:
    from threadpoolctl import threadpool_limits

    args = _parse(argv)
    with threadpool_limits(limits=args.threads):
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
        report = {"threads": args.threads, "numpy": np.__version__,
                  "speed": speed_table(sizes, repeats=5 if args.quick else 3)}
        if args.robustness:
            report["robustness"] = robustness_table(seeds=2 if args.quick else 3)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()


def report(result: dict) -> str:
    from bench.common import md_table

    sizes = sorted({(r["n"], r["d"]) for r in result["speed"]})
    rules = list(dict.fromkeys(r["rule"] for r in result["speed"]))
    ratio = {(r["rule"], r["n"], r["d"]): r["ratio"] for r in result["speed"]}
    rows = [[rule, *[ratio.get((rule, n, d)) for n, d in sizes]] for rule in rules]
    return f"""## Aggregation speed against the plainest numpy expression of the same math

Ratio = our rule's time / the baseline's (see the module docstring for each baseline), same
updates, same process, {result['threads']} BLAS thread(s). Goal <= 1.3. Command:
`python -m bench aggregation_speed`.

{md_table(["rule", *[f"n={n}, d={d:,}" for n, d in sizes]], rows)}
"""
