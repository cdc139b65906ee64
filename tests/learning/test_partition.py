"""Partitions: deterministic, cover every sample once, minimum sizes, the intended skew."""

from __future__ import annotations

import numpy as np
import pytest

from learning.partition import SCHEMES, Partition, make_partition

LABELS = np.random.default_rng(0).integers(0, 10, 2000)


def _all(p: Partition) -> np.ndarray:
    return np.concatenate(p.train + p.val)


def _natural_groups(n: int, k: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(9).permutation(n), k)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_cover_deterministic_minimum(scheme: str) -> None:
    kwargs = {"seed": 4, "alpha": 0.1, "min_samples": 10, "groups": _natural_groups(len(LABELS), 50)}
    a = make_partition(scheme, LABELS, 50, **kwargs)
    b = make_partition(scheme, LABELS, 50, **kwargs)
    c = make_partition(scheme, LABELS, 50, **{**kwargs, "seed": 5})
    assert a.num_clients == 50
    assert np.array_equal(np.sort(_all(a)), np.arange(len(LABELS)))          # every sample exactly once
    assert all(np.array_equal(x, y) for x, y in zip(a.train + a.val, b.train + b.val))
    sizes = [len(t) + len(v) for t, v in zip(a.train, a.val)]
    assert min(sizes) >= 10
    assert all(len(v) >= 1 and len(t) >= 1 for t, v in zip(a.train, a.val))
    if scheme != "natural":
        assert any(not np.array_equal(x, y) for x, y in zip(a.train, c.train))


def test_validation_fraction() -> None:
    p = make_partition("iid", LABELS, 10, val_fraction=0.1)
    assert all(len(v) == 20 and len(t) == 180 for t, v in zip(p.train, p.val))
    none = make_partition("iid", LABELS, 10, val_fraction=0.0)
    assert all(len(v) == 0 for v in none.val)


def _classes_per_client(p: Partition, share: float = 0.05) -> float:
    counts = [np.bincount(LABELS[np.concatenate([t, v])], minlength=10) for t, v in zip(p.train, p.val)]
    return float(np.mean([(c / c.sum() > share).sum() for c in counts]))


def test_label_skew_orders_as_expected() -> None:
    iid = _classes_per_client(make_partition("iid", LABELS, 20))
    mild = _classes_per_client(make_partition("dirichlet", LABELS, 20, alpha=10.0))
    strong = _classes_per_client(make_partition("dirichlet", LABELS, 20, alpha=0.1))
    shards = _classes_per_client(make_partition("shards", LABELS, 20, shards_per_client=2))
    assert iid > 9 and mild > 8
    assert strong < 5
    assert shards <= 3


def test_quantity_skew_has_unequal_sizes_but_iid_labels() -> None:
    p = make_partition("quantity", LABELS, 20, alpha=0.5, min_samples=5)
    sizes = np.array([len(t) + len(v) for t, v in zip(p.train, p.val)])
    assert sizes.max() > 4 * sizes.min()
    big = int(np.argmax(sizes))
    labels = LABELS[np.concatenate([p.train[big], p.val[big]])]
    assert (np.bincount(labels, minlength=10) > 0).all()


def test_errors() -> None:
    with pytest.raises(ValueError, match="cannot give"):
        make_partition("iid", LABELS[:10], 6, min_samples=2)
    with pytest.raises(ValueError, match="unknown partition"):
        make_partition("zipf", LABELS, 5)
    with pytest.raises(ValueError, match="alpha"):
        make_partition("dirichlet", LABELS, 5, alpha=0.0)
    with pytest.raises(ValueError, match="exactly once"):
        make_partition("natural", LABELS, 2, groups=[np.arange(10), np.arange(5, 20)])
    with pytest.raises(ValueError, match="groups"):
        make_partition("natural", LABELS, 2)
