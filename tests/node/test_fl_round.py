"""run_round and the FL block payload: the step every verifying delegate re-runs, so it must be
bit-for-bit deterministic, and a payload from a peer must be parsed strictly."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gossip.codec import DecodeError, pack
from gossip.crypto import sha256
from learning.aggregation import DEFAULT_WEIGHT_CAP, staleness_weight
from learning.attacks import craft_updates
from node.fl.blobs import model_hash
from node.fl.round import NOT_AGREED, PAYLOAD_VERSION, Considered, Equivocation, Payload, run_round, scores_agree
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
    # the library caps each weight at DEFAULT_WEIGHT_CAP x the median claim (11): 12 counts as 11
    w = np.minimum(np.array([10, 11, 12], dtype=np.float64), DEFAULT_WEIGHT_CAP * 11)
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


def test_an_overflowing_round_is_skipped_with_its_reason() -> None:
    deltas = np.full((2, DIM), 100.0, dtype=np.float32)
    ups = updates_from(deltas)
    result = run_round(FLSettings(rule="fedavg", server_lr=1e37), MODEL, 0, BASE, ups, {}, seed=0, evaluate=None)
    p = result.payload
    assert result.model is MODEL and p.new_hash == p.base_hash == BASE
    assert p.skipped == "the new model is not finite"
    assert [(c.update_id, c.accepted, c.reason) for c in p.considered] == \
        [(u.id, False, "round skipped: the new model is not finite") for u in ups]


def test_a_rule_that_raises_skips_the_round() -> None:
    """The aggregation library raises ValueError (AggregationError) when it cannot aggregate."""
    def broken(vector: np.ndarray) -> float:
        return float("nan")  # the clustering rule refuses a non-finite evaluation

    ups = updates_from(honest_deltas(4, DIM, seed=1)[0])
    p = run_round(FLSettings(), MODEL, 0, BASE, ups, trust_of(ups), seed=0, evaluate=broken).payload
    assert p.skipped.startswith("aggregation failed: clustering: evaluate returned a non-finite value")
    assert p.new_hash == BASE and not any(c.accepted for c in p.considered)


# ----- payload wire form ---------------------------------------------------------------------

PAYLOAD = Payload("clustering", BASE, sha256(b"new"), (
    Considered(sha256(b"u1"), IDS[0], 3, 20.0, True, "", 0.4),
    Considered(sha256(b"u2"), IDS[1], 2, 10.5, False, "clustering: cluster outlier", math.inf),
), evals=(0.5, 0.75), equivocations=(Equivocation(IDS[2], 3, sha256(b"a"), sha256(b"b")),),
    faults=(([["header"], b"sig"], b"bad payload"),))


def test_payload_round_trip() -> None:
    assert Payload.decode(PAYLOAD.encode(), 1 << 20) == PAYLOAD
    for other in (Payload("median", BASE, BASE, ()), Payload("median", BASE, BASE, (), skipped=NOT_AGREED)):
        assert Payload.decode(other.encode(), 1 << 20) == other


def test_considered_json_has_no_infinite_score() -> None:
    assert PAYLOAD.considered[1].to_json()["score"] is None
    assert PAYLOAD.considered[0].to_json() == {"id": sha256(b"u1").hex(), "sender": IDS[0], "base_height": 3,
                                               "weight": 20.0, "accepted": True, "reason": "", "score": 0.4}


def test_payload_json_summarizes_the_round() -> None:
    view = PAYLOAD.to_json()
    assert (view["considered"], view["accepted"], view["faults"], view["skipped"]) == (2, 1, 1, None)
    assert view["equivocations"] == [{"sender": IDS[2], "base_height": 3, "first": sha256(b"a").hex(),
                                      "second": sha256(b"b").hex()}]


@pytest.mark.parametrize("a, b, agree", [(0.4, 0.4 * (1 + 1e-9), True), (0.4, 0.41, False), (1e-9, 2e-9, True),
                                         (math.inf, math.inf, True), (math.nan, math.nan, True),
                                         (math.inf, 1.0, False), (math.nan, 0.0, False)])
def test_scores_agree_within_the_tolerance(a: float, b: float, agree: bool) -> None:
    assert scores_agree(a, b) is agree


def _fields(**change) -> list:
    fields = {"version": PAYLOAD_VERSION, "rule": "clustering", "base": BASE, "new": BASE,
              "rows": [c.to_wire() for c in PAYLOAD.considered], "evals": [], "equivocations": [], "faults": [],
              "skipped": ""}
    fields.update(change)
    return list(fields.values())


ROW = PAYLOAD.considered[0].to_wire()

EQ = PAYLOAD.equivocations[0].to_wire()

BAD_PAYLOADS = {
    "not msgpack": (b"\xc1", "malformed"),
    "empty": (b"", "empty message"),
    "not a list": (pack({"rule": "clustering"}), "not an fl/2 payload"),
    "other version": (pack(_fields(version="fl/1")), "not an fl/2 payload"),
    "short": (pack(_fields()[:8]), "not an fl/2 payload"),
    "rule not str": (pack(_fields(rule=1)), "fields malformed"),
    "base not bin": (pack(_fields(base=BASE.hex())), "fields malformed"),
    "rows not list": (pack(_fields(rows={})), "fields malformed"),
    "faults not list": (pack(_fields(faults=b"")), "fields malformed"),
    "skipped not str": (pack(_fields(skipped=None)), "fields malformed"),
    "row too short": (pack(_fields(rows=[ROW[:6]])), "row malformed"),
    "row id not bin": (pack(_fields(rows=[["id", *ROW[1:]]])), "row malformed"),
    "row base height negative": (pack(_fields(rows=[[*ROW[:2], -1, *ROW[3:]]])), "row malformed"),
    "row weight int": (pack(_fields(rows=[[*ROW[:3], 20, *ROW[4:]]])), "row malformed"),
    "row accepted int": (pack(_fields(rows=[[*ROW[:4], 1, *ROW[5:]]])), "row malformed"),
    "row score missing": (pack(_fields(rows=[[*ROW[:6], None]])), "row malformed"),
    "evaluation above 1": (pack(_fields(evals=[1.5])), "evaluations must be floats in"),
    "evaluation not float": (pack(_fields(evals=[1])), "evaluations must be floats in"),
    "equivocation short": (pack(_fields(equivocations=[EQ[:3]])), "equivocation malformed"),
    "equivocation id not bin": (pack(_fields(equivocations=[[*EQ[:3], "b"]])), "equivocation malformed"),
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

