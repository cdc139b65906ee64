"""Devices whose clocks are off, as in the field: real daemons, each running consensus and gossip
on its own wall clock (``[fault] clock_offset_ms``; monotonic time is left alone).

A clock off by less than the genesis drift bound costs nothing; a delegate whose clock is off by
more loses its turns but neither halts the chain nor turns its peers against honest ones, and
its operator is told to fix the clock.
"""

from __future__ import annotations

import pytest

from tests.integration.harness import wait_for
from tests.integration.test_hostile import metric

pytestmark = pytest.mark.integration


@pytest.mark.timeout(240)
def test_clocks_off_within_the_bound_cost_nothing_and_a_clock_far_ahead_is_named(make_testnet):
    net = make_testnet(4, slot_ms=2000)  # the default slot
    for i, offset_ms in enumerate((0, -300, 300, 3000)):  # the genesis bound is 1 s
        net.edit_config(i, "clock_offset_ms = 0", f"clock_offset_ms = {offset_ms}")
    net.start_all()
    ids = [net.node_id(i) for i in range(4)]
    start = net.wait_height(3, [0, 1, 2], timeout=90)
    # the honest three keep deciding, and node3 follows the chain it cannot propose on
    net.wait_height(max(start) + 12, [0, 1, 2], timeout=150)
    wait_for(lambda: net.get(3, "/status")["final_height"] >= max(start) + 6, 60, "node3 to follow the chain")
    blocks = [net.get(0, f"/blocks/{h}") for h in range(max(start) + 1, max(start) + 13)]
    producers = {b["producer"] for b in blocks}
    assert {ids[1], ids[2]} <= producers, "a delegate whose clock is 0.3 s off lost its turns"
    # node3 is told, the others are not
    verdict = wait_for(lambda: (c := net.get(3, "/status")["clock"])["verdict"] != "unknown" and c, 60,
                       "node3's clock check")
    assert verdict["verdict"] == "ahead" and verdict["proposal_lateness_p50_ms"] > 2000, verdict
    log3 = (net.home(3) / "daemon.out").read_text()
    assert "clock looks about" in log3 and "NTP" in log3
    for i in range(3):
        clock = net.get(i, "/status")["clock"]
        assert clock["verdict"] == "ok", (i, clock)
        text = (net.home(i) / "daemon.out").read_text()
        assert "app hash mismatch" not in text and "clock looks about" not in text, f"node{i}"
        # node3's early blocks were ignored, not blamed on the honest peers that relayed them
        assert metric(net, i, "fedchain_consensus_rejected_total", reason="future_timestamp") == 0
        assert not net.get(i, "/net_info")["banned"], f"node{i} banned a peer over a clock"


@pytest.mark.timeout(240)
def test_a_device_whose_clock_runs_far_behind_follows_the_chain_in_step(make_testnet):
    """By a clock 3 s slow every honest block looks stamped from the future, so the device cannot
    vote for one; a block a quorum committed is final all the same. It applies each as its commit
    arrives, and never backs off the honest peers that serve it blocks (it used to, for "a
    timestamp too far in the future", and trailed the chain by the back-off). Its operator is told
    the clock is behind, though every proposal is of a round ahead of that clock."""
    net = make_testnet(4, slot_ms=2000)
    net.edit_config(3, "clock_offset_ms = 0", "clock_offset_ms = -3000")
    net.start_all()
    start = max(net.wait_height(3, [0, 1, 2], timeout=90))
    wait_for(lambda: net.get(3, "/status")["final_height"] >= start + 8, 90, "node3 to follow the chain")
    lags = []
    for _ in range(5):
        honest = min(net.heights([0, 1, 2]))
        lags.append(honest - net.get(3, "/status")["final_height"])
        net.wait_height(honest + 1, [0, 1, 2], timeout=30)
    assert max(lags) <= 1, lags
    # every proposal is a round ahead of its clock, and still it is told
    verdict = wait_for(lambda: (c := net.get(3, "/status")["clock"])["verdict"] != "unknown" and c, 60,
                       "node3's clock check")
    assert verdict["verdict"] == "behind" and verdict["proposal_lateness_p50_ms"] < -2000, verdict
    backoffs = [line for line in (net.home(3) / "daemon.out").read_text().splitlines() if "backed off" in line]
    assert not [line for line in backoffs if "future" in line], backoffs
