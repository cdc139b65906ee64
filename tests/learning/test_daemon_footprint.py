"""What an FL daemon loads: the packages it needs and none it only borrows a file or a function
from. Importing ``opacus`` (its package ``__init__`` brings its privacy engine, optimizers and
``torch.distributed``) cost every daemon about 90 MB and ``sklearn`` (for the digits CSV) about
50 MB of resident memory; the accountant and the digits loader now take what they need alone."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from opacus.accountants import RDPAccountant

from learning.privacy import DEFAULT_ALPHAS

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import json, math, sys
import numpy as np
import cli.main, node.fl.service
from learning.aggregation.kmeans import _assign
from learning.data import load_digits
from learning.privacy import PrivacyAccountant
load_digits()
labels = _assign(np.array([[0.0, 5.0], [0.1, 5.0], [0.2, 5.0], [0.3, 4.0]]), 1)  # cluster 1 would be empty
assert sorted(labels) == [0, 0, 0, 1], labels
loaded = sorted(m for m in ("opacus", "sklearn", "scipy") if m in sys.modules)
# the accountant (local-dp only) needs scipy.special, not opacus
PrivacyAccountant(math.inf, noise_multiplier=1.1, sample_rate=0.5).release(10)
print(json.dumps(loaded + sorted(m for m in ("opacus", "sklearn") if m in sys.modules)))
"""


def test_a_daemon_imports_neither_opacus_nor_sklearn_nor_scipy() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, timeout=240,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_orders_are_opacus_own() -> None:
    assert DEFAULT_ALPHAS == RDPAccountant.DEFAULT_ALPHAS
    assert math.isfinite(DEFAULT_ALPHAS[-1])
