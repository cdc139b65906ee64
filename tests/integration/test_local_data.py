"""Real daemons that each train only on their own file, and the public evaluation set fetched by hash.

1. Three devices hold one CSV of network-flow records each (mostly benign traffic plus the one
   attack kind that hits that device). The chain's global model must beat the best model any one
   device can train on its own file, on a common held-out test set the daemons never see.
2. A node that lacks the evaluation set asks a hostile peer first: the peer serves a tampered
   copy (well-formed, made with the project's own encoder, labels changed); the node refuses it,
   takes the genuine one from an honest node and follows the chain.
"""

import hashlib
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

from consensus.genesis import Genesis
from gossip.codec import decode_array, unpack
from learning.data import Dataset
from learning.datasets import evalset
from learning.datasets.checks import DataSpec
from learning.datasets.formats import DataSource, read
from learning.models import build_model, set_flat
from learning.train import evaluate, local_train
from node.config import save_config
from node.fl.blobs import BlobStore
from node.home import init_home, load_home
from tests.integration.harness import cli, free_port_block, wait_for

pytestmark = pytest.mark.integration


def csv_set(path: Path) -> Dataset:
    x, y = read(DataSource(path, "csv"))
    return Dataset(x, y.astype(np.int64), 4, path.name)


def accuracy(vector: np.ndarray, test: Dataset) -> float:
    net = build_model("tabular_mlp", test.input_shape, 4, 0)
    set_flat(net, vector)
    return evaluate(net, test.x, test.y)[0]


def local_only(train: Dataset, test: Dataset, epochs: int = 40) -> float:
    """The best a device does alone: the same model, trained to convergence on its own file."""
    net = build_model("tabular_mlp", train.input_shape, 4, 0)
    local_train(net, train.x, train.y, epochs=epochs, batch_size=32, lr=0.1)
    return evaluate(net, test.x, test.y)[0]


def global_model(net, i: int = 0) -> np.ndarray:
    model = net.get(i, "/fl/model")
    raw = urllib.request.urlopen(net.url(i) + model["blob"], timeout=5).read()
    return decode_array(unpack(raw, 1 << 26))


@pytest.mark.timeout(420)
def test_global_model_beats_every_device_alone(make_testnet, tmp_path):
    flows = tmp_path / "flows"
    res = cli("data", "example", "--out", str(flows), "--nodes", "3")
    assert res.returncode == 0, res.stderr
    net = make_testnet(3, slot_ms=2000, app="fl", create_args=("--own-data", str(flows)))
    sources = [load_home(net.home(i)).config.data.source for i in range(3)]
    assert sources == [str(flows / f"node{i}.csv") for i in range(3)]   # each node reads its own file only
    torch.set_num_threads(1)
    test = csv_set(flows / "test.csv")
    alone = [local_only(csv_set(flows / f"node{i}.csv"), test) for i in range(3)]
    best_alone = max(alone)
    net.start_all()
    net.wait_height(1, timeout=60)
    acc = wait_for(lambda: (a := accuracy(global_model(net), test)) > best_alone + 0.1 and a, 300,
                   f"the global model to beat the best device alone ({best_alone:.3f}) by 0.1")
    print(f"local-only accuracies {alone}, global {acc:.3f}")
    # the exported file is the chain's model, and plain PyTorch runs it
    out = tmp_path / "model.pt2"
    res = cli("model", "--node", net.url(0), "--export", str(out))
    assert res.returncode == 0, res.stderr
    exported = torch.export.load(out).module()
    with torch.no_grad():
        predicted = exported(torch.from_numpy(test.x)).argmax(1).numpy()
    assert (predicted == test.y).mean() > best_alone + 0.1
    records = [net.get(0, f"/fl/updates?height={h}") for h in range(2, 6)]
    senders = {u["sender"] for r in records for u in r["updates"] if u["accepted"]}
    assert senders == {net.node_id(i) for i in range(3)}   # every device contributed
    # the sample count each update claims is the size of its sender's own training split (its file
    # less the 10% validation part it keeps to itself)
    sizes = {net.node_id(i): len(csv_set(flows / f"node{i}.csv")) for i in range(3)}
    for u in (u for r in records for u in r["updates"]):
        claimed = net.get(0, f"/fl/updates/{u['id']}")["num_samples"]
        assert claimed == sizes[u["sender"]] - int(0.1 * sizes[u["sender"]])


class TamperingPeer(BaseHTTPRequestHandler):
    """Serves a well-formed evaluation set whose labels are changed, under the genuine hash's URL."""

    blob = b""
    asked: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        TamperingPeer.asked.append(self.path)
        if not self.path.startswith("/fl/eval-set/"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.blob)))
        self.end_headers()
        self.wfile.write(self.blob)

    def log_message(self, *args) -> None:
        pass


@pytest.mark.timeout(240)
def test_tampered_evaluation_set_is_refused(make_testnet, tmp_path):
    net = make_testnet(2, slot_ms=1000, app="fl")
    net.start_all()
    net.wait_height(2, timeout=60)
    genesis = Genesis.load(net.home(0) / "genesis.json")
    task = genesis.app["task"]
    store = BlobStore(net.home(0) / "data" / "blobs.sqlite")
    genuine = store.get(bytes.fromhex(task["eval_set_sha256"]), "evalset")
    store.close()
    eval_set = evalset.decode(genuine, DataSpec(tuple(task["input_shape"]), 10), task["eval_set_samples"])
    eval_set.y = (eval_set.y + 1) % 10    # the poisoning a hostile peer would want every verifier to use
    TamperingPeer.blob, TamperingPeer.asked = evalset.encode(eval_set), []
    assert hashlib.sha256(TamperingPeer.blob).hexdigest() != task["eval_set_sha256"]
    hostile = ThreadingHTTPServer(("127.0.0.1", free_port_block(1)), TamperingPeer)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    try:
        hostile_url = f"http://127.0.0.1:{hostile.server_address[1]}"
        home = tmp_path / "joiner"
        joiner = init_home(home, genesis, port=free_port_block(1), bootstrap=[hostile_url], moniker="joiner")
        joiner.config.network.dial_scope = "local"
        save_config(joiner.config, home / "config.toml")
        url = f"http://127.0.0.1:{joiner.config.network.port}"
        # with only the hostile peer to ask, the node keeps refusing and never follows the chain;
        # it still stops at once on SIGTERM
        proc = net.start(2, home=home)
        wait_for(lambda: len(TamperingPeer.asked) >= 3, 60, "the joiner to ask the hostile peer again")
        assert json.loads(urllib.request.urlopen(url + "/status", timeout=3).read())["final_height"] == 0
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        joiner.config.network.bootstrap = [hostile_url, net.url(0)]
        save_config(joiner.config, home / "config.toml")
        net.start(2, home=home)
        wait_for(lambda: json.loads(urllib.request.urlopen(url + "/status", timeout=3).read())["final_height"]
                 >= max(net.heights()), 90, "the joiner to follow the chain")
        assert any(p.startswith("/fl/eval-set/") for p in TamperingPeer.asked)
        log = (home / "daemon.out").read_text()
        assert f"refused the evaluation set served by {hostile_url}: public evaluation set has SHA-256 " \
               f"{hashlib.sha256(TamperingPeer.blob).hexdigest()}, the genesis task pins {task['eval_set_sha256']}" in log
        assert f"fetched the public evaluation set {task['eval_set_sha256'][:12]} from {net.url(0)}" in log
        served = urllib.request.urlopen(f"{url}/fl/eval-set/{task['eval_set_sha256']}", timeout=5).read()
        assert served == genuine   # it now serves the genuine set to others
    finally:
        hostile.shutdown()
