"""The benchmark harness end to end: one real ``--quick`` benchmark in a subprocess.

``python -m bench communication --quick`` runs simulator federations in a spawned process pool,
writes its JSON and PNG into a temporary results folder (``FEDCHAIN_BENCH_RESULTS``), and its
report section must render from that JSON. Nothing is mocked, so a change that breaks the
simulator records, the pool, the result layout or the report fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_communication_quick_writes_sane_results(tmp_path: Path) -> None:
    env = {**os.environ, "FEDCHAIN_BENCH_RESULTS": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "bench", "communication", "--quick"], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "communication.json").read_text())
    assert (tmp_path / "communication.png").stat().st_size > 0
    assert result["benchmark"] == "communication" and result["quick"] is True

    rows = {(r["nodes"], r["encoding"]): r for r in result["rows"]}
    dense, ours = rows[(50, "dense float32")], rows[(50, result["headline"])]
    for row in (dense, ours):
        assert 0.0 <= row["final_accuracy"]["mean"] <= 1.0
        assert row["final_accuracy"]["n"] == result["seeds"] == 2
    # dense float32 is exactly 4 bytes per parameter per node and round
    assert dense["bytes_per_update"] == 4 * dense["dim"]
    # top-2% int8 + int32 indices: ~5 bytes per kept coordinate plus a small fixed header
    k = round(0.02 * ours["dim"])
    assert 5 * k < ours["bytes_per_update"] < 5 * k + 32
    assert ours["reduction"] == pytest.approx(dense["bytes_per_round"] / ours["bytes_per_round"])
    assert dense["reduction"] == 1.0 and ours["reduction"] > 10
    # the zoo rows are exact wire sizes of much larger models: the encodings' ratios hold there too
    mlp = next(z for z in result["zoo"] if z["model"] == "mlp")
    assert mlp["dense float32"] == 4 * mlp["params"] and 30 < mlp["dense float32"] / mlp[result["headline"]] < 45

    from bench.communication import report

    section = report(result)
    assert section.startswith("## Communication") and "results/communication.png" in section
