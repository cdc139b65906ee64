"""Peer-exchange poisoning and inbound sybils: strangers must not decide whom a node dials, nor
take the slots it needs to reach honest peers."""

import threading
import time

import pytest

from gossip.config import GossipConfig
from tests.apinode import free_port
from tests.hostile.attacks import hold_sybils, poison_peer_exchange
from tests.hostile.harness import Bounds, run_hostile
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration


def connected(victims, i: int, j: int) -> bool:
    return victims.ids[j] in {p["node_id"] for p in victims.net.get(i, "/net_info")["peers"]}


def reconnected(victims, i: int, j: int, after: float) -> bool:
    """Node ``j`` answers, and node ``i`` holds a connection to it made after ``after`` (Unix time).
    Right after node ``j`` is killed, node ``i`` still lists the old connection until it notices
    the close, and the new process may not listen yet."""
    victims.net.get(j, "/status")
    return any(p["node_id"] == victims.ids[j] and p["connected_since"] > after
               for p in victims.net.get(i, "/net_info")["peers"])


@pytest.mark.timeout(240)
def test_peer_exchange_poisoning_is_bounded_and_never_dialled(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    with victims.monitor(nodes=[0, 1, 2]) as monitor:  # node3 restarts during the test
        report = run_hostile(poison_peer_exchange, net.url(0), chain_id, free_port(), 4, 16, 10.0,
                             timeout=90)
        # Honest peers are still known and dialled: node3 restarts, and node0 is with it again.
        restarted = time.time()
        net.kill(3)
        net.start(3)
        wait_for(lambda: reconnected(victims, 0, 3, restarted), 60, "node0 to reconnect to the restarted node3")
        print(report, monitor.summary())
        victims.check(monitor, Bounds())
    assert report["trap_hits"] == 0, "the victim dialled an address outside its dial policy"
    assert all(victims.penalized(0, node_id) for node_id in report["ids"])


@pytest.mark.timeout(240)
def test_inbound_sybils_do_not_stop_outbound_dialling(victims):
    """Sybils take every inbound slot of node0 and retake any that frees; node3 restarts and
    can no longer get in, yet node0 dials it itself."""
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    max_inbound = GossipConfig("c", "http://127.0.0.1:1").max_inbound
    result: dict = {}
    attacker = threading.Thread(target=lambda: result.update(
        run_hostile(hold_sybils, net.url(0), chain_id, max_inbound + 12, 50.0, timeout=120)))
    with victims.monitor(nodes=[0, 1, 2]) as monitor:
        attacker.start()
        try:
            net.kill(3)
            wait_for(lambda: inbound(net, 0) >= max_inbound and not connected(victims, 0, 3), 40,
                     "sybils to fill node0's inbound slots")
            net.start(3)
            wait_for(lambda: connected(victims, 0, 3), 40, "node0 to reconnect to node3 past the sybils")
            directions = {p["node_id"]: p["direction"] for p in net.get(0, "/net_info")["peers"]}
            assert directions[victims.ids[3]] == "out"
            assert inbound(net, 0) <= max_inbound
            print(monitor.summary())
            victims.check(monitor, Bounds())
        finally:
            attacker.join(timeout=120)
    print(result)
    assert result["refused"] > 0  # the excess sybils were turned away


def inbound(net, i: int) -> int:
    return sum(p["direction"] == "in" for p in net.get(i, "/net_info")["peers"])
