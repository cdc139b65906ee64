"""Poisoning attacks, for evaluating the defences only: no node of the product ever runs these.

The simulator and the benchmarks call them to play Byzantine clients. Model attacks rewrite the
update a Byzantine client sends; data attacks poison the client's training data before honest
training. Each attack follows its paper:

* ``sign_flip``: ``-scale * own update`` (reversed gradient).
* ``gaussian``: pure noise ``N(0, sigma^2)``; by default sigma is 10x the honest per-coordinate
  RMS, so the attack stays large whatever the model's scale.
* ``alie``: "A little is enough" (Baruch et al., 2019): ``mean - z * std`` per coordinate with
  ``z = Phi^-1((n - s) / n)``, ``s = floor(n / 2 + 1) - f``: just inside the spread that
  distance-based defences tolerate.
* ``ipm``: inner product manipulation (Xie et al., 2020): ``-eps * mean`` of the visible honest
  updates, so the aggregate's inner product with the true gradient turns negative.
* ``minmax``: Shejwalkar and Houmansadr (NDSS 2021), AGR-agnostic min-max: ``mean + gamma * p``
  with ``p`` = ``-std`` (default), ``-unit mean`` or ``-sign(mean)``, and the largest ``gamma``
  (bisection) such that its farthest honest update is no farther than the two farthest honest
  updates are from each other.
* ``scale``: model replacement (Bagdasaryan et al., 2020): the own update boosted by ``boost``
  (default the number of participants, which cancels FedAvg's averaging).
* ``label_flip``: ``y -> num_classes - 1 - y`` or a given mapping, for a fraction of samples.
* ``backdoor``: a checkerboard trigger in the bottom-right image corner (or the last features of
  tabular data) and relabelling to ``target_label`` for a fraction of samples. ``at="centre"``
  stamps it in the middle of the image instead, on pixels honest data uses all the time: the
  attacker who knows that the rule clips each input's weights to what most updates move there.

A weight lie (:func:`claimed_samples`) combines with any of them: sample counts are self-reported,
so a Byzantine client claims a huge count to make whatever it sends outweigh everyone else in
every sample-weighted average.

Statistics of "the honest updates" are taken over ``observed`` plus the attackers' own benign
updates: what colluding clients can see.

``alie``, ``ipm`` and ``minmax`` send one crafted vector from every attacker, which a near-copy
test catches. Every model attack takes ``jitter`` (default 0): independent noise of ``jitter``
times the honest per-coordinate standard deviation added to each attacker's vector, so the group
looks like as many different honest clients (the attack keeps its mean, loses some precision).

* ``dba``: the distributed backdoor (Xie et al., ICLR 2020): the trigger is split among the
  attackers by rows, attacker ``part`` stamping rows ``r`` with ``r % parts == part``; the model
  is tested with the whole trigger, which no single attacker ever trained on.

The attacks that know the rule (``adaptive``, ``drift``, ``constrain_scale``) live in
:mod:`learning.adaptive`; ``constrain_scale`` is both a data attack (backdoored training) and a
model attack (the boosted vector), listed in :data:`HYBRID_ATTACKS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import numpy as np

from learning import adaptive

MODEL_ATTACKS: tuple[str, ...] = ("sign_flip", "gaussian", "alie", "ipm", "minmax", "scale",
                                  *adaptive.ADAPTIVE_ATTACKS)
DATA_ATTACKS: tuple[str, ...] = ("label_flip", "backdoor", "dba")
HYBRID_ATTACKS: dict[str, str] = {"constrain_scale": "backdoor"}
"""Model attacks whose nodes also train on poisoned data: attack -> the data attack."""


def _known(benign: np.ndarray, observed: np.ndarray) -> np.ndarray:
    return np.concatenate([observed, benign]).astype(np.float64) if observed.size else benign.astype(np.float64)


def _sign_flip(benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
               scale: float = 1.0) -> np.ndarray:
    return -scale * benign.astype(np.float64)


def _gaussian(benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
              sigma: float | None = None) -> np.ndarray:
    if sigma is None:
        sigma = 10.0 * float(np.sqrt(np.mean(np.square(_known(benign, observed)))))
    if not sigma >= 0:
        raise ValueError(f"gaussian: sigma must be >= 0, got {sigma}")
    return rng.normal(0.0, sigma, size=benign.shape)


def alie_z(n: int, f: int) -> float:
    """The ALIE paper's z for n clients of which f are Byzantine (s clamped to at least 1)."""
    if not 0 <= f < n:
        raise ValueError(f"alie: need 0 <= f < n, got n={n}, f={f}")
    s = max(math.floor(n / 2 + 1) - f, 1)
    return NormalDist().inv_cdf((n - s) / n)


def _alie(benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
          n: int | None = None, f: int | None = None, z: float | None = None) -> np.ndarray:
    known = _known(benign, observed)
    if z is None:
        total = observed.shape[0] + benign.shape[0] if n is None else n
        z = alie_z(total, benign.shape[0] if f is None else f)
    crafted = known.mean(axis=0) - z * known.std(axis=0)
    return np.broadcast_to(crafted, benign.shape)


def _ipm(benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
         eps: float = 0.5) -> np.ndarray:
    return np.broadcast_to(-eps * _known(benign, observed).mean(axis=0), benign.shape)


def _sq_dists_to(rows: np.ndarray, point: np.ndarray) -> np.ndarray:
    diff = rows - point
    return np.einsum("ij,ij->i", diff, diff)


def _minmax(benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
            direction: str = "std", iters: int = 50) -> np.ndarray:
    known = _known(benign, observed)
    mean = known.mean(axis=0)
    if direction == "std":
        p = -known.std(axis=0)
    elif direction == "unit":
        p = -mean / max(float(np.linalg.norm(mean)), 1e-300)
    elif direction == "sign":
        p = -np.sign(mean)
    else:
        raise ValueError(f"minmax: direction must be 'std', 'unit' or 'sign', got {direction!r}")
    sq = np.einsum("ij,ij->i", known, known)
    bound = float(np.max(sq[:, None] + sq[None, :] - 2.0 * known @ known.T))
    fits = lambda gamma: float(np.max(_sq_dists_to(known, mean + gamma * p))) <= bound
    lo, hi = 0.0, 1.0
    while fits(hi) and hi < 1e12:          # grow until the bound is violated (or p is negligible)
        lo, hi = hi, hi * 2.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return np.broadcast_to(mean + lo * p, benign.shape)


def _scale(benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
           boost: float | None = None) -> np.ndarray:
    factor = float(observed.shape[0] + benign.shape[0]) if boost is None else boost
    return factor * benign.astype(np.float64)


def _jittered(crafted: np.ndarray, benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator,
              jitter: float) -> np.ndarray:
    """``crafted`` plus independent N(0, (jitter * honest std)^2) noise per attacker and coordinate."""
    if not (math.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"jitter must be a finite number >= 0, got {jitter}")
    if jitter == 0:
        return crafted
    std = _known(benign, observed).std(axis=0)
    return crafted + jitter * std * rng.standard_normal(benign.shape)


def _known_first(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """An attack of :mod:`learning.adaptive` (which takes the known updates first) as a model attack."""
    return lambda benign, observed, rng, **params: fn(_known(benign, observed), benign, observed, rng, **params)


_MODEL: dict[str, Callable[..., np.ndarray]] = {
    "sign_flip": _sign_flip, "gaussian": _gaussian, "alie": _alie, "ipm": _ipm, "minmax": _minmax,
    "scale": _scale, **{name: _known_first(getattr(adaptive, name)) for name in adaptive.ADAPTIVE_ATTACKS},
}


def craft_updates(name: str, benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator,
                  **params: Any) -> np.ndarray:
    """Malicious updates (b, d) float32 for the b attackers whose honest updates are ``benign``.

    ``observed`` (h, d) are the honest updates the attackers can see (may be empty, h = 0).
    """
    if name not in _MODEL:
        raise ValueError(f"unknown model attack {name!r}; choose one of {', '.join(MODEL_ATTACKS)}")
    benign = np.asarray(benign, dtype=np.float32)
    observed = np.asarray(observed, dtype=np.float32)
    if benign.ndim != 2 or benign.shape[0] == 0:
        raise ValueError(f"benign must be (b, d) with b >= 1, got {benign.shape}")
    if observed.size == 0:
        observed = observed.reshape(0, benign.shape[1])
    if observed.ndim != 2 or observed.shape[1] != benign.shape[1]:
        raise ValueError(f"observed must be (h, {benign.shape[1]}), got {observed.shape}")
    # adaptive draws its own noise (it must be inside the vectors it tests against the rule)
    jitter = 0.0 if name == "adaptive" else float(params.pop("jitter", 0.0))
    try:
        crafted = _MODEL[name](benign, observed, rng, **params)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    return np.ascontiguousarray(_jittered(crafted, benign, observed, rng, jitter), dtype=np.float32)


def claimed_samples(true_counts: np.ndarray, byzantine: np.ndarray, claim: float | None) -> np.ndarray:
    """Sample counts as the aggregator receives them: every Byzantine client claims ``claim``.

    ``claim=None`` means the attackers report their true counts (no weight lie).
    """
    counts = np.asarray(true_counts, dtype=np.float64)
    mask = np.asarray(byzantine, dtype=bool)
    if counts.shape != mask.shape:
        raise ValueError(f"true_counts and byzantine must have the same shape, got {counts.shape} and {mask.shape}")
    if claim is None:
        return counts.copy()
    if not (math.isfinite(claim) and claim > 0):
        raise ValueError(f"claimed sample count must be a positive finite number, got {claim}")
    return np.where(mask, float(claim), counts)


TRIGGER_PLACES = ("corner", "centre")


def add_trigger(x: np.ndarray, image_shape: tuple[int, int, int] | None, *, size: int = 3,
                value: float = 1.0, part: int = 0, parts: int = 1, at: str = "corner") -> np.ndarray:
    """Copy of flat samples ``x`` (n, F) with the backdoor trigger stamped in.

    Images (C, H, W): a ``size`` x ``size`` checkerboard of ``value`` and 0 in the bottom-right
    corner of every channel (a pattern natural images rarely contain), or its centre with
    ``at="centre"``. Tabular data: the last ``size`` features alternate ``value`` and 0 (the
    middle ones with ``at="centre"``). With ``parts`` > 1 only the trigger rows ``r``
    (image) or features (tabular) with ``r % parts == part`` are stamped: one attacker's share of
    a distributed trigger.
    """
    if not 0 <= part < parts:
        raise ValueError(f"trigger part must be in [0, {parts}), got {part}")
    if at not in TRIGGER_PLACES:
        raise ValueError(f"trigger place must be one of {TRIGGER_PLACES}, got {at!r}")
    x = np.array(x, dtype=np.float32, copy=True)
    if x.ndim != 2:
        raise ValueError(f"x must be (n, F), got {x.shape}")
    if image_shape is None:
        if not 1 <= size <= x.shape[1]:
            raise ValueError(f"trigger size must be in [1, {x.shape[1]}], got {size}")
        cols = np.flatnonzero(np.arange(size) % parts == part)
        first = x.shape[1] - size if at == "corner" else (x.shape[1] - size) // 2
        x[:, first + cols] = np.where(cols % 2 == 0, value, 0.0)
        return x
    c, h, w = image_shape
    if c * h * w != x.shape[1] or not 1 <= size <= min(h, w):
        raise ValueError(f"image shape {image_shape} / trigger size {size} do not fit {x.shape[1]} features")
    pattern = np.where(np.add.outer(np.arange(size), np.arange(size)) % 2 == 0, value, 0.0)
    rows = np.flatnonzero(np.arange(size) % parts == part)
    top, left = (h - size, w - size) if at == "corner" else ((h - size) // 2, (w - size) // 2)
    x.reshape(-1, c, h, w)[:, :, top + rows, left:left + size] = pattern[rows]
    return x


def _fraction_rows(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return np.sort(rng.choice(n, size=round(fraction * n), replace=False))


def _label_flip(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, num_classes: int,
                image_shape: tuple[int, int, int] | None, *, fraction: float = 1.0,
                mapping: dict[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    if mapping is None:
        table = np.arange(num_classes)[::-1].copy()
    else:
        table = np.arange(num_classes)
        for src, dst in mapping.items():
            if not (0 <= src < num_classes and 0 <= dst < num_classes):
                raise ValueError(f"label_flip: mapping {src}->{dst} outside [0, {num_classes})")
            table[src] = dst
    rows = _fraction_rows(len(y), fraction, rng)
    y = y.copy()
    y[rows] = table[y[rows]]
    return x.copy(), y


def _backdoor(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, num_classes: int,
              image_shape: tuple[int, int, int] | None, *, target_label: int = 0, fraction: float = 0.1,
              size: int = 3, value: float = 1.0, at: str = "corner") -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= target_label < num_classes:
        raise ValueError(f"backdoor: target_label must be in [0, {num_classes}), got {target_label}")
    rows = _fraction_rows(len(y), fraction, rng)
    x = x.copy()
    y = y.copy()
    x[rows] = add_trigger(x[rows], image_shape, size=size, value=value, at=at)
    y[rows] = target_label
    return x, y


def _dba(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, num_classes: int,
         image_shape: tuple[int, int, int] | None, *, part: int = 0, parts: int = 3, target_label: int = 0,
         fraction: float = 0.1, size: int = 3, value: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= target_label < num_classes:
        raise ValueError(f"dba: target_label must be in [0, {num_classes}), got {target_label}")
    rows = _fraction_rows(len(y), fraction, rng)
    x = x.copy()
    y = y.copy()
    x[rows] = add_trigger(x[rows], image_shape, size=size, value=value, part=part % parts, parts=parts)
    y[rows] = target_label
    return x, y


_DATA: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {"label_flip": _label_flip, "backdoor": _backdoor,
                                                                   "dba": _dba}


def poison_data(name: str, x: np.ndarray, y: np.ndarray, rng: np.random.Generator, num_classes: int,
                image_shape: tuple[int, int, int] | None = None, **params: Any) -> tuple[np.ndarray, np.ndarray]:
    """Poisoned copies of flat samples ``x`` (n, F) float32 and labels ``y`` (n,) int64."""
    if name not in _DATA:
        raise ValueError(f"unknown data attack {name!r}; choose one of {', '.join(DATA_ATTACKS)}")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (n, F) and y (n,), got {x.shape} and {y.shape}")
    if num_classes < 2 or (y.size and (y.min() < 0 or y.max() >= num_classes)):
        raise ValueError(f"labels must lie in [0, {num_classes}) with num_classes >= 2")
    try:
        return _DATA[name](x, y, rng, num_classes, image_shape, **params)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}") from exc


def backdoor_success_rate(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray,
                          target_label: int, image_shape: tuple[int, int, int] | None, *,
                          size: int = 3, value: float = 1.0, at: str = "corner") -> float:
    """Fraction of samples not of ``target_label`` that the model labels ``target_label`` once
    triggered: the attack success rate reported by backdoor papers."""
    y = np.asarray(y)
    victims = np.flatnonzero(y != target_label)
    if victims.size == 0:
        raise ValueError("backdoor_success_rate: every sample already has the target label")
    predicted = np.asarray(predict(add_trigger(np.asarray(x)[victims], image_shape, size=size, value=value, at=at)))
    if predicted.shape != victims.shape:
        raise ValueError(f"predict returned shape {predicted.shape}, expected {victims.shape}")
    return float(np.mean(predicted == target_label))
