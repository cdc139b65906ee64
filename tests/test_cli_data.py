"""Each testnet node holds only its own data file; a node with bad data, or with model code other
than the genesis pins, refuses to start (real ``fedchain node start`` processes)."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.testnet import create_testnet
from gossip.crypto import sha256
from learning.data import load_digits
from node.fl.blobs import BlobStore
from node.fl.task import Task, TaskError
from node.home import load_home
from tests.integration.harness import free_port_block, get_json, wait_for

REPO = Path(__file__).resolve().parents[1]
CUSTOM = REPO / "tests" / "node" / "custom_model.py"


@pytest.fixture(scope="module")
def testnet(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("net")
    return [h.paths.root for h in create_testnet(folder, 3, base_port=free_port_block(3))]


def start(home: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "node", "start", "--home", str(home)], cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=timeout)


def edit_task(home: Path, **changes) -> None:
    path = home / "genesis.json"
    genesis = json.loads(path.read_text())
    genesis["app"]["task"].update(changes)
    path.write_text(json.dumps(genesis))


def test_each_node_holds_only_its_own_shard(testnet):
    homes = [load_home(h) for h in testnet]
    task = Task.from_dict(homes[0].genesis.app["task"])
    sources = [h.paths.root / h.config.data.source for h in homes]
    assert all(s.is_file() and s.is_relative_to(h.paths.root) for s, h in zip(sources, homes))
    shards = [np.load(s)["x"].reshape(-1, 64) for s in sources]
    rows = [set(map(bytes, x)) for x in shards]
    assert not (rows[0] & rows[1]) and not (rows[1] & rows[2]) and not (rows[0] & rows[2])
    pool, _ = load_digits(seed=0)
    assert sum(len(x) for x in shards) + task.eval_set_samples == len(pool)
    for h in homes:   # the public evaluation set is published in every home, under the hash genesis pins
        store = BlobStore(h.paths.data / "blobs.sqlite")
        assert sha256(store.get(task.eval_hash, "evalset")) == task.eval_hash
        store.close()
    out = CliRunner().invoke(app, ["data", "check", "--home", str(testnet[1])])
    assert out.exit_code == 0, out.output
    assert f"samples      {len(shards[1])}" in out.output and "input shape  [1, 8, 8]" in out.output


def test_node_with_bad_data_does_not_start(testnet, tmp_path):
    home = testnet[0]
    good = home / "data" / "train.npz"
    arrays = dict(np.load(good))
    x = arrays["x"].copy()
    x[3, 0, 0, 0] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, x=x, y=arrays["y"])
    config = home / "config.toml"
    original = config.read_text()
    try:
        config.write_text(original.replace('source = "data/train.npz"', f'source = "{bad}"'))
        res = start(home)
        assert res.returncode == 1
        assert f"{bad}: 1 NaN or infinite values (first in sample 3)" in res.stderr
        assert "does not start with data that does not fit the task" in res.stderr
        check = CliRunner().invoke(app, ["data", "check", "--home", str(home)])
        assert check.exit_code == 1 and "NaN" in check.output
        config.write_text(original.replace('source = "data/train.npz"', 'source = "data/missing.csv"'))
        res = start(home)
        assert res.returncode == 1 and "missing.csv: no such file" in res.stderr
    finally:
        config.write_text(original)


def test_model_code_other_than_genesis_pins_refuses_to_start(tmp_path):
    home = create_testnet(tmp_path, 1, base_port=free_port_block(1))[0].paths.root
    right = hashlib.sha256(CUSTOM.read_bytes()).hexdigest()
    edit_task(home, model="tests.node.custom_model:build", model_code_sha256="0" * 64)
    res = start(home)
    assert res.returncode == 1
    assert f"model code {CUSTOM} has SHA-256 {right}, but the genesis pins {'0' * 64}" in res.stderr
    assert "this node will not start with other code" in res.stderr
    edit_task(home, model_code_sha256=right)   # the pinned code: the node starts and serves its model
    port = load_home(home).config.network.port
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "node", "start", "--home", str(home)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        model = wait_for(lambda: get_json(f"http://127.0.0.1:{port}/fl/model"), 240, "the node to serve /fl/model")
        assert model["model"] == "tests.node.custom_model:build" and model["params"] == 64 * 16 + 16 + 16 * 10 + 10
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_task_is_checked_strictly():
    base = {"model": "cnn", "input_shape": [1, 28, 28], "num_classes": 10, "eval_set_sha256": "a" * 64,
            "eval_set_samples": 100}
    assert Task.from_dict(base).spec.input_shape == (1, 28, 28)
    for bad, match in (({"colour": 1}, "unknown key"), ({"input_shape": [0]}, "input_shape"),
                       ({"model": "x.y:build"}, "model_code_sha256"), ({"eval_set_sha256": "zz"}, "eval_set_sha256"),
                       ({"loss": "hinge"}, "loss")):
        with pytest.raises(TaskError, match=match):
            Task.from_dict({**base, **bad})


def test_join_with_own_data_checks_it_against_the_task(testnet, tmp_path):
    node0 = load_home(testnet[0])
    url = f"http://127.0.0.1:{node0.config.network.port}"
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "node", "start", "--home", str(testnet[0])], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get_json(url + "/genesis"), 240, "node0 to serve its genesis")
        pin = node0.genesis.hash.hex()
        mine = tmp_path / "mine.npz"
        x, y = load_digits(seed=1)[1].x[:50], load_digits(seed=1)[1].y[:50]
        np.savez(mine, x=x.reshape(-1, 1, 8, 8), y=y + 5)   # labels 5..14: the task has 10 classes
        join = ["join", url, "--genesis-hash", pin, "--no-start", "--port", str(free_port_block(1)),
                "--data", str(mine), "--format", "npz"]
        bad = CliRunner().invoke(app, [*join, "--home", str(tmp_path / "bad")])
        assert bad.exit_code == 1
        assert f"{mine}: " in bad.output and "labels outside 0..9" in bad.output and "would not start" in bad.output
        np.savez(mine, x=x.reshape(-1, 1, 8, 8), y=y)
        good = CliRunner().invoke(app, [*join, "--home", str(tmp_path / "good")])
        assert good.exit_code == 0, good.output
        node_id = load_home(tmp_path / "good").keypair.node_id
        assert f"fedchain tx register {node_id} --samples 45 --node {url}" in good.output
        assert load_home(tmp_path / "good").config.data.source == str(mine)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_fashion_mnist_preset_pins_the_cnn_with_its_own_settings(tmp_path):
    """The Fashion-MNIST preset changes only what its CNN needs (docs/decisions.md); the defences,
    the compression and every other data set keep the product defaults."""
    from cli.data import PRESET_SETTINGS
    from node.fl.settings import FLSettings

    defaults = {k: v for k, v in FLSettings().to_app_state().items() if k != "task"}
    fashion = load_home(create_testnet(tmp_path / "f", 2, base_port=free_port_block(2), dataset="fashion_mnist")[0]
                        .paths.root).genesis
    assert fashion.slot_ms == 30_000 and fashion.app["task"]["model"] == "cnn"
    assert fashion.app["task"]["input_shape"] == [1, 28, 28]
    changed = {k for k in defaults if fashion.app[k] != defaults[k]}
    assert changed == set(PRESET_SETTINGS["fashion_mnist"]) == {"local_epochs", "clip_norm"}
    for key in ("rule", "rule_params", "topk_fraction", "encoding", "error_feedback", "max_updates", "server_lr"):
        assert fashion.app[key] == defaults[key], key
    digits = create_testnet(tmp_path / "d", 1, base_port=free_port_block(1))[0].genesis
    assert digits.slot_ms == 2000 and {k: v for k, v in digits.app.items() if k != "task"} == defaults
    assert create_testnet(tmp_path / "s", 1, base_port=free_port_block(1), dataset="fashion_mnist",
                          slot_ms=3000)[0].genesis.slot_ms == 3000   # an explicit --slot-ms wins


def test_eval_set_from_a_file_when_no_peer_holds_it(tmp_path):
    """``[data] eval_set``: a node whose blob store lacks the evaluation set (a pod on a fresh
    volume) takes it from that file if it has the pinned hash, and refuses any other file."""
    from node.config import save_config
    from node.config_checks import ConfigError
    from node.fl.service import FLService

    home = create_testnet(tmp_path / "net", 1, base_port=free_port_block(1))[0]
    task = Task.from_dict(home.genesis.app["task"])
    store = BlobStore(home.paths.data / "blobs.sqlite")
    blob = store.get(task.eval_hash, "evalset")
    store.close()
    (home.paths.data / "blobs.sqlite").unlink()
    copy, wrong = tmp_path / "eval-set.npz", tmp_path / "other.npz"
    copy.write_bytes(blob)
    wrong.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    home.config.data.eval_set = str(wrong)
    save_config(home.config, home.paths.config)
    with pytest.raises(ConfigError, match=f"eval_set {wrong}: public evaluation set has SHA-256"):
        FLService(load_home(home.paths.root), gossip=None)
    home.config.data.eval_set = str(copy)
    save_config(home.config, home.paths.config)
    service = FLService(load_home(home.paths.root), gossip=None)
    try:
        assert not service.eval_missing and len(service.app.data.public_eval) == task.eval_set_samples
        assert service.eval_set_blob(task.eval_hash) == blob   # kept: it serves the set to its peers
    finally:
        service.blobs.close()
