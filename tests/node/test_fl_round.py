"""block_round and the FL block payload: the round (learning.round.run_round) as a block carries
it, which every verifying delegate re-runs, so it must be bit-for-bit deterministic, and a payload
from a peer must be parsed strictly. The round's own rules are tested in
tests/learning/test_round.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gossip.codec import DecodeError, pack
from gossip.crypto import sha256
from learning.aggregation import staleness_weight
from learning.round import run_round
from node.fl.blobs import model_hash
from node.fl.round import (
    NOT_AGREED,
    PAYLOAD_VERSION,
    Considered,
    Equivocation,
    Payload,
    block_round,
    scores_agree,
)
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
    result = block_round(FLSettings(), MODEL, 3, BASE, [], {}, seed=4, evaluate=None)
    assert result.model is MODEL
    assert result.payload == Payload("clustering", BASE, BASE, ())


def test_repeat_gives_bit_identical_payloads() -> None:
    deltas, mu = honest_deltas(6, DIM, seed=1)
    ups = updates_from(deltas, [0, 1, 2, 2, 1, 0])
    target = MODEL + mu

    def evaluate(model: np.ndarray) -> float:
        return -float(np.abs(model - target).sum())

    runs = [block_round(FLSettings(), MODEL, 2, BASE, ups, trust_of(ups), seed=9, evaluate=evaluate) for _ in range(3)]
    assert len({r.model.tobytes() for r in runs}) == 1
    assert len({r.payload.encode() for r in runs}) == 1
    assert runs[0].payload.new_hash == model_hash(runs[0].model)
    assert runs[0].model.dtype == np.float32 and runs[0].payload.base_hash == BASE


def test_the_payload_lists_each_update_as_the_round_decided() -> None:
    """Ids, senders and bases from the updates; weights (samples x staleness discount in heights),
    decisions and scores from learning.round.run_round on the updates as receivers decode them."""
    deltas, _ = honest_deltas(3, DIM, seed=2)
    ups = updates_from(deltas, [5, 3, 0], samples=10)
    settings = FLSettings(rule="fedavg", server_lr=0.5)
    result = block_round(settings, MODEL, 5, BASE, ups, {}, seed=0, evaluate=None)
    outcome = run_round(settings, MODEL, np.stack([u.dense() for u in ups]), [10, 11, 12], [0, 2, 5], [0.0] * 3, seed=0)
    assert np.array_equal(result.model, outcome.model) and result.payload.new_hash == model_hash(outcome.model)
    assert [c.update_id for c in result.payload.considered] == [u.id for u in ups]
    assert [(c.sender, c.base_height) for c in result.payload.considered] == [(IDS[i], h) for i, h in enumerate([5, 3, 0])]
    assert [c.weight for c in result.payload.considered] == outcome.weights.tolist()
    assert [c.weight for c in result.payload.considered] == [10 * staleness_weight(0, 0.5), 11 * staleness_weight(2, 0.5),
                                                            12 * staleness_weight(5, 0.5)]
    assert all(c.accepted and c.reason == "" for c in result.payload.considered)


def test_trust_comes_from_the_chain_and_a_sender_without_stake_is_listed() -> None:
    deltas, _ = honest_deltas(3, DIM, seed=4)
    ups = updates_from(deltas)
    trust = {IDS[0]: 0.5, IDS[1]: 0.5}  # the third sender has no stake
    result = block_round(FLSettings(rule="trust"), MODEL, 0, BASE, ups, trust, seed=0, evaluate=None)
    assert [c.accepted for c in result.payload.considered] == [True, True, False]
    assert result.payload.considered[2].reason == "zero trust or weight"
    assert math.isinf(result.payload.considered[2].score)


def test_an_overflowing_round_is_skipped_with_its_reason() -> None:
    deltas = np.full((2, DIM), 100.0, dtype=np.float32)
    ups = updates_from(deltas)
    result = block_round(FLSettings(rule="fedavg", server_lr=1e37), MODEL, 0, BASE, ups, {}, seed=0, evaluate=None)
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
    p = block_round(FLSettings(), MODEL, 0, BASE, ups, trust_of(ups), seed=0, evaluate=broken).payload
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

