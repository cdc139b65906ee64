"""The dashboard in a real browser: runs the browser test (``tests/integration/test_dashboard.py``)
against a 4-node FL testnet with a sign-flipping node, keeps its screenshot as
``bench/results/dashboard.png`` and records how long the test took. Not a speed goal: the report
shows what an operator sees.

Run: ``python -m bench dashboard`` (needs Debian's chromium, which ``make test`` installs).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, write_result

TEST = "tests/integration/test_dashboard.py::test_dashboard_of_a_federated_learning_testnet_in_a_browser"
REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> dict:
    shot = RESULTS / "dashboard.png"
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST], cwd=REPO,
                         env={**os.environ, "FEDCHAIN_DASHBOARD_PNG": str(shot)},
                         capture_output=True, text=True, timeout=600)
    wall = time.monotonic() - began
    if run.returncode != 0:
        raise SystemExit(f"the dashboard browser test failed:\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    seen = re.search(r"dashboard browser test: ([\d.]+) s", run.stdout)
    chromium = subprocess.run([shutil.which("chromium") or "chromium", "--version"], capture_output=True,
                              text=True).stdout.strip()
    result = {"test": TEST, "test_seconds": round(wall, 1),
              "seconds_after_testnet_start": float(seen.group(1)) if seen else None,
              "browser": chromium, "screenshot": "results/dashboard.png"}
    write_result("dashboard", result)
    return result


def report(r: dict) -> str:
    return f"""## Dashboard

What an operator sees at `http://NODE:26657/dashboard` (`docs/operations.md`): node 0 of a real
4-node federated-learning testnet (2 s slots, the digits task) in which node 3 sends sign-flipped
updates (`[fault] attack = "sign_flip"`). The clustering rule rejects its updates (the red row of
the per-sender grid, and the reasons under "Recent rejections"). The page
was loaded in headless {r['browser']} driven by Playwright, by the test `{r['test']}`, which
passed in {r['test_seconds']} s ({r['seconds_after_testnet_start']} s after the testnet started: heights
advancing on screen, 3 points on the accuracy chart, 4 delegate rows, the attacker's rejection
with the reason the chain recorded, peers' round trips, privacy of 4 nodes, no console error).
Command: `python -m bench dashboard` (measured {r['measured_at']}).

![dashboard](results/dashboard.png)
"""
