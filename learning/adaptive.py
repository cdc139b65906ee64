"""Adaptive model attacks, for evaluating the defences only: attackers that know the rule.

The attacks of :mod:`learning.attacks` are polite: every attacker of a kind sends one vector, so
a near-copy test sees one tight cluster. The attacks here assume the worst attacker the papers
describe, one who knows the aggregation rule, sees the honest updates of the round (gossip is
public) and wants to stay accepted:

* ``adaptive`` (Shejwalkar and Houmansadr, NDSS 2021, "AGR-tailored"): the rule in the loop. Each
  attacker sends ``mean + gamma * p + own noise`` (``p`` the unit of ``-mean``, the direction that
  undoes the round's progress; noise of ``jitter`` times the honest per-coordinate spread, drawn
  independently by every attacker so they never form a tight cluster), with the largest
  ``gamma`` (bisection) for which the rule, run on the honest updates plus the crafted ones,
  still accepts at least ``accept_share`` of the crafted ones.
* ``drift``: a slow, consistent push: ``mean + r * u`` where ``u`` is one fixed unit direction
  for the whole run (seeded by ``direction_seed``) and ``r`` is ``share`` times the median
  distance of the visible updates to their mean: inside the radius every distance-based rule
  accepts, round after round, so the bias accumulates where no single round looks odd.
* ``constrain_scale`` (Bagdasaryan et al., 2020, constrain-and-scale; Sun et al., 2019, the
  norm-bounded backdoor): the attacker trains on backdoored data (:func:`learning.attacks.poison_data`)
  and boosts its own update away from the honest mean as far as it can while the result stays
  within ``share`` times the median distance to the mean and within the norm bound ``max_norm``
  (default the largest visible honest norm).

The sybil burst (many fresh identities at once) is a timing, not a vector: the simulator's
``byzantine_from_round`` keeps the Byzantine identities silent until that round, then they all
join with fresh stake. The distributed backdoor (Xie et al., ICLR 2020) is a data attack
(``dba`` in :mod:`learning.attacks`): each attacker stamps one part of the trigger.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from learning.aggregation import DEFAULT_RULE, aggregate

ADAPTIVE_ATTACKS: tuple[str, ...] = ("adaptive", "drift", "constrain_scale")


def _mean_and_radius(known: np.ndarray) -> tuple[np.ndarray, float]:
    """The visible updates' mean and the median distance of each to it (what a distance rule
    treats as typical)."""
    mean = known.mean(axis=0)
    return mean, float(np.median(np.linalg.norm(known - mean, axis=1)))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-300)


def default_rule_accepts(observed: np.ndarray, crafted: np.ndarray) -> np.ndarray:
    """Which of ``crafted`` the default rule accepts next to ``observed`` (equal weights)."""
    rows = np.concatenate([observed, crafted]).astype(np.float32)
    return np.asarray(aggregate(DEFAULT_RULE, rows, np.ones(len(rows))).accepted[len(observed):], dtype=bool)


def adaptive(known: np.ndarray, benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
             accepts: Callable[[np.ndarray, np.ndarray], np.ndarray] = default_rule_accepts, jitter: float = 1.0,
             accept_share: float = 1.0, iters: int = 8) -> np.ndarray:
    """``mean + gamma * p + noise`` per attacker with the largest ``gamma`` the rule lets through.

    ``accepts(observed, crafted)`` runs the defender's rule on the round's updates (honest first,
    then the crafted ones) and returns the accepted mask of the crafted ones (by default the
    product's rule; the simulator passes the chain's rule and parameters).
    """
    if not 0.0 < accept_share <= 1.0:
        raise ValueError(f"adaptive: accept_share must be in (0, 1], got {accept_share}")
    mean, radius = _mean_and_radius(known)
    p = -_unit(mean)
    noise = jitter * known.std(axis=0) * rng.standard_normal(benign.shape)
    craft = lambda gamma: mean + gamma * p + noise
    passes = lambda gamma: float(np.mean(accepts(observed, craft(gamma)))) >= accept_share
    lo, hi = 0.0, max(radius, 1e-12)
    while passes(hi) and hi < 1e6 * max(radius, 1e-12):   # grow until the rule rejects
        lo, hi = hi, 2.0 * hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return craft(lo)


def drift(known: np.ndarray, benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
          share: float = 0.9, direction_seed: int = 0) -> np.ndarray:
    """``mean + share * radius * u`` for one fixed unit direction ``u`` (the same every round)."""
    if not share > 0:
        raise ValueError(f"drift: share must be > 0, got {share}")
    mean, radius = _mean_and_radius(known)
    u = _unit(np.random.default_rng(direction_seed).standard_normal(known.shape[1]))
    return np.broadcast_to(mean + share * radius * u, benign.shape)


def constrain_scale(known: np.ndarray, benign: np.ndarray, observed: np.ndarray, rng: np.random.Generator, *,
                    share: float = 0.9, max_norm: float | None = None) -> np.ndarray:
    """Each attacker's own (backdoored) update pushed away from the mean, as far as the distance
    and norm constraints allow (never closer to the mean than it was)."""
    if not share > 0:
        raise ValueError(f"constrain_scale: share must be > 0, got {share}")
    mean, radius = _mean_and_radius(known)
    limit = share * radius
    bound = float(np.max(np.linalg.norm(observed if observed.size else known, axis=1))) if max_norm is None else max_norm
    out = np.empty_like(benign, dtype=np.float64)
    for i, own in enumerate(benign.astype(np.float64)):
        offset = own - mean
        dist = float(np.linalg.norm(offset))
        boost = max(1.0, limit / dist) if dist > 0 else 1.0
        v = mean + boost * offset
        norm = float(np.linalg.norm(v))
        out[i] = v if norm <= bound or not math.isfinite(bound) else v * (bound / norm)
    return out
