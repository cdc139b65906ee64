"""Split one data set among federated clients, the ways the FL literature does.

A :class:`Partition` holds, per client, indices into the pooled training set: a training part
and a small local validation part (held out before any poisoning, so a client - or the
simulator on its behalf - can measure a candidate model honestly). Every scheme is a pure
function of its seed, covers every sample exactly once, and guarantees each client at least
``min_samples`` samples, so no client ever trains on an empty set.

Schemes:
- ``iid``: uniform random, equal sizes.
- ``dirichlet``: label skew; for each class, client shares ~ Dir(alpha) (Hsu et al. 2019).
  Small alpha = few classes per client.
- ``shards``: FedAvg's pathological split; sort by label, cut into ``num_clients * s`` shards,
  give each client ``s`` of them (McMahan et al. 2017 used s = 2).
- ``quantity``: IID labels, client sizes ~ Dir(alpha) (quantity skew).
- ``natural``: the data set's own groups (e.g. FedProx synthetic clients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SCHEMES = ("iid", "dirichlet", "shards", "quantity", "natural")


@dataclass(frozen=True)
class Partition:
    """Per-client index arrays into the pooled training set."""

    train: list[np.ndarray]
    val: list[np.ndarray]

    @property
    def num_clients(self) -> int:
        return len(self.train)

    def sizes(self) -> np.ndarray:
        """Training samples per client (the FedAvg weights)."""
        return np.array([len(t) for t in self.train], dtype=np.int64)


def make_partition(scheme: str, labels: np.ndarray, num_clients: int, *, seed: int = 0,
                   alpha: float = 0.5, shards_per_client: int = 2, min_samples: int = 2,
                   val_fraction: float = 0.1, groups: Sequence[np.ndarray] | None = None) -> Partition:
    """Partition samples with ``labels`` among ``num_clients`` using ``scheme`` (see module doc).

    ``groups`` is required for ``natural`` and ignored otherwise. ``val_fraction`` of each
    client's samples (at least one when it has two or more) becomes its validation split.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if num_clients < 1:
        raise ValueError("need at least one client")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if min_samples < 1 or n < num_clients * min_samples:
        raise ValueError(f"{n} samples cannot give {num_clients} clients {min_samples} each")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif scheme == "dirichlet":
        parts = _repair(_dirichlet(labels, num_clients, alpha, rng), min_samples, rng)
    elif scheme == "shards":
        parts = _shards(labels, num_clients, shards_per_client, min_samples, rng)
    elif scheme == "quantity":
        parts = _quantity(n, num_clients, alpha, min_samples, rng)
    elif scheme == "natural":
        parts = _natural(groups, n, num_clients, min_samples)
    else:
        raise ValueError(f"unknown partition {scheme!r}; choose one of {', '.join(SCHEMES)}")
    return _with_validation(parts, val_fraction, rng)


def _check_alpha(alpha: float) -> None:
    if not alpha > 0:
        raise ValueError(f"Dirichlet alpha must be > 0, got {alpha}")


def _dirichlet(labels: np.ndarray, k: int, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
    _check_alpha(alpha)
    buckets: list[list[np.ndarray]] = [[] for _ in range(k)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(k, alpha)))[:-1] * len(idx)).astype(np.int64)
        for client, piece in enumerate(np.split(idx, cuts)):
            buckets[client].append(piece)
    return [np.concatenate(b) for b in buckets]


def _repair(parts: list[np.ndarray], min_samples: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Top up clients below ``min_samples`` with random samples taken from the largest clients.

    Resampling until every client is large enough can loop for a long time at small alpha;
    moving a few samples is bounded and changes the label skew only marginally.
    """
    parts = [rng.permutation(p) for p in parts]
    for i in range(len(parts)):
        while len(parts[i]) < min_samples:
            donor = int(np.argmax([len(p) for p in parts]))
            take = min(min_samples - len(parts[i]), len(parts[donor]) - min_samples)
            parts[i] = np.concatenate([parts[i], parts[donor][:take]])
            parts[donor] = parts[donor][take:]
    return parts


def _shards(labels: np.ndarray, k: int, per_client: int, min_samples: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    if per_client < 1:
        raise ValueError("shards_per_client must be >= 1")
    total = k * per_client
    if len(labels) < total * max(1, -(-min_samples // per_client)):
        raise ValueError(f"{len(labels)} samples are too few for {total} shards")
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, total)
    owner = rng.permutation(total)
    return [np.concatenate([shards[s] for s in owner[c * per_client:(c + 1) * per_client]]) for c in range(k)]


def _quantity(n: int, k: int, alpha: float, min_samples: int, rng: np.random.Generator) -> list[np.ndarray]:
    _check_alpha(alpha)
    extra = rng.multinomial(n - k * min_samples, rng.dirichlet(np.full(k, alpha)))
    return np.split(rng.permutation(n), np.cumsum(extra + min_samples)[:-1])


def _natural(groups: Sequence[np.ndarray] | None, n: int, k: int, min_samples: int) -> list[np.ndarray]:
    if groups is None or len(groups) != k:
        raise ValueError(f"the natural partition needs exactly {k} groups")
    parts = [np.asarray(g, dtype=np.int64) for g in groups]
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if len(flat) != n or not np.array_equal(np.sort(flat), np.arange(n)):
        raise ValueError("natural groups must cover every sample exactly once")
    if min(len(p) for p in parts) < min_samples:
        raise ValueError(f"a natural group holds fewer than {min_samples} samples")
    return parts


def _with_validation(parts: list[np.ndarray], val_fraction: float, rng: np.random.Generator) -> Partition:
    train, val = [], []
    for p in parts:
        p = rng.permutation(p)
        n_val = min(len(p) - 1, max(1, round(val_fraction * len(p)))) if val_fraction > 0 else 0
        val.append(np.sort(p[:n_val]))
        train.append(np.sort(p[n_val:]))
    return Partition(train, val)
