"""The simulator end to end on digits and synthetic data (small, bounded runs), and its config:
the chain's FL settings plus simulation knobs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from learning.settings import FLSettings
from learning.sim import SimConfig, Simulator, run_simulation

TASK = {"dataset": "digits", "partition": "iid", "model": "logreg", "num_nodes": 20, "rounds": 20, "lr": 0.1,
        "local_epochs": 2, "batch_size": 16}
# FedAvg as McMahan et al.: dense updates, no clip or noise, a constant step
FEDAVG = {"rule": "fedavg", "topk_fraction": None, "clip_norm": None, "noise_multiplier": 0.0,
          "lr_schedule": "constant"}
BASE = {**TASK, **FEDAVG}
# Sign flip scaled by 4: the reversed updates outweigh the honest ones, so plain FedAvg diverges.
SIGN_FLIP = {"attack": "sign_flip", "byzantine_fraction": 0.2, "attack_params": {"scale": 4.0}}
F4 = {"rule_params": {"f": 4}}  # the Byzantine count a chain's genesis would tell the rule


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_config_is_the_fl_settings_plus_simulation_knobs() -> None:
    """Every FL setting, and its default, is FLSettings' (the genesis defaults); the simulation
    adds only knobs FLSettings does not have."""
    assert SimConfig().fl == FLSettings() and SimConfig.of() == SimConfig()
    fl_names = {f.name for f in dataclasses.fields(FLSettings)}
    sim_names = {f.name for f in dataclasses.fields(SimConfig)} - {"fl"}
    assert not fl_names & sim_names
    cfg = SimConfig.of(**{**TASK, "rule": "median", "noise_multiplier": 0.5, "seed": 3})
    assert cfg.fl == dataclasses.replace(FLSettings(), dataset="digits", partition="iid", model="logreg", lr=0.1,
                                         local_epochs=2, batch_size=16, rule="median", noise_multiplier=0.5, seed=3)
    assert (cfg.num_nodes, cfg.rounds) == (20, 20)
    assert SimConfig.of(**cfg.to_dict()) == cfg and set(cfg.to_dict()) == fl_names | sim_names


@pytest.fixture(scope="module")
def clean_fedavg() -> float:
    return run_simulation(SimConfig.of(**BASE)).final_accuracy()


def test_clean_fedavg_learns(clean_fedavg: float) -> None:
    assert clean_fedavg > 0.85


@pytest.mark.parametrize("rule", ["multikrum", "clustering"])
def test_robust_rule_survives_sign_flip_where_fedavg_collapses(clean_fedavg: float, rule: str) -> None:
    attacked = run_simulation(SimConfig.of(**BASE, **SIGN_FLIP))
    defended = run_simulation(SimConfig.of(**{**BASE, **SIGN_FLIP, **F4, "rule": rule}))
    assert attacked.final_accuracy() < 0.5
    assert defended.final_accuracy() > clean_fedavg - 0.05
    total = defended.summary()
    # precision: each node's shard is the chain's (the public evaluation set is carved out first), 57
    # digits, so honest updates scatter and a few are refused
    assert total["detection_recall"] > 0.9 and total["detection_precision"] > 0.85
    assert len(defended.byzantine) == 4
    for r in defended.rounds:
        assert r.true_pos + r.false_neg == r.num_byzantine == 4
        assert r.true_pos + r.false_pos + r.false_neg + r.true_neg == r.num_updates == 20
        assert r.num_accepted == r.false_neg + r.true_neg


def test_deterministic_and_json_ready() -> None:
    cfg = SimConfig.of(**{**TASK, "rounds": 4}, clients_per_round=8)  # the product pipeline, noise seeded
    a, b = run_simulation(cfg), run_simulation(cfg)
    assert [r.accuracy for r in a.rounds] == [r.accuracy for r in b.rounds]
    assert [r.bytes_sent for r in a.rounds] == [r.bytes_sent for r in b.rounds]
    doc = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert doc["config"]["topk_fraction"] == 0.1 and len(doc["rounds"]) == 4


def test_compression_counts_exact_bytes() -> None:
    sim = Simulator(SimConfig.of(**{**BASE, "rounds": 3, "topk_fraction": 0.01, "encoding": "int8"}))
    result = sim.run()
    k = max(1, round(0.01 * sim.dim))
    assert 256 <= sim.dim < 65536 and k < 64
    # array, dim, "int8", scale, then two bins: index varints (1 byte per gap below 128, 2 below
    # 16,384 > dim) and k int8 values; exact sizes are checked against msgpack in test_compression
    fixed = 1 + 3 + 5 + 9 + 2 + (2 + k)
    for r in result.rounds:
        assert 20 * (fixed + k) <= r.bytes_sent <= 20 * (fixed + 2 * k)
        assert r.dense_bytes == 20 * 4 * sim.dim
    assert result.summary()["compression_ratio"] > 30
    assert all(np.abs(n.client.compressor.residual).max() > 0 for n in sim.nodes)


def test_privacy_budget_stops_nodes() -> None:
    privacy = {"preset": "local-dp", "epsilon": 5.0, "noise_multiplier": 3.0}
    cfg = SimConfig.of(**{**BASE, "rounds": 50, "clip_norm": 1.0, "privacy": privacy, "local_epochs": 1})
    sim = Simulator(cfg)
    result = sim.run()
    assert len(result.rounds) < 50                         # every node ran out of budget
    assert all(not n.client.can_release() for n in sim.nodes)
    assert 0 < result.rounds[-1].max_epsilon <= 5.0


def test_async_mode_reports_staleness() -> None:
    cfg = SimConfig.of(**{**BASE, "rounds": 30, "rule": "multikrum", "rule_params": {"f": 1}}, mode="async",
                       clients_per_round=5,
                       max_staleness=2, speed_sigma=1.0, **SIGN_FLIP)
    result = run_simulation(cfg)
    assert len(result.rounds) == 30
    assert all(r.num_updates == 5 for r in result.rounds)
    assert max(r.mean_staleness for r in result.rounds) > 0
    assert sum(r.dropped_stale for r in result.rounds) > 0
    times = [r.sim_time for r in result.rounds]
    assert times == sorted(times)
    assert result.final_accuracy() > 0.7


def test_selection_policies_pick_different_updates_from_the_same_arrivals() -> None:
    """More arrivals than ``max_updates``: the genesis policy picks, as a chain's pool does. Every
    policy sees the same arrivals; ``all`` aggregates them all, the others exactly ``max_updates``
    (uploaded bytes still count every candidate), and they do not pick the same nodes."""
    shape = {**BASE, "rounds": 4, "num_nodes": 12, "rule": "clustering"}
    runs = {policy: run_simulation(SimConfig.of(**shape, mode="async", clients_per_round=8, max_updates=3,
                                                selection=policy, **SIGN_FLIP))
            for policy in ("all", "random", "trust", "pso")}
    arrivals = runs["all"].rounds   # one update per sender, as a chain's pool keeps
    assert all(r.candidates == 8 and r.num_updates == len(set(r.nodes)) for r in arrivals)
    assert any(r.num_updates < 8 for r in arrivals)      # a fast node arrived twice: its newest counts
    for policy in ("random", "trust", "pso"):
        rounds = runs[policy].rounds
        assert [r.sim_time for r in rounds] == [r.sim_time for r in arrivals]
        assert all(r.num_updates == 3 and r.candidates == 8 and r.uploaded_bytes > r.bytes_sent for r in rounds)
        assert all(set(r.nodes) <= set(a.nodes) and len(set(r.nodes)) == 3 for r, a in zip(rounds, arrivals))
    # equal stakes at first: trust takes the lowest sender ids among the first round's arrivals
    assert runs["trust"].rounds[0].nodes == sorted(arrivals[0].nodes)[:3]
    picks = {policy: [r.nodes for r in run.rounds] for policy, run in runs.items() if policy != "all"}
    assert picks["random"] != picks["trust"] and picks["pso"] != picks["trust"] and picks["pso"] != picks["random"]


def test_data_attack_and_partition_options() -> None:
    cfg = SimConfig.of(**{**BASE, "rounds": 5, "partition": "dirichlet", "dirichlet_alpha": 0.3},
                       attack="label_flip", byzantine_fraction=0.3, attack_params={"fraction": 1.0})
    sim = Simulator(cfg)
    flipped = [n for n in sim.nodes if n.byzantine]
    assert len(flipped) == 6
    idx = sim.fed.partition.train[flipped[0].node_id]
    assert np.array_equal(flipped[0].client.y, 9 - sim.fed.pool.y[idx])
    assert sim.run().rounds[-1].accuracy is not None


def test_a_sample_count_lie_gains_nothing_under_the_weight_cap() -> None:
    """IPM with jitter passes as honest; claiming 10^9 samples makes it decide FedAvg's aggregate
    unless the library caps the weights."""
    lie = {**BASE, "rounds": 10, "attack": "ipm", "byzantine_fraction": 0.2, "attack_params": {"jitter": 1.0}}
    uncapped = run_simulation(SimConfig.of(**lie, claimed_samples=1e9, rule_params={"weight_cap": None}))
    capped = run_simulation(SimConfig.of(**lie, claimed_samples=1e9))
    truthful = run_simulation(SimConfig.of(**lie))
    assert uncapped.final_accuracy() < 0.5
    assert abs(capped.final_accuracy() - truthful.final_accuracy()) < 0.03


def test_five_hundred_nodes() -> None:
    cfg = SimConfig.of(**{**FEDAVG, "topk_fraction": 0.1, "rule": "multikrum", "rule_params": {"f": 100}},
                       dataset="synthetic",
                       synthetic_alpha=0.0, synthetic_beta=0.0, partition="natural", model="logreg", num_nodes=500,
                       rounds=3, lr=0.05, batch_size=32, **SIGN_FLIP)
    result = run_simulation(cfg)
    assert [r.num_updates for r in result.rounds] == [500, 500, 500]
    assert len(result.byzantine) == 100
    assert result.rounds[-1].accuracy > result.rounds[0].accuracy


@pytest.mark.parametrize("change,reason", [
    ({"dataset": "mnist"}, "dataset"),
    ({"partition": "natural"}, "natural partition"),
    ({"clients_per_round": 21}, "clients_per_round"),
    ({"byzantine_fraction": 0.2}, "needs an attack"),
    ({"noise_multiplier": 1.0}, "noise needs a clip_norm"),
    ({"clients": 7}, "one shard per node"),
    ({"rule": "average"}, "rule must be one of"),
    ({"attack": "teleport", "byzantine_fraction": 0.1}, "unknown attack"),
    ({"claimed_samples": 1e9}, "claimed_samples needs an attack"),
    ({"attack": "ipm", "byzantine_fraction": 0.1, "claimed_samples": 0.0}, "claimed_samples must be"),
])
def test_config_errors(change: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        Simulator(SimConfig.of(**{**BASE, **change}))
