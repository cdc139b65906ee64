"""CLI commands that need no running daemon: keys, init, testnet create, and clean failures."""

from __future__ import annotations

import os
import socket

import pytest
from typer.testing import CliRunner

from cli.main import app
from consensus.genesis import Genesis
from gossip.crypto import KeyPair, is_node_id
from node.home import HomePaths, load_home
from tests.apinode import free_port

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], env={"FEDCHAIN_HOME": "", "FEDCHAIN_NODE": ""})


def assert_clean_failure(result, fragment: str) -> None:
    """Exit code 1, one ``error:`` line naming the problem, and no traceback."""
    assert result.exit_code == 1, result.output
    assert "error:" in result.output and fragment in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_keys_new_and_show(tmp_path):
    result = invoke("keys", "new", "--home", tmp_path)
    assert result.exit_code == 0, result.output
    node_id = result.output.strip()
    assert is_node_id(node_id)
    key_file = HomePaths(tmp_path).node_key
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    assert KeyPair.load(key_file).node_id == node_id
    shown = invoke("keys", "show", "--home", tmp_path)
    assert shown.exit_code == 0 and shown.output.strip() == node_id


def test_keys_new_refuses_to_overwrite_without_force(tmp_path):
    first = invoke("keys", "new", "--home", tmp_path).output.strip()
    assert_clean_failure(invoke("keys", "new", "--home", tmp_path), "already exists")
    assert KeyPair.load(HomePaths(tmp_path).node_key).node_id == first
    forced = invoke("keys", "new", "--home", tmp_path, "--force")
    assert forced.exit_code == 0 and forced.output.strip() != first


def test_keys_show_without_key(tmp_path):
    assert_clean_failure(invoke("keys", "show", "--home", tmp_path), "fedchain keys new")


def test_init_creates_a_loadable_one_node_home(tmp_path):
    home = tmp_path / "solo"
    result = invoke("init", "--home", home, "--chain-id", "solo-chain", "--port", "30200", "--moniker", "solo")
    assert result.exit_code == 0, result.output
    loaded = load_home(home)
    assert loaded.genesis.chain_id == "solo-chain"
    assert loaded.config.network.port == 30200 and loaded.config.moniker == "solo"
    assert [a["id"] for a in loaded.genesis.accounts] == [loaded.keypair.node_id]
    assert loaded.genesis.members == [loaded.keypair.node_id]
    assert loaded.genesis.genesis_time_ms > 0


def test_init_uses_key_from_keys_new(tmp_path):
    node_id = invoke("keys", "new", "--home", tmp_path).output.strip()
    assert invoke("init", "--home", tmp_path).exit_code == 0
    assert load_home(tmp_path).keypair.node_id == node_id


def test_init_twice_fails_cleanly(tmp_path):
    assert invoke("init", "--home", tmp_path).exit_code == 0
    assert_clean_failure(invoke("init", "--home", tmp_path), "already exists")


def test_init_in_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert_clean_failure(invoke("init", "--home", blocker / "home"), str(blocker))


def test_init_rejects_bad_chain_id(tmp_path):
    assert_clean_failure(invoke("init", "--home", tmp_path, "--chain-id", "bad chain!"), "chain_id")


def test_testnet_create(tmp_path):
    folder = tmp_path / "tn"
    result = invoke("testnet", "create", "4", "--dir", folder, "--base-port", "31000", "--chain-id", "tn-test",
                    "--slot-ms", "500")
    assert result.exit_code == 0, result.output
    homes = [load_home(folder / f"node{i}") for i in range(4)]
    genesis_texts = {HomePaths(folder / f"node{i}").genesis.read_text() for i in range(4)}
    assert len(genesis_texts) == 1, "every node must have the same genesis"
    genesis: Genesis = homes[0].genesis
    assert genesis.chain_id == "tn-test" and genesis.slot_ms == 500
    ids = [h.keypair.node_id for h in homes]
    assert len(set(ids)) == 4
    assert sorted(genesis.members) == sorted(ids)
    assert {a["id"]: a["stake"] > 0 for a in genesis.accounts} == {i: True for i in ids}
    urls = [h.config.network.url for h in homes]
    assert [h.config.network.port for h in homes] == [31000, 31001, 31002, 31003]
    assert len(set(urls)) == 4
    for i, h in enumerate(homes):
        assert os.stat(h.paths.node_key).st_mode & 0o777 == 0o600
        assert h.config.network.host == "127.0.0.1"
        assert sorted(h.config.network.bootstrap) == sorted(u for j, u in enumerate(urls) if j != i)
        assert h.config.moniker == f"node{i}"
        assert not h.config.fault.any_enabled
        assert h.config.network.dial_scope == "local"  # peers on 127.0.0.1 may be learned and dialled


def test_testnet_create_with_container_hosts(tmp_path):
    folder = tmp_path / "tn"
    result = invoke("testnet", "create", "3", "--dir", folder, "--host", "0.0.0.0", "--advertise-host", "node{i}")
    assert result.exit_code == 0, result.output
    home = load_home(folder / "node1")
    assert home.config.network.host == "0.0.0.0"
    assert home.config.network.url == "http://node1:26658"
    assert home.config.network.bootstrap == ["http://node0:26657", "http://node2:26659"]
    assert home.config.network.dial_scope == "private"  # container names resolve to private addresses


def test_testnet_create_refuses_existing_folder(tmp_path):
    assert invoke("testnet", "create", "2", "--dir", tmp_path).exit_code == 0
    assert_clean_failure(invoke("testnet", "create", "2", "--dir", tmp_path), "already holds a testnet")


def test_testnet_create_port_overflow(tmp_path):
    assert_clean_failure(invoke("testnet", "create", "4", "--dir", tmp_path, "--base-port", "65534"), "65536")


def test_testnet_create_sets_genesis_fl_settings(tmp_path):
    """``--set KEY=VALUE`` (VALUE in JSON) writes any FL setting into the genesis, over the data
    set's preset: the hardened setting ``docs/fl.md`` names for a large backdoor coalition is two
    options, not a hand-edited genesis."""
    folder = tmp_path / "tn"
    result = invoke("testnet", "create", "2", "--dir", folder, "--set", "standing=true",
                    "--set", 'rule_params={"feature_clip": 1.0}', "--set", "clip_norm=2")
    assert result.exit_code == 0, result.output
    app = load_home(folder / "node0").genesis.app
    assert (app["standing"], app["rule_params"], app["clip_norm"]) == (True, {"feature_clip": 1.0}, 2.0)


@pytest.mark.parametrize("option, fragment", [
    ('rule_params={"feature_clip": 0.5}', "feature_clip must be 0 (off) or finite and >= 1"),
    ('standing="yes"', "FL setting standing must be bool"),
    ("no_such_setting=1", "unknown FL setting(s): no_such_setting"),
    ("standing", "--set takes KEY=VALUE"),
    ("clip_norm=two", "--set clip_norm: VALUE must be JSON"),
])
def test_testnet_create_refuses_a_setting_no_chain_could_run_and_writes_nothing(tmp_path, option, fragment):
    folder = tmp_path / "tn"
    assert_clean_failure(invoke("testnet", "create", "2", "--dir", folder, "--set", option), fragment)
    assert not folder.exists() or not any(folder.iterdir())


def test_testnet_up_refuses_a_different_node_count(tmp_path):
    assert invoke("testnet", "create", "2", "--dir", tmp_path).exit_code == 0
    assert_clean_failure(invoke("testnet", "up", "3", "--dir", tmp_path), "2-node testnet")


def test_testnet_up_refuses_busy_port(tmp_path):
    port = free_port()
    assert invoke("testnet", "create", "1", "--dir", tmp_path, "--base-port", port).exit_code == 0
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        assert_clean_failure(invoke("testnet", "up", "1", "--dir", tmp_path), "already in use")


def test_node_start_without_home(tmp_path):
    assert_clean_failure(invoke("node", "start", "--home", tmp_path / "missing"), "does not exist")


def test_node_start_with_bad_config(tmp_path):
    assert invoke("init", "--home", tmp_path).exit_code == 0
    HomePaths(tmp_path).config.write_text("[network]\nport = 99999\n")
    assert_clean_failure(invoke("node", "start", "--home", tmp_path), "network.port")


@pytest.mark.parametrize("command", [
    ["status"], ["block"], ["block", "3"], ["delegates"], ["peers"], ["mempool"], ["account", "ab" * 32],
])
def test_queries_against_a_down_node(command):
    url = f"http://127.0.0.1:{free_port()}"
    assert_clean_failure(invoke(*command, "--node", url), "unreachable")


def test_account_rejects_bad_id():
    assert_clean_failure(invoke("account", "xyz", "--node", "http://127.0.0.1:1"), "not a node id")


def test_tx_without_key(tmp_path):
    assert_clean_failure(invoke("tx", "stake", "10", "--home", tmp_path), "fedchain keys new")


def test_tx_against_a_down_node(tmp_path):
    assert invoke("init", "--home", tmp_path).exit_code == 0
    url = f"http://127.0.0.1:{free_port()}"
    assert_clean_failure(invoke("tx", "stake", "10", "--home", tmp_path, "--node", url), "unreachable")


def test_tx_rejects_bad_recipient(tmp_path):
    assert invoke("init", "--home", tmp_path).exit_code == 0
    assert_clean_failure(invoke("tx", "transfer", "nobody", "5", "--home", tmp_path), "TO must be a node id")


def test_negative_amount_is_a_usage_error(tmp_path):
    result = invoke("tx", "stake", "--home", tmp_path, "--", "-5")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_join_unreachable(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    assert_clean_failure(invoke("join", url, "--home", tmp_path / "j"), "unreachable")
    assert not (tmp_path / "j").exists()


def test_join_bad_url(tmp_path):
    assert_clean_failure(invoke("join", "ftp://x", "--home", tmp_path / "j"), "http or https")


@pytest.mark.parametrize("args, fragment", [
    (["--genesis-hash", "abc"], "--genesis-hash must be 64 hex"),
    (["--trust-genesis", "--checkpoint", "ten:" + "ab" * 32], "--checkpoint must be HEIGHT:BLOCKHASH"),
    (["--trust-genesis", "--checkpoint", "10:abc"], "64 hex"),
])
def test_join_checks_its_pins_before_going_online(tmp_path, args, fragment):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the check must come first
    assert_clean_failure(invoke("join", url, "--home", tmp_path / "j", *args), fragment)
    assert not (tmp_path / "j").exists()


def test_testnet_up_shows_the_newest_evaluated_accuracy_while_a_new_model_is_evaluated():
    from cli.supervisor import accuracy_cell

    assert accuracy_cell({"height": 7, "test_accuracy": 0.9123}) == "91.2%"
    assert accuracy_cell({"height": 8, "evaluated": {"height": 7, "test_accuracy": 0.9123}}) == "91.2% (h7)"
    assert accuracy_cell({"height": 0}) == accuracy_cell({}) == "-"
