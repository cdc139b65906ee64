"""Node selection: policies, PSO determinism and optimality on cases small enough to enumerate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from learning.selection import DEFAULT_WEIGHTS, FEATURES, POLICIES, select_nodes, set_fitness


def _features(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"speed": rng.uniform(1, 10, n), "trust": rng.uniform(0, 1, n),
            "data_size": rng.integers(10, 1000, n).astype(float), "staleness": rng.integers(0, 5, n).astype(float)}


def _normalised(feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (v - v.min()) / (v.max() - v.min()) for k, v in feats.items()}


@pytest.mark.parametrize("policy", POLICIES)
def test_policies_return_sorted_unique_indices(policy: str) -> None:
    feats = _features(15, 0)
    sel = select_nodes(policy, feats, 5, seed=1)
    assert np.array_equal(sel, np.unique(sel)) and sel.min() >= 0 and sel.max() < 15
    assert sel.size == (15 if policy == "all" else 5)
    assert np.array_equal(select_nodes(policy, feats, 20, seed=1), np.arange(15))


def test_trust_policy_takes_top_trust_with_index_tiebreak() -> None:
    feats = _features(6, 0)
    feats["trust"] = np.array([0.5, 0.9, 0.5, 0.1, 0.9, 0.5])
    assert select_nodes("trust", feats, 3, seed=0).tolist() == [0, 1, 4]


def test_random_policy_is_seeded() -> None:
    feats = _features(30, 0)
    a, b = select_nodes("random", feats, 7, seed=3), select_nodes("random", feats, 7, seed=3)
    assert np.array_equal(a, b)
    assert any(not np.array_equal(a, select_nodes("random", feats, 7, seed=s)) for s in range(4, 10))


def test_pso_is_deterministic_for_a_seed() -> None:
    feats = _features(40, 2)
    runs = [select_nodes("pso", feats, 8, seed=11) for _ in range(3)]
    assert all(np.array_equal(runs[0], r) for r in runs)


def test_pso_picks_the_obviously_good_nodes() -> None:
    n = 20
    good = np.array([2, 5, 11, 17])
    feats = {"speed": np.ones(n), "trust": np.full(n, 0.1), "data_size": np.full(n, 10.0), "staleness": np.full(n, 4.0)}
    feats["speed"][good], feats["trust"][good], feats["data_size"][good], feats["staleness"][good] = 9, 0.9, 900, 0
    assert select_nodes("pso", feats, 4, seed=0).tolist() == good.tolist()


def test_pso_finds_the_enumerated_optimum_on_small_cases() -> None:
    for seed in range(30):
        k = 2 + seed % 3
        feats = _features(9, seed)
        norm = _normalised(feats)
        sets = np.array(list(itertools.combinations(range(9), k)))
        best = set_fitness(norm, sets, DEFAULT_WEIGHTS).max()
        chosen = select_nodes("pso", feats, k, seed=seed)
        assert set_fitness(norm, chosen[None, :], DEFAULT_WEIGHTS)[0] >= best - 1e-12, seed


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), k=st.integers(1, 60))
def test_pso_never_worse_than_per_node_greedy(seed: int, n: int, k: int) -> None:
    feats = _features(n, seed)
    feats["speed"][0] = feats["speed"].max() + 1.0        # no constant feature
    norm = {key: (v - v.min()) / (v.max() - v.min()) if v.max() > v.min() else np.ones(n) for key, v in feats.items()}
    chosen = select_nodes("pso", feats, k, seed=seed)
    assert chosen.size == min(n, k)
    w = DEFAULT_WEIGHTS
    per_node = (w["speed"] * norm["speed"] + w["trust"] * norm["trust"] + w["data_size"] * norm["data_size"]
                + w["staleness"] * (1 - norm["staleness"]))
    greedy = np.argsort(-per_node, kind="stable")[:min(n, k)]
    assert set_fitness(norm, chosen[None, :], w)[0] >= set_fitness(norm, greedy[None, :], w)[0] - 1e-12


def test_pso_straggler_term_beats_greedy() -> None:
    # Node 0 is best on everything but speed; with speed weighted heavily, one slow member
    # costs the whole set, so the optimum avoids it even though its per-node score is high.
    feats = {"speed": np.array([0.0, 5, 5, 5, 9]), "trust": np.array([1.0, 0.5, 0.5, 0.5, 0.0]),
             "data_size": np.array([1.0, 0.5, 0.5, 0.5, 0.0]), "staleness": np.zeros(5)}
    weights = {"speed": 0.6, "trust": 0.2, "data_size": 0.2, "staleness": 0.0}
    assert select_nodes("pso", feats, 3, seed=0, weights=weights).tolist() == [1, 2, 3]


def test_selection_errors() -> None:
    feats = _features(5, 0)
    with pytest.raises(ValueError, match="unknown selection policy"):
        select_nodes("best", feats, 2, 0)
    with pytest.raises(ValueError, match="missing"):
        select_nodes("pso", {k: v for k, v in feats.items() if k != "trust"}, 2, 0)
    with pytest.raises(ValueError, match="same length"):
        select_nodes("pso", {**feats, "speed": np.ones(4)}, 2, 0)
    with pytest.raises(ValueError, match="non-negative"):
        select_nodes("pso", {**feats, "trust": -np.ones(5)}, 2, 0)
    with pytest.raises(ValueError, match="positive integer"):
        select_nodes("trust", feats, 0, 0)
    with pytest.raises(ValueError, match="weights"):
        select_nodes("pso", feats, 2, 0, weights={"speed": 1.0})
    assert FEATURES == ("speed", "trust", "data_size", "staleness")
