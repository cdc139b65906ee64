"""Trust when syncing: a node follows peers only from a trusted point within the unbonding period
(the sync horizon), and a trusted checkpoint decides which history is real."""

import subprocess

import pytest

from tests.integration.harness import CLI, REPO, wait_for

pytestmark = pytest.mark.integration


def join(net, tmp_path, name: str, *extra: str) -> int:
    """Start ``fedchain join`` for a new device; returns its index in ``net``."""
    i = len(net.procs)
    log = open(tmp_path / f"{name}.out", "wb")
    pin = net.get(0, "/status")["genesis_hash"]
    net.procs[i] = subprocess.Popen(
        [*CLI, "join", net.url(0), "--home", str(tmp_path / name), "--port", str(net.base_port + i),
         "--genesis-hash", pin, *extra], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return i


@pytest.mark.timeout(150)
def test_a_chain_older_than_the_sync_horizon_needs_a_checkpoint(make_testnet, tmp_path):
    # unbonding 10 blocks of 1 s: a trusted point older than 10 s is stale
    net = make_testnet(4, slot_ms=1000, genesis={"unbonding_blocks": 10})
    net.start_all()
    net.wait_height(14, timeout=60)
    blind = join(net, tmp_path, "blind")
    wait_for(lambda: net.get(blind, "/status")["needs_checkpoint"], 30, "the joiner to report its stale trusted point")
    assert net.get(blind, "/status")["final_height"] == 0  # genesis is older than the horizon: nothing followed
    h = max(net.heights([0, 1, 2, 3])) - 1
    checkpoint = f"{h}:{net.get(0, f'/blocks/{h}')['hash']}"
    trusting = join(net, tmp_path, "trusting", "--checkpoint", checkpoint)
    wait_for(lambda: net.get(trusting, "/status")["final_height"] >= h + 2, 60, "the joiner with a checkpoint to sync")
    assert net.get(trusting, f"/blocks/{h}")["hash"] == net.get(0, f"/blocks/{h}")["hash"]


@pytest.mark.timeout(150)
def test_a_checkpoint_that_names_another_block_is_never_passed(make_testnet, tmp_path):
    net = make_testnet(4, slot_ms=1000)
    net.start_all()
    net.wait_height(6, timeout=60)
    wrong = f"4:{'ab' * 32}"
    lost = join(net, tmp_path, "lost", "--checkpoint", wrong)
    wait_for(lambda: net.get(lost, "/status")["final_height"] >= 3, 40, "the joiner to sync up to the checkpoint")
    top = max(net.heights([0, 1, 2, 3]))
    wait_for(lambda: max(net.heights([0, 1, 2, 3])) >= top + 3, 30, "the chain to move on")
    assert net.get(lost, "/status")["final_height"] == 3  # block 4 conflicts with its checkpoint: refused
    net.kill(lost)
    # a node whose stored chain conflicts with its checkpoint refuses to start, and says why
    home = tmp_path / "lost"
    cfg = home / "config.toml"
    cfg.write_text(cfg.read_text().replace(wrong, f"2:{'cd' * 32}"))
    res = subprocess.run([*CLI, "node", "start", "--home", str(home)], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0 and "conflicts with the trusted checkpoint" in res.stdout + res.stderr
