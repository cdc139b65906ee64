"""A sender's standing (learning/standing.py): the weight factor its last accepted scores give it,
the record rounds keep, and the round and simulator that apply it."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from learning import standing
from learning.round import run_round
from learning.settings import FLSettings
from learning.standing import FLOOR, HORIZON, WINDOW, applies, crowd, factor, factors, standing_after


def test_standing_is_full_until_enough_scores_then_falls_linearly_to_the_floor() -> None:
    assert factor([]) == factor([0.9]) == 1.0                     # one round is that round's business
    assert factor([0.05, 0.10]) == 1.0
    assert factor([0.30, 0.30]) == FLOOR and factor([1.0, 1.0, 1.0]) == FLOOR
    assert factor([0.15, 0.25]) == pytest.approx(0.5)
    assert 1.0 > factor([0.12, 0.15, 0.2]) > factor([0.2, 0.25, 0.22]) > FLOOR


def test_standing_is_the_same_double_whatever_the_machine() -> None:
    """Python floats, a fixed order: the quartile, the excess, the mean and the factor are
    correctly rounded IEEE-754 operations, so every verifier gets the very bits a proposer did
    (they enter the payload's weights, which verifiers compare exactly)."""
    excess = [0.1137, 0.2421, 0.1876, 0.2012]
    mean = (((0.1137 + 0.2421) + 0.1876) + 0.2012) / 4
    assert factor(excess) == (0.30 - mean) / (0.30 - 0.10)
    record = standing_after({}, list("abcdef"), [True] * 6, [0.9137, 0.5, 0.8001, 0.6, 0.85, 0.55], now=1)
    assert record["a"] == ((1, 0.9137 - 0.55),)                   # 6 // 4 = the second lowest: 0.55


def test_an_excess_counts_only_in_a_crowd() -> None:
    """A lone outlier round after round (an honest device whose data nobody shares) keeps its
    standing; three or more (a fifth of a large round) far above the quartile lose theirs."""
    assert [crowd(n) for n in (4, 10, 15, 20, 40)] == [3, 3, 3, 4, 8]
    lone = [0.5, 0.52, 0.55, 0.6, 0.95]
    record: dict = {}
    for now in range(4):
        record = standing_after(record, list("abcde"), [True] * 5, lone, now)
    assert record["e"] == tuple((h, 0.0) for h in range(4)) and factors(record, ["e"]) == [1.0]
    three = [0.5, 0.52, 0.55, 0.6, 0.9, 0.92, 0.95]
    for now in range(4, 8):
        record = standing_after(record, list("abcdefg"), [True] * 7, three, now)
    assert factors(record, list("abcdefg")) == [1.0, 1.0, 1.0, 1.0, FLOOR, FLOOR, FLOOR]


def test_rejected_updates_never_make_up_a_crowd() -> None:
    """Attackers the rule rejects round after round still score far above the quartile; counted in
    the crowd they turned it against the two honest updates that sat highest (IPM at 40%, seen on
    the asynchronous MLP), while they themselves, never accepted, kept full standing."""
    scores = [0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.72, 1.4, 1.5, 1.6, 1.7]
    accepted = [True] * 7 + [False] * 4
    record: dict = {}
    for now in range(4):
        record = standing_after(record, list("abcdefghijk"), accepted, scores, now)
    assert factors(record, list("abcdefg")) == [1.0] * 7
    assert all(e == 0.0 for s in "fg" for _, e in record[s])


def test_the_record_keeps_each_accepted_excess_over_the_rounds_lower_quartile() -> None:
    scores = [0.9, 0.3, math.nan, 7.0, 0.5, 0.4, 0.45, 0.6]      # finite sorted: .3 .4 .45 .5 .6 .9 7 -> quartile .4
    record = standing_after({}, list("abcdefgh"), [True, False, True, True, True, True, True, True], scores, now=1)
    assert record["a"] == ((1, 0.9 - 0.4),)
    assert "b" not in record and "c" not in record                 # b rejected, c's score no number
    assert record["d"] == ((1, standing.CAP),) and record["f"] == ((1, 0.0),) and record["g"] == ((1, 0.45 - 0.4),)
    for now in range(2, 8):
        record = standing_after(record, ["a", "z"], [True, True], [0.1 * now, 0.0], now)
    assert [h for h, _ in record["a"]] == list(range(8 - WINDOW, 8))   # the newest WINDOW
    assert all(e == 0.0 for _, e in record["z"])                   # below the quartile: no excess, none banked
    # a sender lapses HORIZON rounds after its last accepted update, however often it is rejected
    later = standing_after(record, ["d"], [False], [0.5], now=1 + HORIZON - 1)
    assert "d" in later
    assert "d" not in standing_after(later, ["d"], [False], [0.5], now=1 + HORIZON)
    assert factors(record, ["a", "nobody"])[1] == 1.0
    assert standing_after({}, ["a"], [True], [math.inf], now=1) == {}


def test_only_the_clustering_rule_weighs_by_standing() -> None:
    assert applies(FLSettings(standing=True))
    assert not applies(FLSettings())                  # off by default (docs/decisions.md)
    assert not applies(FLSettings(rule="krum", standing=True))       # its scores are squared distances, not the bar's scale


def test_a_round_scales_each_weight_by_its_senders_standing() -> None:
    """Standing scales the listed weights (samples x discount x standing) and with them each
    sender's say in the aggregate; nobody is rejected for it."""
    settings = dataclasses.replace(FLSettings(), rule="fedavg")
    model = np.zeros(4, dtype=np.float32)
    updates = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 8]], dtype=np.float32)
    full = run_round(settings, model, updates, [10, 10, 10], [0, 0, 3], [1, 1, 1], seed=1)
    low = run_round(settings, model, updates, [10, 10, 10], [0, 0, 3], [1, 1, 1], seed=1, standing=[1.0, 1.0, FLOOR])
    assert low.weights.tolist() == [10.0, 10.0, full.weights[2] * FLOOR]
    assert low.accepted.all() and full.accepted.all()
    assert low.model[3] < full.model[3] / 5


def test_the_simulator_keeps_the_record_a_chain_keeps() -> None:
    """The simulator records each round's accepted scores as a chain's final blocks do, and weighs
    the next round's senders by them; with ``standing`` off it keeps no record."""
    from learning.sim import SimConfig
    from learning.sim.engine import Simulator

    def run(on: bool) -> Simulator:
        sim = Simulator(SimConfig.of(num_nodes=6, rounds=3, dataset="synthetic", standing=on, seed=0))
        sim.run()
        return sim

    on, off = run(True), run(False)
    assert off.standing == {}
    assert on.standing and all(len(v) <= WINDOW and all(h < 3 for h, _ in v) for v in on.standing.values())
