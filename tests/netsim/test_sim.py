"""Whole simulated networks of real node stacks: determinism from one seed, a partition that
heals with crashes and restarts on 100 nodes, and the invariant checker itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from node.netsim.invariants import Invariants
from node.netsim.sim import SimConfig, run
from node.netsim.updates import STALE_HEIGHTS, UpdateLedger

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
    code = ("import json; from node.netsim.sim import SimConfig, run; "
            f"print(json.dumps(run(SimConfig(seed=4, **{SMALL!r}))['digest']))")
    digests = set()
    for hash_seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120, check=True)
        digests.add(json.loads(out.stdout.strip().splitlines()[-1]))
    assert len(digests) == 1


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [7, 12, 16])
def test_a_hundred_nodes_through_a_partition_crashes_and_a_heal(seed: int) -> None:
    """Delegates split evenly, so neither side has a quorum: the chain stops, and must go on
    within the liveness bound once the partition heals; two nodes crash and come back. Four
    model updates a slot are announced, pulled and named in blocks throughout; every one must
    end in a final block or be dropped for a reason (the run's violations would list it).
    Seeds 12 and 16 once left the restarted nodes heights behind: a restarted producer no longer
    served the updates its proposal named, and a restarted delegate fetched a block's updates one
    after another, from the producer alone, while the check held the chain's lock."""
    result = run(SimConfig(nodes=100, delegates=4, seed=seed, slots=12, partition_slot=3, heal_slot=6,
                           crashes=[(1, 2, 5), (50, 4, 8)], small_probes=3, large_probes=1, liveness_slots=4))
    assert result["violations"] == []
    heights = result["final_height"]
    assert heights["max"] >= 7 and heights["min"] >= heights["max"] - 1  # the crashed ones caught up
    recovery = result["recoveries_ms"][0]
    assert recovery["n"] >= 98 and recovery["max"] <= 4 * 2000
    updates = result["updates"]
    assert updates["published"] == 4 * 10 and set(updates["fates"]) <= {"included", "superseded", "pending"}
    assert updates["fates"]["included"] >= 30 and updates["to_final_slots"]["p50"] <= 3


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


def test_the_ledger_tells_a_dropped_update_from_a_lost_one() -> None:
    slot = 1000
    ledger = UpdateLedger(slot)
    ledger.published(b"a", publisher=1, at_ms=0, base=0)
    ledger.published(b"b", publisher=2, at_ms=0, base=0)
    ledger.published(b"c", publisher=3, at_ms=0, base=0)
    ledger.taken(0, 1, [b"a"], 1500)
    ledger.crashed(2, 500)  # b's sender went down before its announcement got out
    ledger.published(b"d", publisher=3, at_ms=1800, base=1)  # supersedes c before any block passed it by
    ledger.published(b"e", publisher=4, at_ms=2500, base=1)
    for h in range(2, 2 + STALE_HEIGHTS):  # blocks that never take e
        ledger.taken(0, h, [], 3000 + 1000 * h)
    ledger.published(b"f", publisher=5, at_ms=3000 + 1000 * (STALE_HEIGHTS + 1), base=1)  # trained on a stale height
    fates = ledger.fates(end_ms=3000 + 1000 * (STALE_HEIGHTS + 2))
    assert fates == {b"a": "included", b"b": "sender_down", b"c": "superseded", b"d": "lost", b"e": "lost",
                     b"f": "stale"}
    assert ledger.to_final_ms() == []  # a's publisher (1) never finalized it; node 0 did


def test_a_node_whose_application_objects_to_every_payload_still_follows_the_chain() -> None:
    """A delegate and a follower whose application cannot check any payload another node built:
    the other delegates' quorum commits blocks, and both must apply them (a final block is final;
    an application's verdict decides a vote, never whether this node follows the chain)."""
    result = run(SimConfig(nodes=8, delegates=4, slots=6, small_probes=2, large_probes=0, dissenters=[1, 6]))
    heights = result["final_height"]
    assert result["violations"] == [] and heights["max"] >= 4
    assert heights["min"] >= heights["max"] - 1, heights
