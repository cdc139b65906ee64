"""The CLI against real daemons running as separate processes on 127.0.0.1.

Covers the query and transaction commands, ``join`` (a new node syncs the chain from the node it
joined), and ``testnet up`` (nodes make progress; SIGTERM or Ctrl-C stops every one of them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from typer.testing import CliRunner

from cli.client import NodeClient, NodeError
from cli.main import app
from consensus.genesis import Genesis
from gossip.crypto import KeyPair
from node.home import load_home
from tests.apinode import free_port
from tests.integration.harness import default_sigint

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parent.parent


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except NodeError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def final_height(url: str) -> int:
    return NodeClient(url, timeout=2).get_json("/status")["final_height"]


def cli(*args: Any) -> Any:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains ``text`` (zombies have none)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([*CLI, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def solo(tmp_path) -> Iterator[tuple[Path, str]]:
    """A one-node chain (the node alone is the delegate) started with `fedchain node start`."""
    home, port = tmp_path / "solo", free_port()
    cli("init", "--home", home, "--port", port, "--slot-ms", 200, "--chain-id", "cli-live")
    proc = spawn(["node", "start", "--home", str(home)], tmp_path / "solo.out")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: final_height(url) >= 1, 30, "the first final block")
        yield home, url
    finally:
        stop(proc)


def test_queries(solo):
    home, url = solo
    me = KeyPair.load(home / "node_key.json").node_id
    for command in (["status"], ["block"], ["block", "1"], ["delegates"], ["peers"], ["mempool"], ["account", me]):
        pretty = cli(*command, "--node", url)
        assert "error" not in pretty.output
        raw = json.loads(cli(*command, "--node", url, "--json").output)
        assert isinstance(raw, dict) and raw
    status = json.loads(cli("status", "--node", url, "--json").output)
    assert status["node_id"] == me and status["chain_id"] == "cli-live"
    assert me[:12] in cli("status", "--node", url).output
    assert json.loads(cli("block", "1", "--node", url, "--json").output)["height"] == 1
    missing = CliRunner().invoke(app, ["block", "999999", "--node", url])
    assert missing.exit_code == 1 and "404" in missing.output and "no final block" in missing.output


def test_transactions(solo):
    home, url = solo
    me = KeyPair.load(home / "node_key.json").node_id
    other = KeyPair.generate().node_id
    start = NodeClient(url).get_json(f"/accounts/{me}")
    staked = json.loads(cli("tx", "stake", 5, "--home", home, "--node", url, "--wait", "--json").output)
    assert staked["nonce"] == start["nonce"] + 1 and staked["height"] >= 1
    # two back-to-back transactions without waiting: the second must take its nonce from the mempool
    sent = json.loads(cli("tx", "transfer", other, 3, "--home", home, "--node", url, "--json").output)
    voted = json.loads(cli("tx", "vote", me, "--home", home, "--node", url, "--wait", "--json").output)
    assert voted["nonce"] == sent["nonce"] + 1
    wait_for(lambda: NodeClient(url).get_json(f"/txs/{sent['hash']}")["status"] == "committed", 10, "transfer")
    account = NodeClient(url).get_json(f"/accounts/{me}")
    assert account["nonce"] == start["nonce"] + 3
    assert account["stake"] >= start["stake"] + 5  # block rewards may add more
    assert account["balance"] <= start["balance"] - 8
    assert NodeClient(url).get_json(f"/accounts/{other}")["balance"] == 3
    assert account["votes"] == [me]
    refused = CliRunner().invoke(app, ["tx", "unstake", str(10**12), "--home", str(home), "--node", url])
    assert refused.exit_code == 1 and "422" in refused.output and "Traceback" not in refused.output


def test_join_syncs_from_the_node_it_joined(solo, tmp_path):
    _, url = solo
    wait_for(lambda: final_height(url) >= 5, 30, "a few blocks to sync")
    port = free_port()
    pin = json.loads(cli("genesis", "--node", url, "--json").output)["genesis_hash"]
    joiner = spawn(["join", url, "--home", str(tmp_path / "joiner"), "--port", str(port), "--genesis-hash", pin],
                   tmp_path / "joiner.out")
    mine = f"http://127.0.0.1:{port}"
    try:
        target = final_height(url)
        wait_for(lambda: final_height(mine) >= target, 40, "the joined node to catch up")
        theirs = NodeClient(url).get_json("/blocks", **{"from": 1, "limit": target})["blocks"]
        synced = NodeClient(mine).get_json("/blocks", **{"from": 1, "limit": target})["blocks"]
        assert [b["hash"] for b in synced] == [b["hash"] for b in theirs]
        assert NodeClient(mine).get_json("/genesis") == NodeClient(url).get_json("/genesis")
    finally:
        stop(joiner)


def test_status_and_genesis_show_the_genesis_hash(solo):
    home, url = solo
    expected = Genesis.load(home / "genesis.json").hash.hex()
    assert expected in cli("status", "--node", url).output
    shown = cli("genesis", "--node", url).output
    assert expected in shown and "cli-live" in shown
    assert KeyPair.load(home / "node_key.json").node_id in shown  # the delegates
    raw = json.loads(cli("genesis", "--node", url, "--json").output)
    assert raw["genesis_hash"] == expected and raw["genesis"]["chain_id"] == "cli-live"


def join_no_start(url: str, home: Path, *args: Any) -> Any:
    return CliRunner().invoke(app, ["join", url, "--home", str(home), "--port", str(free_port()), "--no-start",
                                    *map(str, args)])


def test_join_refuses_a_genesis_it_has_no_reason_to_trust(solo, tmp_path):
    home, url = solo
    expected = Genesis.load(home / "genesis.json").hash.hex()
    result = join_no_start(url, tmp_path / "j")
    assert result.exit_code == 1 and "--genesis-hash" in result.output and "--trust-genesis" in result.output
    assert expected in result.output and "cli-live" in result.output
    assert not (tmp_path / "j").exists()


def test_join_refuses_a_genesis_whose_hash_differs_and_names_both(solo, tmp_path):
    home, url = solo
    expected = Genesis.load(home / "genesis.json").hash.hex()
    result = join_no_start(url, tmp_path / "j", "--genesis-hash", "ab" * 32)
    assert result.exit_code == 1 and expected in result.output and "ab" * 32 in result.output, result.output
    assert not (tmp_path / "j").exists()


def test_join_trust_genesis_shows_what_it_trusts(solo, tmp_path):
    home, url = solo
    me = KeyPair.load(home / "node_key.json").node_id
    result = join_no_start(url, tmp_path / "j", "--trust-genesis")
    assert result.exit_code == 0, result.output
    assert Genesis.load(home / "genesis.json").hash.hex() in result.output
    assert "cli-live" in result.output and me in result.output and "plain HTTP" in result.output
    assert (tmp_path / "j" / "genesis.json").read_bytes() == (home / "genesis.json").read_bytes()


def test_join_writes_a_pinned_checkpoint_to_the_config(solo, tmp_path):
    home, url = solo
    pin = Genesis.load(home / "genesis.json").hash.hex()
    block = NodeClient(url).get_json("/blocks/1")
    result = join_no_start(url, tmp_path / "j", "--genesis-hash", pin.upper(), "--checkpoint", f"1:{block['hash']}")
    assert result.exit_code == 0, result.output
    config = (tmp_path / "j" / "config.toml").read_text()
    assert f'trusted_checkpoint = "1:{block["hash"]}"' in config and "[sync]" in config
    assert load_home(tmp_path / "j").config.sync.checkpoint == (1, bytes.fromhex(block["hash"]))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_testnet_up_progresses_and_stops_every_node(tmp_path, sig):
    folder, base = tmp_path / "net", free_port()
    if base + 1 > 65535 or not _free(base + 1):
        pytest.skip("no two consecutive free ports")
    proc = subprocess.Popen([*CLI, "testnet", "up", "2", "--dir", str(folder), "--base-port", str(base),
                             "--slot-ms", "300"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=default_sigint)
    urls = [f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"]
    try:
        wait_for(lambda: min(final_height(u) for u in urls) >= 2, 60, "both nodes to finalize blocks")
        assert len(processes_mentioning(f"{folder}/node")) == 2
    finally:
        proc.send_signal(sig)
        try:
            out, _ = proc.communicate(timeout=90)  # up to a 10 s grace per node, on a busy machine
        except subprocess.TimeoutExpired:
            for pid in processes_mentioning(f"{folder}/node"):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    assert "stopped 2 nodes" in text and "Traceback" not in text
    assert processes_mentioning(f"{folder}/node") == []
    for i in range(2):
        assert (folder / f"node{i}" / "logs" / "node.log").stat().st_size > 0


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
