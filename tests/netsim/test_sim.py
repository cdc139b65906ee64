"""Whole simulated networks of real node stacks: determinism from one seed, a partition that
heals with crashes and restarts on 100 nodes, and the invariant checker itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from netsim.invariants import Invariants
from netsim.sim import SimConfig, run

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(nodes=12, delegates=4, slots=4, small_probes=4, large_probes=1)


def test_one_seed_gives_one_run_and_another_seed_another() -> None:
    first = run(SimConfig(seed=1, **SMALL))
    again = run(SimConfig(seed=1, **SMALL))
    other = run(SimConfig(seed=2, **SMALL))
    assert first["violations"] == [] and first["final_height"]["min"] >= 3
    assert first["digest"] == again["digest"]
    assert first["finality_ms"] == again["finality_ms"] and first["gossip"] == again["gossip"]
    assert other["digest"] != first["digest"]


def test_a_run_does_not_depend_on_the_process_hash_seed() -> None:
    """Set iteration order of strings changes with PYTHONHASHSEED; a run must not."""
    code = ("import json; from netsim.sim import SimConfig, run; "
            f"print(json.dumps(run(SimConfig(seed=4, **{SMALL!r}))['digest']))")
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        digests.add(json.loads(out.stdout.strip().splitlines()[-1]))
    assert len(digests) == 1


@pytest.mark.timeout(240)
def test_a_hundred_nodes_through_a_partition_crashes_and_a_heal() -> None:
    """Delegates split evenly, so neither side has a quorum: the chain stops, and must go on
    within the liveness bound once the partition heals; two nodes crash and come back."""
    result = run(SimConfig(nodes=100, delegates=4, seed=7, slots=12, partition_slot=3, heal_slot=6,
                           crashes=[(1, 2, 5), (50, 4, 8)], small_probes=3, large_probes=1, liveness_slots=4))
    assert result["violations"] == []
    heights = result["final_height"]
    assert heights["min"] == heights["max"] >= 7  # everyone, the crashed ones included, caught up
    recovery = result["recoveries_ms"][0]
    assert recovery["n"] >= 98 and recovery["max"] <= 4 * 2000


def test_the_checker_sees_disagreement_reversion_and_a_stalled_heal() -> None:
    inv = Invariants(slot_ms=1000, liveness_slots=3)
    inv.on_final(0, 1, "aa", 10)
    inv.on_final(1, 1, "aa", 11)
    inv.on_final(1, 2, "bb", 20)
    assert inv.violations == []
    inv.on_final(0, 2, "cc", 21)  # another block at a final height
    inv.on_final(0, 4, "dd", 30)  # skipped a height
    inv.on_restart(1, {1: "aa"}, 40)  # came back without its block 2
    inv.healed(50, [0, 1])
    inv.on_final(0, 5, "ee", 60)
    inv.check_liveness(50 + 3 * 1000, {0, 1})  # node 1 finalized nothing after the heal
    assert len(inv.violations) == 4, inv.violations
