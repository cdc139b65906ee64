"""Hierarchical rounds with real daemons on different BLAS kernels: proposers list each cluster's
partial, serve the partials by hash, and delegates that re-run only their cluster agree."""

import pytest

from tests.integration.test_fl import rounds
from tests.integration.test_hostile import metric

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_four_daemons_on_different_kernels_agree_on_hierarchical_rounds(make_testnet):
    from node.fl.settings import FLSettings

    hierarchy = {"threshold": 3, "cluster_size": 2, "verify": 1}   # each delegate re-runs one of two clusters
    net = make_testnet(4, slot_ms=2000, app="fl", genesis={"app": FLSettings(hierarchy=hierarchy).to_app_state()})
    net.rewrite_genesis()
    for i, core in enumerate(("Haswell", "Prescott", "Sandybridge", "Nehalem")):
        net.start(i, env={"OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": str(1 + i // 2)})
    net.wait_height(10, timeout=180)
    recs = rounds(net, 0, range(2, 11))
    tiered = [r for r in recs if r["considered"] >= 3]
    assert len(tiered) >= 3, recs
    for r in tiered:
        assert len(r["clusters"]) == 2 and sorted(m for c in r["clusters"] for m in c["members"]) == list(
            range(r["considered"])), r
        assert not r["skipped"] and r["accepted"] >= 2, r
    assert all(metric(net, i, "fedchain_fl_events_total", event="bad_payloads") == 0 for i in range(4))
    # delegates re-ran their own cluster and took the other partial by hash from the proposer
    assert sum(metric(net, i, "fedchain_fl_events_total", event="clusters_rerun") for i in range(4)) >= 3
    assert sum(metric(net, i, "fedchain_fl_events_total", event="partials_fetched") for i in range(4)) >= 3


@pytest.mark.timeout(240)
def test_a_lying_cluster_head_never_makes_a_final_block_and_is_punished(make_testnet):
    """Every delegate re-runs both clusters (``verify`` = the cluster count), so every honest one
    proves the liar's partial wrong: its hierarchical proposals never finalize, and a later
    proposal of the height carries the fault that costs it stake."""
    from node.fl.settings import FLSettings
    from tests.integration.harness import wait_for

    hierarchy = {"threshold": 3, "cluster_size": 2, "verify": 2}
    net = make_testnet(4, slot_ms=1500, app="fl", genesis={"app": FLSettings(hierarchy=hierarchy).to_app_state()})
    net.enable_faults(3, "lying_partial")
    net.start_all()
    liar = net.node_id(3)
    net.wait_height(14, timeout=180)
    blocks = {h: net.get(0, f"/blocks/{h}")["producer"] for h in range(1, 15)}
    recs = dict(zip(range(1, 15), rounds(net, 0, range(1, 15))))
    assert not [h for h, who in blocks.items() if who == liar and "clusters" in recs[h]], (blocks, recs)
    assert any(r["faults"] for r in recs.values()), recs
    wait_for(lambda: net.get(0, f"/accounts/{liar}")["penalties_total"] >= 20, 30, "the liar's penalty")
    assert any(metric(net, i, "fedchain_fl_events_total", event="bad_payloads") >= 1 for i in range(3))
