"""learning.hierarchy: cluster assignment, per-cluster rules and the robust combination, and the
hierarchical round run_round runs above the genesis threshold."""

from __future__ import annotations

import numpy as np
import pytest

from learning.aggregation import aggregate
from learning.hierarchy import Hierarchy, assign, clusters_for, combine, verifier_clusters
from learning.round import run_round
from learning.settings import FLSettings, SettingsError

DIM = 96
MODEL = np.zeros(DIM, dtype=np.float32)
SENDERS = [f"{i:064x}" for i in range(1, 61)]


def honest(n: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=DIM)
    return (mu + spread * rng.normal(size=(n, DIM))).astype(np.float32), mu.astype(np.float32)


@pytest.mark.parametrize("n, size", [(60, 10), (61, 10), (59, 20), (7, 3), (5, 10)])
def test_clusters_are_balanced_and_no_larger_than_the_cluster_size(n: int, size: int) -> None:
    labels = assign(3, SENDERS[:n] + [f"x{i}" for i in range(max(0, n - len(SENDERS)))], size)
    counts = np.bincount(labels)
    assert counts.size == clusters_for(n, size) and counts.max() - counts.min() <= 1 and counts.max() <= size


def test_assignment_depends_on_the_seed_and_the_set_of_senders_not_their_order() -> None:
    first = dict(zip(SENDERS, assign(12, SENDERS, 10).tolist()))
    shuffled = list(np.random.default_rng(0).permutation(SENDERS))
    assert dict(zip(shuffled, assign(12, shuffled, 10).tolist())) == first
    assert dict(zip(SENDERS, assign(12, SENDERS, 10).tolist())) == first
    assert dict(zip(SENDERS, assign(13, SENDERS, 10).tolist())) != first   # a new height deals anew


def test_verifiers_are_assigned_distinct_clusters_from_the_seed_and_their_id() -> None:
    picks = {v: verifier_clusters(5, v, 6, 2) for v in SENDERS[:20]}
    assert all(len(c) == 2 and all(0 <= x < 6 for x in c) for c in picks.values())
    assert picks == {v: verifier_clusters(5, v, 6, 2) for v in SENDERS[:20]}
    assert set().union(*map(set, picks.values())) == set(range(6))   # twenty verifiers cover six clusters
    assert verifier_clusters(5, SENDERS[0], 3, 9) == [0, 1, 2]


@pytest.mark.parametrize("delegates, k, count", [(4, 8, 2), (21, 50, 3), (7, 7, 1), (10, 3, 1)])
def test_delegates_deal_themselves_every_cluster_in_turn(delegates: int, k: int, count: int) -> None:
    committee = SENDERS[:delegates]
    watchers = np.zeros(k, dtype=int)
    for member in committee:
        picked = verifier_clusters(9, member, k, count, committee)
        assert len(picked) == min(count, k)
        watchers[picked] += 1
    assert watchers.min() >= 1 and watchers.max() - watchers.min() <= 1
    assert verifier_clusters(9, SENDERS[-1], k, count, committee) == verifier_clusters(9, SENDERS[-1], k, count)


def test_the_geometric_median_combination_keeps_a_wrong_partial_from_dragging_the_aggregate() -> None:
    partials, mu = honest(6, seed=1, spread=0.1)
    partials[2] = -20 * mu                                      # one cluster's partial is a lie
    weights = np.full(6, 10.0)
    median, kept = combine(aggregate, "geomed", "clustering", {}, partials, weights, 0, None)
    mean, _ = combine(aggregate, "rule", "fedavg", {}, partials, weights, 0, None)
    assert kept.all()
    assert np.linalg.norm(median - mu) < 0.2 * np.linalg.norm(mu) < np.linalg.norm(mean - mu)


def test_fedavg_in_clusters_combined_by_the_rule_is_the_flat_weighted_mean() -> None:
    """The cap is applied over the whole round and clusters weigh by accepted weight, so averaging
    averages of clusters is the flat average (up to rounding)."""
    deltas, _ = honest(60, seed=2)
    samples = [10 + i % 7 for i in range(60)]
    flat = run_round(FLSettings(rule="fedavg"), MODEL, deltas, samples, [0] * 60, [1 / 60] * 60, seed=4)
    tiered = run_round(FLSettings(rule="fedavg", hierarchy={"threshold": 50, "cluster_size": 10, "combine": "rule"}),
                       MODEL, deltas, samples, [0] * 60, [1 / 60] * 60, seed=4, senders=SENDERS)
    assert len(tiered.partials) == 6 and not flat.partials
    assert np.allclose(tiered.model, flat.model, atol=1e-6)


def test_a_hierarchical_round_is_bit_identical_when_repeated_and_rejects_what_its_clusters_reject() -> None:
    deltas, mu = honest(60, seed=3)
    deltas[:6] = -3 * mu                                        # six sign-flippers, spread over the clusters
    settings = FLSettings(hierarchy={"threshold": 50, "cluster_size": 10})
    runs = [run_round(settings, MODEL, deltas, [20] * 60, [0] * 60, [1 / 60] * 60, seed=8, senders=SENDERS)
            for _ in range(2)]
    a, b = runs
    assert a.model.tobytes() == b.model.tobytes() and a.accepted.tobytes() == b.accepted.tobytes()
    assert [p.vector.tobytes() for p in a.partials] == [p.vector.tobytes() for p in b.partials]
    assert not a.accepted[:6].any() and a.accepted[6:].mean() > 0.8
    assert all(a.reasons[i] for i in range(6))
    members = np.sort(np.concatenate([p.members for p in a.partials]))
    assert members.tolist() == list(range(60)) and all(p.kept for p in a.partials)
    assert np.linalg.norm(a.model - mu) < 0.2 * np.linalg.norm(mu)


def test_below_the_threshold_a_round_stays_flat() -> None:
    deltas, _ = honest(20, seed=4)
    settings = FLSettings(hierarchy={"threshold": 50, "cluster_size": 10})
    out = run_round(settings, MODEL, deltas, [20] * 20, [0] * 20, [0.05] * 20, seed=1, senders=SENDERS[:20])
    flat = run_round(FLSettings(), MODEL, deltas, [20] * 20, [0] * 20, [0.05] * 20, seed=1)
    assert out.partials == () and out.model.tobytes() == flat.model.tobytes()


def test_a_hierarchical_round_needs_the_senders() -> None:
    deltas, _ = honest(4, seed=5)
    with pytest.raises(ValueError, match="one sender id per update"):
        run_round(FLSettings(hierarchy={"threshold": 2, "cluster_size": 2}), MODEL, deltas, [1] * 4, [0] * 4,
                  [0.25] * 4, seed=0)


def test_a_cluster_without_weight_has_no_partial_and_the_others_carry_the_round() -> None:
    deltas, _ = honest(12, seed=6)
    settings = FLSettings(rule="trust", hierarchy={"threshold": 4, "cluster_size": 4})
    labels = assign(2, SENDERS[:12], 4)
    trust = np.where(labels == 0, 0.0, 0.1)                     # cluster 0's senders have no stake
    out = run_round(settings, MODEL, deltas, [5] * 12, [0] * 12, trust, seed=2, senders=SENDERS[:12])
    zero = out.partials[0]
    assert zero.vector is None and not zero.kept and zero.reasons == ["zero weight"] * 4
    assert not out.accepted[labels == 0].any() and out.accepted[labels != 0].all() and not out.skipped


@pytest.mark.parametrize("section, problem", [
    ({"threshold": 1, "cluster_size": 10}, "hierarchy.threshold must be an integer >= 2"),
    ({"threshold": 50}, "hierarchy.cluster_size must be an integer >= 2"),
    ({"threshold": 50, "cluster_size": 10, "combine": "mean"}, "hierarchy.combine must be one of"),
    ({"threshold": 50, "cluster_size": 10, "size": 3}, "unknown hierarchy key 'size'"),
    ({"threshold": 50, "cluster_size": 10, "verify": 0}, "hierarchy.verify must be an integer >= 1"),
])
def test_a_bad_genesis_hierarchy_is_refused(section: dict, problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        FLSettings.from_app_state({**FLSettings().to_app_state(), "hierarchy": section})


def test_the_genesis_hierarchy_round_trips() -> None:
    s = FLSettings.from_app_state({**FLSettings().to_app_state(), "hierarchy": {"threshold": 64, "cluster_size": 16}})
    assert s.hierarchy_rule == Hierarchy(64, 16, "geomed", 2) and FLSettings().hierarchy_rule is None


def test_the_validation_guard_judges_the_round_not_a_clusters_partial() -> None:
    """A public set on which any step scores below the current model (the model already fits
    it as well as it can): a flat round of the default rule is refused by its guard, while in a
    hierarchical round no cluster is, since a partial is only part of the step (guarded, the
    clusters of ten of ``bench hierarchy`` lost 55 of 100 honest updates a round)."""
    deltas, _ = honest(60, seed=6)

    def public_set(model: np.ndarray) -> float:
        return 0.9 if np.array_equal(model, MODEL) else 0.8

    flat = run_round(FLSettings(), MODEL, deltas, [20] * 60, [0] * 60, [1 / 60] * 60, seed=2, evaluate=public_set)
    assert "below the current model" in flat.skipped
    tiered = run_round(FLSettings(hierarchy={"threshold": 50, "cluster_size": 10}), MODEL, deltas, [20] * 60,
                       [0] * 60, [1 / 60] * 60, seed=2, senders=SENDERS, evaluate=public_set)
    assert not tiered.skipped and all(p.vector is not None for p in tiered.partials)
    assert tiered.accepted.mean() > 0.8
