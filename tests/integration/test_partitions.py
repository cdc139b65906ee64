"""Networks partition and heal: four daemons on four hosts (network namespaces on one LAN).

Each daemon has its own network stack and address; the LAN is really cut (the hosts' switch
ports moved to another bridge), so every timeout, redial and sync path is the one a site's
outage exercises: the first cut lasts until the sessions across it have timed out, the second
heals while they still stand. With four equal delegates a quorum is three: a side of three keeps finalizing
and the lone node stops; two against two, nobody does. After each heal the chain must be one
chain again (the same block at every height on every node) and make progress within a bounded
number of slots.
"""

from __future__ import annotations

import time

import pytest

from tests.integration.harness import wait_for
from tests.integration.netns import Lan, LanTestnet, available

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bool(available()), reason=available() or "namespaces available")]

SLOT_S = 1.0
HEAL_SLOTS = 30
"""Slots a healed network may take to finalize again: redials back off (at most a few seconds)
and a lagging node syncs before it votes."""


@pytest.fixture
def lan_testnet(tmp_path, request):
    lan = Lan(4)
    net = LanTestnet(tmp_path / "net", lan, slot_ms=int(SLOT_S * 1000))
    try:
        yield net
    finally:
        net.stop_all()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            for i in net.procs:
                print(f"--- node{i} log ---\n{net.log_tail(i)}")
        lan.close()


def one_chain(net: LanTestnet, upto: int) -> None:
    """Every node holds the same final block at every height up to ``upto``."""
    for h in range(1, upto + 1):
        hashes = {net.get(i, f"/blocks/{h}")["hash"] for i in range(net.n)}
        assert len(hashes) == 1, f"nodes disagree at height {h}: {hashes}"


def stalled(net: LanTestnet, nodes: list[int], slots: int) -> int:
    """Watch ``nodes`` for ``slots`` slots after the block in flight; the highest final block
    among them, which must not have moved (a node may still learn that block from a peer on its
    side: that is following, not finalizing). A stall can only be seen over time: this waits on
    the slot clock."""
    time.sleep(2 * SLOT_S)  # a block already voted for may still become final
    before = net.heights(nodes)
    time.sleep(slots * SLOT_S)
    after = net.heights(nodes)
    assert max(after) == max(before), f"nodes {nodes} finalized without a quorum: {before} -> {after}"
    return max(after)


@pytest.mark.timeout(240)
def test_a_partitioned_lan_keeps_one_chain_and_finalizes_again_after_it_heals(lan_testnet):
    net = lan_testnet
    net.start_all()
    net.wait_height(3, timeout=60)

    # three against one, long enough for every session across the cut to time out: the three
    # hold a quorum and go on; the one stops, and after the heal must redial and sync
    net.lan.partition([3])
    cut = max(net.heights())
    stalled(net, [3], slots=4)
    wait_for(lambda: net.get(3, "/net_info")["n_peers"] == 0, 40, "the lone node to drop its silent peers")
    net.wait_height(cut + 4, nodes=[0, 1, 2], timeout=40)
    assert net.heights([3])[0] <= cut + 1
    net.lan.heal()
    healed = max(net.heights([0, 1, 2]))
    net.wait_height(healed + 2, timeout=HEAL_SLOTS * SLOT_S)  # the lone node caught up and the four go on

    # two against two: nobody holds a quorum, nobody finalizes
    net.lan.partition([2, 3])
    top = stalled(net, [0, 1, 2, 3], slots=5)
    net.lan.heal()
    started = time.monotonic()
    net.wait_height(top + 1, timeout=HEAL_SLOTS * SLOT_S)
    resumed_s = time.monotonic() - started
    net.wait_height(top + 3, timeout=HEAL_SLOTS * SLOT_S)
    print(f"after the 2|2 heal the first block was final on all four within {resumed_s / SLOT_S:.1f} slots")

    one_chain(net, min(net.heights()))
    # the cuts were real: the nodes met over the LAN, each at its own address
    info = net.get(0, "/net_info")
    assert info["url"] == net.url(0) and info["n_peers"] == 3, info
