"""The benchmark harness end to end: real ``--quick`` benchmarks in a subprocess.

``python -m bench communication --quick`` runs simulator federations in a spawned process pool,
writes its JSON and PNG into a temporary results folder (``FEDCHAIN_BENCH_RESULTS``), and its
report section must render from that JSON. Nothing is mocked, so a change that breaks the
simulator records, the pool, the result layout or the report fails here. ``python -m bench chaos
--quick`` runs real daemons under faults, and its invariants are asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.netns import available

REPO = Path(__file__).resolve().parents[1]


def run_quick(name: str, results: Path, timeout: float) -> dict:
    """``python -m bench NAME --quick`` with its results in ``results``; its JSON, once the PNG exists."""
    env = {**os.environ, "FEDCHAIN_BENCH_RESULTS": str(results)}
    proc = subprocess.run([sys.executable, "-m", "bench", name, "--quick"], cwd=REPO, env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((results / f"{name}.json").read_text())
    assert (results / f"{name}.png").stat().st_size > 0
    assert result["benchmark"] == name and result["quick"] is True
    return result


@pytest.mark.timeout(120)
def test_communication_quick_writes_sane_results(tmp_path: Path) -> None:
    result = run_quick("communication", tmp_path, 110)

    rows = {(r["nodes"], r["encoding"]): r for r in result["rows"]}
    dense, ours = rows[(50, "dense float32")], rows[(50, result["headline"])]
    for row in (dense, ours):
        assert 0.0 <= row["final_accuracy"]["mean"] <= 1.0
        assert row["final_accuracy"]["n"] == result["seeds"] == 2
    # dense float32 is exactly 4 bytes per parameter per node and round
    assert dense["bytes_per_update"] == 4 * dense["dim"]
    # top-5% sign: a varint index gap (1 or 2 bytes below 16,384 > dim) and a bit per kept
    # coordinate, plus a small fixed header
    k, dim = round(0.05 * ours["dim"]), ours["dim"]
    assert dim < 16_384 and k + k // 8 < ours["bytes_per_update"] < 2 * k + k // 8 + 32
    assert ours["reduction"] == pytest.approx(dense["bytes_per_round"] / ours["bytes_per_round"])
    assert dense["reduction"] == 1.0 and ours["reduction"] > 10
    # the zoo rows are exact wire sizes of much larger models: the encodings' ratios hold there too
    mlp = next(z for z in result["zoo"] if z["model"] == "mlp")
    assert mlp["dense float32"] == 4 * mlp["params"] and 60 < mlp["dense float32"] / mlp[result["headline"]] < 75

    from bench.communication import report

    section = report(result)
    assert section.startswith("## Communication") and "results/communication.png" in section


@pytest.mark.timeout(420)
def test_selection_quick_compares_strategies_on_the_same_arrivals(tmp_path: Path) -> None:
    """``python -m bench selection --quick``: every strategy's row, the same uploads for all of them,
    fewer bytes aggregated where a policy selects, and the policies selecting different nodes."""
    result = run_quick("selection", tmp_path, 400)
    assert result["strategies"] == ["all", "random", "trust", "pso"] and result["seeds"] == 1
    rows = {row["strategy"]: row for row in result["rows"]}
    assert set(rows) == set(result["strategies"])
    uploaded = {s: row["bytes_uploaded_per_round"]["mean"] for s, row in rows.items()}
    # the same arrivals: the same updates uploaded, whose exact sizes follow their values (varint indices)
    assert uploaded["all"] > 0 and max(uploaded.values()) <= 1.01 * min(uploaded.values()), uploaded
    # all aggregates every sender's newest update; a policy picks k of them
    assert rows["all"]["bytes_aggregated_per_round"]["mean"] <= uploaded["all"]
    k = result["round_shape"]["16"]["max_updates"]
    for s in ("random", "trust", "pso"):
        assert rows[s]["selected_per_round"]["mean"] == k
        assert rows[s]["bytes_aggregated_per_round"]["mean"] < rows["all"]["bytes_aggregated_per_round"]["mean"]
    for row in rows.values():
        assert 0.0 <= row["final_accuracy"]["mean"] <= 1.0 and row["honest_never_selected"]["n"] == 1
    # per round, the policies' selected sets differ (Jaccard 1 would mean the same nodes every round)
    overlap = result["similarity"][0]
    assert max(overlap["random~trust"], overlap["random~pso"], overlap["trust~pso"]) < 1.0
    runs = {run["strategy"]: run for run in result["runs"]}
    assert runs["random"]["nodes"] != runs["trust"]["nodes"] != runs["pso"]["nodes"] != runs["random"]["nodes"]

    from bench.selection import report

    section = report(result)
    assert section.startswith("## Node selection") and "results/selection.png" in section


@pytest.mark.integration
@pytest.mark.timeout(300)
def test_chaos_quick_keeps_final_blocks_final_and_honest_nodes_agreeing(tmp_path: Path) -> None:
    """``python -m bench chaos --quick``: 4 FL daemons, one Byzantine (double-signs, lies about its
    height, floods the mempool), honest nodes killed, paused and restarted one at a time."""
    result = run_quick("chaos", tmp_path, 290)
    inv = result["invariants"]
    assert inv["final_blocks_reverted"] == 0, inv["reverts"]
    assert inv["heights_disagreeing"] == 0, inv["disagreeing_heights"]
    assert inv["fl_records_differing_from_blocks"] == 0
    # the checks covered the chain: every height compared, each read several times
    assert inv["heights_compared"] >= 10 and inv["heights_compared"] >= result["chain"]["final_height_end"] - 1
    assert inv["block_reports"] > 3 * inv["heights_compared"]
    # the schedule ran faults of every kind, one at a time, and every victim caught up again
    faults = result["faults"]
    assert len(faults) >= 3 and {f["kind"] for f in faults} == {"kill", "pause", "restart"}
    assert all(f["recovery_s"] is not None for f in faults), faults
    assert all(a["at_s"] + a["down_s"] <= b["at_s"] for a, b in zip(faults, faults[1:]))
    # every honest update has exactly one fate, and the node's own privacy releases match them
    updates = result["updates"]["honest"]
    for node in updates["per_node"].values():
        assert node["sent"] > 0 and node["considered"] > 0
        assert node["sent"] == sum(node[f] for f in ("considered", "made_stale", "superseded", "sender_down",
                                                     "pending_at_end", "lost"))
        assert node["releases"] >= node["sent"]
    # the Byzantine delegate really misbehaved, and the chain saw it
    byz = result["byzantine"]["node3"]
    assert byz["fault_log_lines"]["lie_height"] >= 1 and byz["fault_log_lines"]["flood_mempool"] >= 1
    assert byz["blocks_with_evidence_against_it"] >= 1 and byz["slashed_total"] > 0
    assert result["liveness_slots"]["after_fault"]["never"] == 0
    for name, r in result["resources"].items():
        assert r["rss_peak_mb"] > 0 and r["loop_lag_p99_ms_max"] is not None, name

    from bench.chaos import report

    section = report(result)
    assert section.startswith("## Chaos") and "results/chaos.png" in section


@pytest.mark.timeout(300)
def test_adversary_quick_measures_every_goal_and_renders(tmp_path: Path) -> None:
    """``python -m bench adversary --quick``: the product pipeline under adaptive attacks, its
    baselines and the ablation, end to end in spawned workers."""
    result = run_quick("adversary", tmp_path, 290)
    model = result["models"]["tabular_mlp"]
    assert 0.0 < model["clean"]["mean"] <= 1.0 and 0.0 < model["fedavg"]["mean"] <= 1.0
    cells = model["attacks"]
    assert set(cells) == {"ipm+noise", "adaptive", "dba", "sybil"}
    assert 0.0 <= cells["dba"]["0.4"]["backdoor_success"]["mean"] <= 1.0
    assert all(c["0.4"]["auc"] is None or 0.0 <= c["0.4"]["auc"] <= 1.0 for c in cells.values())
    assert set(result["ablation"]) == {"full rule", "shared-offset test off", "near-copy test off", "norm clip off",
                                       "feature clip off", "feature clip 1", "no radius-tuning margin", "client clip 3", "validation guard off",
                                       "direction test off", "drift test off", "standing on"}
    assert result["ablation"]["client clip 3"]["pipeline"] == {"clip_norm": 3.0}
    assert result["ablation"]["standing on"]["pipeline"] == {"standing": True}
    assert model["clean_honest"]["standing_withheld"]["mean"] == 0.0       # off by default
    honest = model["clean_honest"]
    assert 0.0 <= honest["updates_rejected"]["mean"] <= 1.0 and 0.0 <= honest["data_rejected"]["mean"] <= 1.0
    on = result["ablation"]["standing on"]["cells"]["clean"]["honest"]
    assert 0.0 <= on["standing_withheld"]["mean"] < 1.0 and 0.1 <= on["standing_lowest"]["mean"] <= 1.0
    assert all(set(v["cells"]) == {"clean", "ipm+noise", "adaptive"} for v in result["ablation"].values())
    assert 0.0 <= model["pipeline_fedavg"]["mean"] <= 1.0
    assert set(result["goals"]) == {"drop", "backdoor", "auc", "clean"}

    from bench.adversary import report

    section = report(result)
    assert section.startswith("## Adaptive adversaries") and "results/adversary.png" in section


@pytest.mark.timeout(180)
def test_hierarchy_quick_compares_flat_and_clustered_rounds_and_renders(tmp_path: Path) -> None:
    result = run_quick("hierarchy", tmp_path, 170)
    rows = {row["variant"]: row for row in result["rows"]}
    assert set(rows) == set(result["variants"])
    assert rows["100 flat"]["vs_flat_final"]["mean"] == 0.0
    clustered = [run for run in result["runs"] if "clusters" in run["variant"]]
    assert clustered and all(0.0 <= a <= 1.0 for run in clustered for a in run["accuracy"])
    (work,) = result["work"]
    labels = [k for k in work if k.startswith("clusters of")]
    assert labels and all(work[k]["clusters"] >= 2 and work[k]["verifier_s"] > 0 for k in labels)

    from bench.hierarchy import report

    section = report(result)
    assert section.startswith("## Hierarchical aggregation") and "results/hierarchy.png" in section


@pytest.mark.timeout(240)
def test_fleet_measures_memory_and_timing_and_renders(tmp_path: Path) -> None:
    env = {**os.environ, "FEDCHAIN_BENCH_RESULTS": str(tmp_path)}
    # the last run's rows: one of another slot length (kept beside the new rows), one of 2 s slots (replaced)
    longer = {"nodes": 99, "slot_ms": 6000, "error": "TimeoutError: timed out"}
    (tmp_path / "fleet.json").write_text(json.dumps({"runs": [longer, {"nodes": 2, "error": "an old 2 s row"}]}))
    proc = subprocess.run([sys.executable, "-m", "bench", "fleet", "--sizes", "2", "--window", "8"], cwd=REPO,
                          env=env, check=False, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "fleet.json").read_text())
    assert (tmp_path / "fleet.png").stat().st_size > 0
    kept, run = result["runs"]
    assert kept == longer and run["slot_ms"] == 2000
    assert run["daemons_alive"] == 2 and run["block_time_ms"]["n"] >= 1
    memory, parts = run["memory_mb"], run["breakdown_mb"]
    assert 0 < memory["uss"]["p50"] <= memory["pss"]["p50"] <= memory["rss"]["p50"]
    # the parts of node 0's address space add up to its whole resident set
    assert sum(p["rss"] for p in parts.values()) == pytest.approx(memory["rss"]["p50"], rel=0.05)

    from bench.fleet import report

    section = report(result)
    assert section.startswith("## A fleet of real FL daemons") and "| C heap |" in section
    assert "| 99 | 6 | failed: TimeoutError" in section and "Failed: 99 daemons with 6 s slots" in section


@pytest.mark.timeout(240)
@pytest.mark.skipif(bool(available()), reason=available() or "namespaces available")
def test_fleet_on_a_lan_keeps_the_loopback_rows_and_renders_both(tmp_path: Path) -> None:
    env = {**os.environ, "FEDCHAIN_BENCH_RESULTS": str(tmp_path)}
    (tmp_path / "fleet.json").write_text(json.dumps({"runs": [{"nodes": 3, "error": "earlier loopback run"}]}))
    proc = subprocess.run([sys.executable, "-m", "bench", "fleet", "--sizes", "2", "--window", "8", "--network", "lan"],
                          cwd=REPO, env=env, check=False, capture_output=True, text=True, timeout=230)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "fleet.json").read_text())
    assert result["runs"] == [{"nodes": 3, "error": "earlier loopback run"}]
    (run,) = result["lan_runs"]
    assert run["daemons_alive"] == 2 and run["update_to_final_ms"]["n"] >= 1

    from bench.fleet import report

    assert "host of its own (`python -m bench fleet --network lan`)" in report(result)


@pytest.mark.timeout(180)
def test_netsim_run_of_one_part_keeps_the_other_parts_results(tmp_path: Path) -> None:
    """``bench netsim --part chain`` after ``--part swarm``: the file holds both (a long chain run on
    1,000 nodes must not wipe the swarm profiles measured earlier)."""
    env = {**os.environ, "FEDCHAIN_BENCH_RESULTS": str(tmp_path)}
    for args in (["--part", "swarm", "--only", "full_mesh_8"], ["--part", "chain", "--nodes", "30"]):
        proc = subprocess.run([sys.executable, "-m", "bench", "netsim", "--quick", *args], cwd=REPO, env=env,
                              check=False, capture_output=True, text=True, timeout=170)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "netsim.json").read_text())
    assert list(result["swarm"]) == ["full_mesh_8"] and result["chain"]["config"]["nodes"] == 30
    assert (tmp_path / "netsim.png").stat().st_size > 0


@pytest.mark.timeout(120)
def test_netsim_profiles_change_what_they_name() -> None:
    """The latency profiles' knobs reach every node: fewer connection slots give fewer peers, and
    the links' loss is the one the profile sets (a lossy link makes copies wait 200 ms
    retransmissions that a lossless one never does)."""
    from bench.netsim import measure_swarm
    from node.netsim.network import LinkParams

    narrow = measure_swarm(16, 1, "gossipsub", 3, 1, gossip={"max_outbound": 2, "max_inbound": 2})
    wide = measure_swarm(16, 1, "gossipsub", 3, 1)
    assert narrow["peers"]["max"] <= 4 < wide["peers"]["max"]
    lossless = measure_swarm(16, 1, "gossipsub", 5, 1, link=LinkParams(loss=0.0))
    lossy = measure_swarm(16, 1, "gossipsub", 5, 1, link=LinkParams(loss=0.5))
    assert lossless["small"]["delivered_share"] == lossy["small"]["delivered_share"] == 1.0
    assert lossy["small"]["delivery_ms"]["p50"] > 1.5 * lossless["small"]["delivery_ms"]["p50"]
