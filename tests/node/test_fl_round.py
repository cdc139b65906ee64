"""run_round and the FL block payload: the step every verifying delegate re-runs, so it must be
bit-for-bit deterministic, and a payload from a peer must be parsed strictly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gossip.codec import DecodeError, pack
from gossip.crypto import sha256
from learning.aggregation import staleness_weight
from learning.attacks import craft_updates
from node.fl.blobs import model_hash
from node.fl.round import PAYLOAD_VERSION, Considered, Payload, run_round
from node.fl.settings import FLSettings
from tests.consensus.helpers import IDS, KEYS
from tests.node.helpers import BASE, honest_deltas, make_update

DIM = 120
MODEL = np.linspace(-0.5, 0.5, DIM, dtype=np.float32)


def updates_from(deltas: np.ndarray, base_heights: list[int] | None = None, samples: int = 20):
    heights = base_heights or [0] * len(deltas)
    return [make_update(KEYS[i], d, base_height=h, samples=samples + i) for i, (d, h) in enumerate(zip(deltas, heights))]


def trust_of(updates) -> dict[str, float]:
    return {u.sender: 1.0 / len(updates) for u in updates}


def test_empty_round_keeps_the_model() -> None:
    result = run_round(FLSettings(), MODEL, 3, BASE, [], {}, seed=4, evaluate=None)
    assert result.model is MODEL
    assert result.payload == Payload("clustering", BASE, BASE, ())


def test_repeat_gives_bit_identical_results() -> None:
    deltas, mu = honest_deltas(6, DIM, seed=1)
    ups = updates_from(deltas, [0, 1, 2, 2, 1, 0])
    target = MODEL + mu

    def evaluate(vec: np.ndarray) -> float:
        return -float(np.abs(MODEL + vec - target).sum())

    runs = [run_round(FLSettings(), MODEL, 2, BASE, ups, trust_of(ups), seed=9, evaluate=evaluate) for _ in range(3)]
    assert len({r.model.tobytes() for r in runs}) == 1
    assert len({r.payload.encode() for r in runs}) == 1
    assert runs[0].payload.new_hash == model_hash(runs[0].model)
    assert runs[0].model.dtype == np.float32 and runs[0].payload.base_hash == BASE


def test_fedavg_moves_the_model_by_the_weighted_mean() -> None:
    deltas, _ = honest_deltas(3, DIM, seed=2)
    ups = updates_from(deltas, samples=10)  # 10, 11, 12 samples
    settings = FLSettings(rule="fedavg", server_lr=0.5)
    result = run_round(settings, MODEL, 0, BASE, ups, {}, seed=0, evaluate=None)
    w = np.array([10, 11, 12], dtype=np.float64)
    expected = MODEL + np.float32(0.5) * (w @ deltas.astype(np.float64) / w.sum()).astype(np.float32)
    assert np.allclose(result.model, expected, atol=1e-6)
    assert [c.weight for c in result.payload.considered] == [10.0, 11.0, 12.0]
    assert [c.sender for c in result.payload.considered] == IDS[:3]
    assert [c.update_id for c in result.payload.considered] == [u.id for u in ups]
    assert all(c.accepted and c.reason == "" for c in result.payload.considered)


def test_staleness_lowers_weights() -> None:
    deltas, _ = honest_deltas(3, DIM, seed=3)
    ups = [make_update(KEYS[i], d, base_height=h, samples=50) for i, (d, h) in enumerate(zip(deltas, [5, 3, 0]))]
    result = run_round(FLSettings(rule="fedavg"), MODEL, 5, BASE, ups, {}, seed=0, evaluate=None)
    weights = [c.weight for c in result.payload.considered]
    assert weights[0] > weights[1] > weights[2]
    assert weights == [50 * staleness_weight(s, 0.5) for s in (0, 2, 5)]
    flat = run_round(FLSettings(rule="fedavg", staleness_a=0.0), MODEL, 5, BASE, ups, {}, seed=0, evaluate=None)
    assert [c.weight for c in flat.payload.considered] == [50.0, 50.0, 50.0]


def test_trust_rule_uses_the_senders_trust() -> None:
    deltas, _ = honest_deltas(3, DIM, seed=4)
    ups = updates_from(deltas)
    trust = {IDS[0]: 0.5, IDS[1]: 0.5}  # the third sender has no stake
    result = run_round(FLSettings(rule="trust"), MODEL, 0, BASE, ups, trust, seed=0, evaluate=None)
    assert [c.accepted for c in result.payload.considered] == [True, True, False]
    assert result.payload.considered[2].reason == "zero trust or weight"
    assert math.isinf(result.payload.considered[2].score)


def test_sign_flipped_outlier_is_rejected_by_the_default_rule() -> None:
    honest, mu = honest_deltas(7, DIM, seed=5)
    flipped = craft_updates("sign_flip", honest[:1], honest[1:], np.random.default_rng(0), scale=3.0)
    ups = updates_from(np.concatenate([flipped, honest]))
    settings = FLSettings()
    assert settings.rule == "clustering"
    result = run_round(settings, MODEL, 0, BASE, ups, trust_of(ups), seed=1, evaluate=None)
    considered = result.payload.considered
    assert not considered[0].accepted and considered[0].reason.startswith("clustering")
    assert sum(c.accepted for c in considered[1:]) >= 6
    step = result.model - MODEL
    assert np.dot(step, mu) > 0  # the model still moves the honest way


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_an_overflowing_aggregate_is_refused() -> None:
    deltas = np.full((2, DIM), 100.0, dtype=np.float32)
    ups = updates_from(deltas)
    with pytest.raises(ValueError, match="non-finite model"):
        run_round(FLSettings(rule="fedavg", server_lr=1e37), MODEL, 0, BASE, ups, {}, seed=0, evaluate=None)


# ----- payload wire form ---------------------------------------------------------------------

PAYLOAD = Payload("clustering", BASE, sha256(b"new"), (
    Considered(sha256(b"u1"), IDS[0], 20.0, True, "", 0.4),
    Considered(sha256(b"u2"), IDS[1], 10.5, False, "clustering: cluster outlier", math.inf),
), faults=(([["header"], b"sig"], b"bad payload"),))


def test_payload_round_trip() -> None:
    assert Payload.decode(PAYLOAD.encode(), 1 << 20) == PAYLOAD
    empty = Payload("median", BASE, BASE, ())
    assert Payload.decode(empty.encode(), 1 << 20) == empty


def test_considered_json_has_no_infinite_score() -> None:
    assert PAYLOAD.considered[1].to_json()["score"] is None
    assert PAYLOAD.considered[0].to_json() == {"id": sha256(b"u1").hex(), "sender": IDS[0], "weight": 20.0,
                                               "accepted": True, "reason": "", "score": 0.4}


def _fields(**change) -> list:
    fields = {"version": PAYLOAD_VERSION, "rule": "clustering", "base": BASE, "new": BASE,
              "rows": [c.to_wire() for c in PAYLOAD.considered], "faults": []}
    fields.update(change)
    return list(fields.values())


ROW = PAYLOAD.considered[0].to_wire()

BAD_PAYLOADS = {
    "not msgpack": (b"\xc1", "malformed"),
    "empty": (b"", "empty message"),
    "not a list": (pack({"rule": "clustering"}), "not an fl/1 payload"),
    "other version": (pack(_fields(version="fl/2")), "not an fl/1 payload"),
    "short": (pack(_fields()[:5]), "not an fl/1 payload"),
    "rule not str": (pack(_fields(rule=1)), "fields malformed"),
    "base not bin": (pack(_fields(base=BASE.hex())), "fields malformed"),
    "rows not list": (pack(_fields(rows={})), "fields malformed"),
    "faults not list": (pack(_fields(faults=b"")), "fields malformed"),
    "row too short": (pack(_fields(rows=[ROW[:5]])), "row malformed"),
    "row id not bin": (pack(_fields(rows=[["id", *ROW[1:]]])), "row malformed"),
    "row weight int": (pack(_fields(rows=[[*ROW[:2], 20, *ROW[3:]]])), "row malformed"),
    "row accepted int": (pack(_fields(rows=[[*ROW[:3], 1, *ROW[4:]]])), "row malformed"),
    "row score missing": (pack(_fields(rows=[[*ROW[:5], None]])), "row malformed"),
    "fault not a pair": (pack(_fields(faults=[[["h"]]])), "fault malformed"),
    "fault header not list": (pack(_fields(faults=[[b"h", b"p"]])), "fault malformed"),
    "fault payload not bin": (pack(_fields(faults=[[["h"], "p"]])), "fault malformed"),
}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_decode_rejects_malformed_payloads(name: str) -> None:
    data, message = BAD_PAYLOADS[name]
    with pytest.raises(DecodeError, match=message):
        Payload.decode(data, 1 << 20)


def test_decode_enforces_the_size_cap() -> None:
    data = PAYLOAD.encode()
    with pytest.raises(DecodeError, match="exceeds the cap"):
        Payload.decode(data, len(data) - 1)
    assert Payload.decode(data, len(data)) == PAYLOAD

