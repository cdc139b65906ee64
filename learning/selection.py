"""Which nodes' updates enter a block when more arrive than a block admits (paper eq. 8).

Policies: ``all`` (every node, ``k`` ignored), ``random`` (seeded sample), ``trust`` (highest
trust, lower index first on ties) and ``pso`` (binary particle swarm optimisation).

PSO fitness of a set S of k nodes, with every feature min-max normalised to [0, 1] over the
candidates (a constant feature normalises to 1):

    F(S) = w_speed * min_{i in S} speed_i          the round waits for the slowest member
         + w_trust * mean_{i in S} trust_i
         + w_data  * mean_{i in S} data_size_i
         + w_fresh * mean_{i in S} (1 - staleness_i)

The straggler term makes the objective non-additive (picking the k best nodes one feature at a
time is not optimal), which is why a search is used. Encoding: each particle is a real vector of
priorities; its set is the k highest (lower index first on ties), i.e. a continuous-ranked
encoding, so every particle is always a feasible k-set. One particle starts at the greedy
per-node score, so PSO never returns a worse set than the greedy choice, and the swarm's best
set is finished by single-swap local search. Everything is drawn
from ``np.random.default_rng(seed)``: the same inputs and seed give the same selection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

POLICIES: tuple[str, ...] = ("all", "random", "trust", "pso")
FEATURES: tuple[str, ...] = ("speed", "trust", "data_size", "staleness")
DEFAULT_WEIGHTS: dict[str, float] = {"speed": 0.25, "trust": 0.35, "data_size": 0.25, "staleness": 0.15}


def _normalise(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    return np.ones_like(values) if hi == lo else (values - lo) / (hi - lo)


def _features(features: dict[str, np.ndarray]) -> tuple[int, dict[str, np.ndarray]]:
    missing = [name for name in FEATURES if name not in features]
    if missing:
        raise ValueError(f"features missing {missing}; need {list(FEATURES)}")
    arrays = {name: np.asarray(features[name], dtype=np.float64) for name in FEATURES}
    n = arrays["speed"].shape[0] if arrays["speed"].ndim == 1 else -1
    for name, arr in arrays.items():
        if arr.shape != (n,) or n < 1:
            raise ValueError(f"feature {name!r} must be a 1-D array of the same length n >= 1, got {arr.shape}")
        if not np.isfinite(arr).all() or (arr < 0).any():
            raise ValueError(f"feature {name!r} must be finite and non-negative")
    return n, arrays


def set_fitness(norm: dict[str, np.ndarray], sets: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Fitness (see module docstring) of each row of ``sets`` (p, k) of node indices."""
    return (weights["speed"] * norm["speed"][sets].min(axis=1)
            + weights["trust"] * norm["trust"][sets].mean(axis=1)
            + weights["data_size"] * norm["data_size"][sets].mean(axis=1)
            + weights["staleness"] * (1.0 - norm["staleness"][sets]).mean(axis=1))


def _top_k(priorities: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of each row, lower index first on ties."""
    return np.argsort(-priorities, axis=-1, kind="stable")[..., :k]


def _pso(norm: dict[str, np.ndarray], k: int, rng: np.random.Generator, weights: dict[str, float],
         particles: int, iterations: int, inertia: float = 0.7, c1: float = 1.5, c2: float = 1.5,
         patience: int = 8) -> np.ndarray:
    n = norm["speed"].shape[0]
    greedy = (weights["speed"] * norm["speed"] + weights["trust"] * norm["trust"]
              + weights["data_size"] * norm["data_size"] + weights["staleness"] * (1.0 - norm["staleness"]))
    pos = rng.uniform(0.0, 1.0, size=(particles, n))
    pos[0] = greedy / max(float(greedy.max()), 1e-12)
    vel = rng.uniform(-0.1, 0.1, size=(particles, n))
    fit = set_fitness(norm, _top_k(pos, k), weights)
    best_pos, best_fit = pos.copy(), fit.copy()
    g = int(np.argmax(best_fit))
    stale = np.zeros(particles, dtype=np.int64)
    for _ in range(iterations):
        r1, r2 = rng.uniform(size=(2, particles, n))
        vel = inertia * vel + c1 * r1 * (best_pos - pos) + c2 * r2 * (best_pos[g] - pos)
        np.clip(vel, -0.5, 0.5, out=vel)
        pos = pos + vel
        # A particle whose own best has not improved for a while restarts at a random point
        # (keeping its memory), so the swarm keeps exploring instead of collapsing on one set.
        restart = stale >= patience
        pos[restart] = rng.uniform(0.0, 1.0, size=(int(restart.sum()), n))
        stale[restart] = 0
        fit = set_fitness(norm, _top_k(pos, k), weights)
        better = fit > best_fit
        best_pos[better], best_fit[better] = pos[better], fit[better]
        stale = np.where(better, 0, stale + 1)
        g = int(np.argmax(best_fit))
    return _polish(norm, _top_k(best_pos[g], k), weights)


def _polish(norm: dict[str, np.ndarray], chosen: np.ndarray, weights: dict[str, float],
            max_rounds: int = 100) -> np.ndarray:
    """Best-improvement swap search from the swarm's best set, until no single swap helps.

    The swarm finds the right region; exchanging one member for one outsider then fixes what
    its rank encoding leaves (a memetic finish, deterministic, bounded by ``max_rounds``).
    """
    n, k = norm["speed"].shape[0], chosen.size
    current = np.sort(chosen)
    fit = set_fitness(norm, current[None, :], weights)[0]
    for _ in range(max_rounds):
        outside = np.setdiff1d(np.arange(n), current)
        if outside.size == 0:
            break
        cand = np.repeat(current[None, :], k * outside.size, axis=0)
        cand[np.arange(cand.shape[0]), np.repeat(np.arange(k), outside.size)] = np.tile(outside, k)
        cand_fit = set_fitness(norm, cand, weights)
        best = int(np.argmax(cand_fit))
        if cand_fit[best] <= fit + 1e-12:
            break
        current, fit = np.sort(cand[best]), cand_fit[best]
    return current


def selection_features(waited_s: Sequence[float], trust: Sequence[float], samples: Sequence[float],
                       staleness: Sequence[float]) -> dict[str, np.ndarray]:
    """The feature arrays of :func:`select_nodes` for candidate updates, as a chain's pool and the
    simulator both compute them: ``speed`` is ``1 / (1 + w)`` for an update that arrived ``w``
    seconds after its base model appeared (the wait a proposer can observe, unlike a device's
    hardware), ``data_size`` the claimed sample count, ``staleness`` model versions behind."""
    return {"speed": 1.0 / (1.0 + np.maximum(0.0, np.asarray(waited_s, dtype=np.float64))),
            "trust": np.asarray(trust, dtype=np.float64),
            "data_size": np.asarray(samples, dtype=np.float64),
            "staleness": np.asarray(staleness, dtype=np.float64)}


def select_nodes(policy: str, features: dict[str, np.ndarray], k: int, seed: int, *,
                 weights: dict[str, float] | None = None, particles: int = 24, iterations: int = 60) -> np.ndarray:
    """Sorted indices of the selected nodes.

    ``features`` maps ``speed`` (higher = faster), ``trust``, ``data_size`` and ``staleness``
    (model versions behind) to (n,) arrays. When ``k >= n`` every node is selected. ``weights``
    (PSO only) override :data:`DEFAULT_WEIGHTS`; ``particles`` and ``iterations`` bound the search.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown selection policy {policy!r}; choose one of {', '.join(POLICIES)}")
    n, arrays = _features(features)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if policy == "all" or k >= n:
        return np.arange(n)
    if policy == "random":
        return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    if policy == "trust":
        return np.sort(_top_k(arrays["trust"], k))
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    if set(w) != set(FEATURES) or any(not np.isfinite(v) or v < 0 for v in w.values()):
        raise ValueError(f"weights must give a finite non-negative value for each of {list(FEATURES)}")
    if particles < 1 or iterations < 0:
        raise ValueError("particles must be >= 1 and iterations >= 0")
    norm = {name: _normalise(arr) for name, arr in arrays.items()}
    return np.sort(_pso(norm, k, np.random.default_rng(seed), w, particles, iterations))
