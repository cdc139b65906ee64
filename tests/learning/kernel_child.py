"""Run every aggregation rule on a recorded round and print SHA-256 digests of every output field.

Started as ``python -m tests.learning.kernel_child ROUND.npz`` by
``test_aggregation_determinism.py`` under different ``OPENBLAS_CORETYPE`` and
``OPENBLAS_NUM_THREADS`` settings; the environment is read when numpy loads OpenBLAS, so each
setting needs its own process. Also prints a digest of the raw float64 BLAS product ``x @ x.T``
of the same updates, to show that the kernel really changed.
"""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np

from learning.aggregation import RULE_NAMES, aggregate, staleness_weight


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
    out["clustering_shared_offset"] = _fields(aggregate("clustering", rec["offset_round"], np.ones(len(x)), seed=3))
    x64 = x.astype(np.float64)
    out["raw_blas_gram"] = _digest((x64 @ x64.T).tobytes())
    return out


if __name__ == "__main__":
    print(json.dumps(run(sys.argv[1])))
