"""A local DPoS testnet of real daemons: production, finality, crash recovery, joining."""

import re
import signal
import subprocess
import time

import pytest

from tests.integration.harness import CLI, REPO, wait_for

pytestmark = pytest.mark.integration


def same_hashes(net, nodes, upto):
    hashes = {tuple(net.get(i, f"/blocks?from=1&limit={upto}")["blocks"][k]["hash"] for k in range(upto))
              for i in nodes}
    return len(hashes) == 1


@pytest.mark.timeout(90)
def test_four_daemons_finalize_the_same_chain(make_testnet):
    net = make_testnet(4, slot_ms=2000)
    net.start_all()
    started = time.monotonic()
    heights = net.wait_height(5, timeout=30 + 3)
    assert time.monotonic() - started < 33
    assert min(heights) >= 5
    assert same_hashes(net, range(4), 5)
    # every block carries the commit of its parent, signed by a quorum of the 4 delegates
    block = net.get(0, "/blocks/3")
    assert len(block["last_commit"]["signatures"]) >= 3
    assert block["last_commit"]["block_hash"] == net.get(1, "/blocks/2")["hash"]


@pytest.mark.timeout(150)
def test_killed_delegate_others_continue_and_it_catches_up(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    net.start_all()
    net.wait_height(3, timeout=30)
    net.kill(3, signal.SIGKILL)
    h = max(net.heights([0, 1, 2]))
    net.wait_height(h + 5, nodes=[0, 1, 2], timeout=40)
    net.start(3)
    target = max(net.heights([0, 1, 2]))
    net.wait_height(target, nodes=[3], timeout=40)
    assert same_hashes(net, [0, 3], target)
    # it resumed from its own SQLite state rather than from scratch: its last start says so
    starts = re.findall(r"engine started at height (\d+)", net.log_tail(3, 2000))
    assert len(starts) == 2 and int(starts[-1]) >= 3


@pytest.mark.timeout(150)
def test_a_new_node_joins_and_syncs_the_whole_chain(make_testnet, tmp_path):
    net = make_testnet(4, slot_ms=1000)
    net.start_all()
    net.wait_height(6, timeout=40)
    home = tmp_path / "joiner"
    port = net.base_port + 4
    log = open(tmp_path / "joiner.out", "wb")
    pin = net.get(0, "/status")["genesis_hash"]
    proc = subprocess.Popen([*CLI, "join", net.url(0), "--home", str(home), "--port", str(port), "--genesis-hash", pin],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    net.procs[4] = proc
    target = max(net.heights())
    wait_for(lambda: net.get(4, "/status")["final_height"] >= target, 40, "joiner to sync")
    assert same_hashes(net, [0, 4], target)
    assert net.get(4, "/status")["is_delegate"] is False
