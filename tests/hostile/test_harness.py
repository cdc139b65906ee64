"""The harness itself: its invariants hold on an untouched testnet and catch a broken one."""

import signal

import pytest

from tests.hostile.harness import Bounds, run_hostile
from tests.hostile.peer import HostilePeer

pytestmark = pytest.mark.integration


async def connect_and_leave(url: str, chain_id: str) -> str:
    async with HostilePeer(chain_id) as peer:
        await peer.connect(url)
        return peer.node_id


@pytest.mark.timeout(120)
def test_invariants_hold_without_attack_and_the_attacker_runs_apart(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    with victims.monitor() as monitor:
        node_id = run_hostile(connect_and_leave, net.url(0), chain_id, timeout=30)
        victims.check(monitor, Bounds())
    assert len(node_id) == 64
    assert victims.penalized(0, node_id)  # it left: no longer connected


@pytest.mark.timeout(120)
def test_a_stalled_node_breaks_the_invariants(victims):
    net = victims.net
    with victims.monitor() as monitor:
        net.procs[3].send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(AssertionError, match="node3|finalize"):
                victims.check(monitor, Bounds(finalize_timeout_s=8))
        finally:
            net.procs[3].send_signal(signal.SIGCONT)
