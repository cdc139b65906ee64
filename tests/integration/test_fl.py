"""Federated learning on the chain with real daemons: learning, Byzantine nodes, faulty delegates,
crash recovery. Accuracy is checked independently: the test fetches the final model's weights
over HTTP and evaluates them itself on the digits test split."""

import signal
import urllib.request

import numpy as np
import pytest

from gossip.codec import decode_array, unpack
from learning.data import load_digits
from learning.models import build_model, set_flat
from learning.train import evaluate
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration


def test_accuracy(net, i: int = 0) -> tuple[float, str, int]:
    """Accuracy of node i's newest final model on the digits test split, evaluated here."""
    model = net.get(i, "/fl/model")
    raw = urllib.request.urlopen(net.url(i) + model["blob"], timeout=5).read()
    vector = decode_array(unpack(raw, 1 << 26))
    _, test = load_digits(seed=0)
    mlp = build_model(model["model"], test.input_shape, test.num_classes, 0)
    set_flat(mlp, vector)
    return evaluate(mlp, test.x, test.y)[0], model["hash"], model["height"]


test_accuracy.__test__ = False  # a helper, not a test


def rounds(net, i: int, heights) -> list[dict]:
    return [net.get(i, f"/fl/updates?height={h}") for h in heights]


@pytest.mark.timeout(240)
def test_four_daemons_train_digits_to_90_percent(make_testnet):
    net = make_testnet(4, slot_ms=2000, app="fl")
    net.start_all()
    net.wait_height(1, timeout=40)
    acc = wait_for(lambda: (a := test_accuracy(net)[0]) >= 0.90 and a, 180, "90% test accuracy")
    assert acc >= 0.90
    # every node serves the same model hash at the same final height
    def same_model():
        models = [net.get(i, "/fl/model") for i in range(4)]
        return len({(m["height"], m["hash"]) for m in models}) == 1 and models[0]
    model = wait_for(same_model, 20, "all nodes to serve one model at one height")
    # standing is off by default: the route says so and nobody has a record
    assert all(net.get(i, "/fl/standing") | {"height": 0} == {"height": 0, "applies": False, "window": 4, "low": 0.1,
               "high": 0.3, "floor": 0.1, "truncated": False, "senders": []} for i in range(4))
    # a block's header carries the app hash after its parent, so the next block commits to this model
    wait_for(lambda: min(net.heights()) > model["height"], 20, "the next block")
    assert {net.get(i, f"/blocks/{model['height'] + 1}")["app_hash"] for i in range(4)} == {model["hash"]}
    # blocks really aggregate updates from the nodes
    h = model["height"]
    recs = rounds(net, 0, range(max(2, h - 5), h + 1))
    assert all(r["accepted"] >= 3 for r in recs)
    # and say what the public set made of each candidate aggregate the rule tried
    assert all(r["evaluations"] and all(0.0 <= v <= 1.0 for v in r["evaluations"]) for r in recs)
    text = urllib.request.urlopen(net.url(0) + "/metrics", timeout=3).read().decode()
    assert "fedchain_fl_test_accuracy_ratio" in text and "fedchain_event_loop_lag_seconds" in text
    # once a model was evaluated, every answer has an accuracy: the newest's, or while the newest
    # is being evaluated, the newest evaluated model's with its height
    for _ in range(20):
        m = net.get(0, "/fl/model")
        assert "test_accuracy" in m or m["evaluated"]["height"] < m["height"], m


@pytest.mark.timeout(480)
def test_attackers_are_rejected_and_lose_trust(make_testnet):
    net = make_testnet(6, slot_ms=2000, app="fl")
    for i, attack in ((4, "sign_flip"), (5, "gaussian")):
        cfg = net.home(i) / "config.toml"
        cfg.write_text(cfg.read_text().replace('attack = ""', f'attack = "{attack}"'))
    net.start_all()
    attackers = {net.node_id(4), net.node_id(5)}
    net.wait_height(25, timeout=150)
    considered = rejected = 0
    slipped = []        # (height, sender, score, the round's validations) of each accepted attacker update
    for rec in rounds(net, 0, range(2, 26)):
        for u in rec["updates"]:
            if u["sender"] in attackers:
                considered += 1
                rejected += not u["accepted"]
                if u["accepted"]:
                    slipped.append((rec["height"], u["sender"][:12], u["score"], rec["evaluations"]))
    assert considered >= 10
    # Below ten updates a round a rejection must validate better on the public set, and a tie
    # keeps the update (honest non-IID nodes of small networks were rejected round after round
    # otherwise). Late in training, with 287 public samples, one attacker of six now and then ties:
    # under a loaded CI run 6 of 48 slipped, in rounds 21-25 (validations equal, or one sample apart).
    assert rejected / considered >= 0.85, (rejected, considered, slipped)
    trust = {i: net.get(0, f"/accounts/{net.node_id(i)}")["trust"] for i in range(6)}
    assert max(trust[4], trust[5]) < min(trust[i] for i in range(4))
    assert max(trust[4], trust[5]) < 1 / 6
    # Four honest shards of six learn to about 88%; how fast depends on the CPU the trainers get.
    # Idle, 85% comes at height 32-42; with four CPU burners beside the six daemons, at 50; a run
    # of the whole suite on a busy machine needed more than 69 (it failed with 90 s to wait).
    acc = wait_for(lambda: (a := test_accuracy(net)[0]) >= 0.85 and a, 270, "85% accuracy under attack")
    assert acc >= 0.85


@pytest.mark.timeout(200)
def test_wrong_model_hash_is_never_final_and_costs_the_producer(make_testnet):
    net = make_testnet(4, slot_ms=1000, app="fl")
    cfg = net.home(3) / "config.toml"
    cfg.write_text(cfg.read_text().replace("wrong_model = false", "wrong_model = true"))
    net.start_all()
    liar = net.node_id(3)
    net.wait_height(12, timeout=90)
    producers = [net.get(0, f"/blocks/{h}")["producer"] for h in range(1, 13)]
    assert liar not in producers
    # after the liar's failed proposal the next proposer skips the round and carries the fault
    assert any(r["skipped"] == "round not agreed" and r["faults"] for r in rounds(net, 0, range(1, 13)))
    account = wait_for(lambda: (a := net.get(0, f"/accounts/{liar}"))["penalties_total"] >= 20 and a, 30,
                       "the liar's penalty")
    honest = net.get(0, f"/accounts/{net.node_id(0)}")
    assert account["stake"] < honest["stake"]
    h = max(net.heights())
    net.wait_height(h + 3, timeout=20)


@pytest.mark.timeout(200)
def test_daemon_killed_mid_training_resumes_from_disk(make_testnet):
    net = make_testnet(4, slot_ms=1000, app="fl")
    net.start_all()
    net.wait_height(6, timeout=60)
    before = net.get(2, "/fl/privacy")["releases"]
    net.kill(2, signal.SIGKILL)
    h = max(net.heights([0, 1, 3]))
    net.wait_height(h + 3, nodes=[0, 1, 3], timeout=30)
    net.start(2)
    wait_for(lambda: net.get(2, "/fl/model")["height"] >= max(net.heights([0, 1, 3])), 60, "node 2 to catch up")
    target = net.get(2, "/fl/model")["height"]
    wait_for(lambda: net.get(0, "/fl/model")["height"] >= target, 20, "node 0 at the same model height")
    assert net.get(2, f"/blocks/{target}")["app_hash"] == net.get(0, f"/blocks/{target}")["app_hash"]
    after = wait_for(lambda: (r := net.get(2, "/fl/privacy")["releases"]) > before and r, 30,
                     "node 2 to train again")
    assert after > before  # its accountant resumed from disk instead of starting over
    assert np.isfinite(test_accuracy(net, 2)[0])


@pytest.mark.timeout(240)
def test_delegates_on_different_cpu_kinds_keep_deciding_rounds(make_testnet):
    """Four daemons with four different BLAS kernels (one and two BLAS threads), as on four CPU
    generations, aggregating dense float32 updates whose suspicion scores differ in their last bits
    from kernel to kernel: no delegate ever reaches another decision than the proposer's (no
    proposal called a fault, none disagreed with), and the heights are decided with accepted
    updates. One round of the seven may be skipped: a slot that ran out on a loaded machine is
    retried as a skip by design, and only a disagreement would say anything about the CPUs."""
    from node.fl.settings import FLSettings
    from tests.integration.test_hostile import metric

    net = make_testnet(4, slot_ms=2000, app="fl",
                       genesis={"app": FLSettings(encoding="float32", topk_fraction=1.0).to_app_state()})
    net.rewrite_genesis()
    for i, core in enumerate(("Haswell", "Prescott", "Sandybridge", "Nehalem")):
        net.start(i, env={"OPENBLAS_CORETYPE": core, "OPENBLAS_NUM_THREADS": str(1 + i // 2)})
    net.wait_height(9, timeout=150)
    recs = rounds(net, 0, range(3, 10))
    assert all(metric(net, i, "fedchain_fl_events_total", event=event) == 0
               for i in range(4) for event in ("bad_payloads", "payloads_not_agreed"))
    decided = [r for r in recs if not r["skipped"]]
    assert len(decided) >= len(recs) - 1 and all(r["accepted"] >= 2 for r in decided), recs


@pytest.mark.timeout(180)
def test_daemons_with_standing_on_keep_one_record_and_agree_on_every_round(make_testnet):
    """With genesis ``standing = true`` every node derives the same record from final blocks and
    weighs the same senders alike: no proposal is called wrong or not agreed, and every node
    serves one standing at one height."""
    import json

    from node.fl.settings import FLSettings
    from tests.integration.test_hostile import metric

    net = make_testnet(4, slot_ms=2000, app="fl", genesis={"app": FLSettings(standing=True).to_app_state()})
    net.start_all()
    net.wait_height(6, timeout=90)

    def same_standing():
        views = [net.get(i, "/fl/standing") for i in range(4)]
        return len({json.dumps(v, sort_keys=True) for v in views}) == 1 and views[0]
    view = wait_for(same_standing, 20, "all nodes to serve one standing at one height")
    assert view["applies"] and {s["sender"] for s in view["senders"]} <= {net.node_id(i) for i in range(4)}
    assert view["senders"] and all(len(s["excess"]) == len(s["heights"]) <= 4 for s in view["senders"])
    assert all(metric(net, i, "fedchain_fl_events_total", event=event) == 0
               for i in range(4) for event in ("bad_payloads", "payloads_not_agreed"))


@pytest.mark.timeout(240)
def test_learning_resumes_after_a_site_wide_restart(make_testnet):
    """All daemons stop (power loss, upgrade) and start again: the updates that were in flight
    died with them, yet accepted updates appear again within three blocks of the restart."""
    net = make_testnet(4, slot_ms=2000, app="fl")
    net.start_all()
    net.wait_height(4, timeout=60)
    wait_for(lambda: any(r["accepted"] for r in rounds(net, 0, range(1, max(net.heights([0])) + 1))), 60,
             "a first accepted update")
    net.stop_all()
    for i in range(4):
        net.start(i)
    restart = max(wait_for(lambda: net.heights(), 60, "every daemon to answer again"))
    net.wait_height(restart + 3, timeout=90)
    accepted = [r["accepted"] for r in rounds(net, 0, range(restart + 1, restart + 4))]
    assert any(accepted), f"blocks {restart + 1}..{restart + 3} after the restart accepted {accepted}"


@pytest.mark.timeout(150)
def test_hostile_updates_are_rejected_with_reasons_and_disturb_nothing(make_testnet):
    import asyncio

    from gossip.crypto import KeyPair
    from learning.compression import sparsify, to_wire
    from node.fl.update import ModelUpdate
    from tests.gossip.rawpeer import RawPeer
    from tests.integration.test_hostile import metric

    net = make_testnet(4, slot_ms=2000, app="fl")
    net.start_all()
    net.wait_height(7, timeout=60)
    chain_id = net.get(0, "/genesis")["chain_id"]
    member = KeyPair.load(net.home(1) / "node_key.json")
    outsider = KeyPair.generate()

    def update(signer, *, base=None, height=None, dim=None, nan=False, bad_sig=False, seq=1, samples=100, scale=0.1):
        model = net.get(0, "/fl/model")
        d = dim or model["params"]
        vec = (scale * np.random.default_rng(seq).normal(size=d)).astype(np.float32)
        sparse = sparsify(vec, 10, "float32")
        wire = to_wire(sparse)
        if nan:
            wire[4] = np.full(10, np.nan, dtype="<f4").tobytes()
        u = ModelUpdate(chain_id, signer.node_id, seq, bytes.fromhex(model["hash"]) if base is None else base,
                        model["height"] if height is None else height, samples, 1.0, sparse).signed(signer)
        raw = u.to_wire()
        raw[7] = wire
        if bad_sig:
            raw[8] = bytes(64)
        return raw

    cases = {
        "unregistered": update(outsider),
        "unknown_base": update(member, base=bytes(32)),
        "stale_base": update(member, height=1),
        "wrong_shape": update(member, dim=50),
        "non_finite": update(member, nan=True),
        "bad_signature": update(member, bad_sig=True),
        "too_many_samples": update(member, samples=10**9),   # more than the member declared
        "norm_bound": update(member, scale=1e30),            # beyond what an honest update can be
    }

    async def attack() -> None:
        from gossip.codec import pack

        for reason, wire in cases.items():  # a fresh peer each, so no ban hides a later case
            peer = RawPeer(chain_id)
            await peer.connect_and_handshake(net.url(0))
            await peer.send(peer.envelope("fl/update", pack(wire)))
            await asyncio.sleep(0.2)
            await peer.close()
        peer = RawPeer(chain_id)
        await peer.connect_and_handshake(net.url(0))
        await peer.send(peer.envelope("fl/update", b"\x00" * (5 << 20)))                  # oversized
        for seq in (11, 12):                                                              # two for one base
            await peer.send(peer.envelope("fl/update", pack(update(member, seq=seq))))
        await asyncio.sleep(0.5)
        await peer.close()

    asyncio.run(attack())
    reasons = [*cases, "oversized", "equivocation"]
    wait_for(lambda: all(metric(net, 0, "fedchain_fl_updates_rejected_total", reason=r) >= 1 for r in reasons),
             15, "every hostile update counted by its reason")
    # nothing else disturbed: the honest nodes' updates keep being accepted block after block
    h = max(net.heights())
    net.wait_height(h + 3, timeout=30)
    assert all(net.get(0, f"/fl/updates?height={k}")["accepted"] >= 3 for k in range(h + 1, h + 4))


@pytest.mark.timeout(200)
def test_a_joining_device_contributes_only_once_registered(make_testnet, tmp_path):
    import subprocess

    from tests.integration.harness import CLI, REPO, cli

    net = make_testnet(4, slot_ms=2000, app="fl")
    net.start_all()
    net.wait_height(3, timeout=60)
    home, port = tmp_path / "device", net.base_port + 4
    log = open(tmp_path / "device.out", "wb")
    pin = net.get(0, "/status")["genesis_hash"]
    own = tmp_path / "own.npz"   # the device brings its own data (here: digits like the others')
    shard = np.load(net.home(0) / "data" / "train.npz")
    np.savez(own, x=shard["x"][::2], y=shard["y"][::2])
    net.procs[4] = subprocess.Popen([*CLI, "join", net.url(0), "--home", str(home), "--port", str(port),
                                     "--genesis-hash", pin, "--data", str(own), "--format", "npz"],
                                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: net.get(4, "/status")["final_height"] >= net.heights([0])[0] - 1, 60,
             "the device to sync (verifying every FL round by re-running it)")
    device = net.get(4, "/status")["node_id"]
    assert net.get(4, "/fl/privacy")["releases"] == 0  # not a member: it has sent nothing
    res = cli("tx", "register", device, "--home", str(net.home(0)), "--node", net.url(0), "--wait",
              "--timeout", "30", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    registered_at = max(net.heights())

    def device_accepted():
        top = net.heights([0])[0]
        for h in range(registered_at + 1, top + 1):
            for u in net.get(0, f"/fl/updates?height={h}")["updates"]:
                if u["sender"] == device and u["accepted"]:
                    return h
        return None

    wait_for(device_accepted, 60, "an accepted update from the newly registered device")
    res = cli("model", "--updates", str(net.heights([0])[0]), "--node", net.url(4))
    assert res.returncode == 0 and "global model" in res.stdout, res.stdout + res.stderr
