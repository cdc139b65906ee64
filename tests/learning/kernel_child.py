"""Run every aggregation rule, and a hierarchical round with each combination, on a recorded round
and print SHA-256 digests of every output field.

Started as ``python -m tests.learning.kernel_child ROUND.npz`` by
``test_aggregation_determinism.py`` under different ``OPENBLAS_CORETYPE`` and
``OPENBLAS_NUM_THREADS`` settings; the environment is read when numpy loads OpenBLAS, so each
setting needs its own process. Also prints a digest of the raw float64 BLAS product ``x @ x.T``
of the same updates, to show that the kernel really changed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sys

import numpy as np

from learning.aggregation import RULE_NAMES, aggregate, staleness_weight
from learning.hierarchy import COMBINE, Hierarchy, run_hierarchy


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fields(res) -> dict[str, str]:
    return {"vector": _digest(res.vector.tobytes()), "accepted": _digest(res.accepted.tobytes()),
            "scores": _digest(res.scores.tobytes()), "reasons": _digest(json.dumps(res.reasons).encode()),
            "info": _digest(repr(sorted(res.info.items())).encode())}


def run(path: str) -> dict[str, object]:
    rec = np.load(path)
    x, counts, trust, values = rec["updates"], rec["counts"], rec["trust"], rec["evaluate"].tolist()
    decay = staleness_weight(rec["staleness"], 0.5)
    weights = counts * decay
    out: dict[str, object] = {"staleness": _digest(np.asarray(decay).tobytes())}
    for rule in RULE_NAMES:
        calls = iter(values)
        res = aggregate(rule, x, weights, trust=trust if rule == "trust" else None, f=4, seed=3,
                        evaluate=(lambda v: next(calls)) if rule == "clustering" else None)
        out[rule] = _fields(res)
    out["clustering_no_evaluate"] = _fields(aggregate("clustering", x, weights, seed=3))
    out["clustering_against"] = _fields(aggregate("clustering", rec["offset_round"], np.ones(len(x)), seed=3))
    out["clustering_drift"] = _fields(aggregate("clustering", rec["offset_round"], np.ones(len(x)), seed=3,
                                                reference=rec["reference"]))
    out["clustering_shared_offset"] = _fields(aggregate("clustering", rec["offset_round"], np.ones(len(x)), seed=3,
                                                        direction=0.0))
    groups = np.arange(x.shape[1]) // 4         # a feature layout fine enough that the clip scales groups
    calls = iter(values)
    out["clustering_feature_clip"] = _fields(aggregate("clustering", x, weights, seed=3, groups=groups,
                                                       evaluate=lambda v: next(calls)))
    senders = [f"{i:064x}" for i in range(len(x))]
    for method in COMBINE:                   # a hierarchical round: clusters of 5, each combination
        calls = itertools.cycle(values)
        h = run_hierarchy(aggregate, Hierarchy(4, 5, method), "clustering", {}, x, weights, trust, senders, 3,
                          lambda v: next(calls))
        out[f"hierarchy_{method}"] = {
            "vector": _digest(h.vector.tobytes()), "accepted": _digest(h.accepted.tobytes()),
            "scores": _digest(h.scores.tobytes()), "reasons": _digest(json.dumps(h.reasons).encode()),
            "partials": _digest(b"".join(p.vector.tobytes() + np.float64(p.weight).tobytes() + bytes([p.kept])
                                         for p in h.partials if p.vector is not None))}
    x64 = x.astype(np.float64)
    out["raw_blas_gram"] = _digest((x64 @ x64.T).tobytes())
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
