"""Two-phase clustering defence in the manner of Secured-FL.

Phase 1 removes whole groups, phase 2 single updates; the aggregate is the sample-weighted average
(FedAvg) of what remains, each accepted update first clipped to the median norm of the accepted
ones (as FLAME does).

Phase 1a, near copies. Honest clients train on different data and never send (nearly) the same
update, while ALIE, IPM and min-max attackers all send one crafted vector that sits close to the
honest mean, where no distance test can see it. Updates whose nearest neighbour is closer than
``collusion`` times the median pairwise distance are dropped as a colluding group.

Phase 1a', direction (:mod:`.direction`). With the caller's ``reference`` (how the global model
moved over the staleness window), an update whose cosine to it is below zero is dropped first
(lowest first, within the phase-1 budget; only while the median cosine is positive, and without
``drift_evidence`` of a shared direction only if the chain holds its sender or its cosine is below
``-drift_evidence/sqrt(d)``). Then an
update whose cosine to the robust centre is below
``direction`` times the median cosine pushes against the majority and is dropped (lowest first,
within the phase-1 budget); a k-means group whose median cosine is below half the reference's is
offered to phase 1b as a drop that must validate better by the radius tuning's margin. Skipped
below ``SMALL`` updates. It runs before the shared-offset test, whose median and MADs eight
attackers of twenty dragged so far that it flagged honest updates instead.

Phase 1a'', a shared offset (:mod:`.offset`). Attackers who each add their own noise are no near
copies, but their deviations from the robust centre point the same way; an update whose
``partners``-th highest cosine to another update's deviation is above the adaptive radius of all
of them (``offset`` MADs above their median) is dropped (highest first, within the phase-1
budget). Skipped below ``max(2 * partners + 2, SMALL)`` updates.

Phase 1b, outlier clusters. Restricted k-means (:mod:`.kmeans`; every cluster holds at least
``min_cluster_size`` updates) partitions the rest. The reference is the largest cluster (the
honest majority; ties: centre nearest the geometric median). Another cluster is an outlier when
the median distance between its members and the reference's exceeds the adaptive radius of the
reference's own pairwise distances: a group pushed one way (sign flip, scaling, noise) is far
from the majority as a group even when each of its updates alone looks ordinary. Skipped when
the reference holds fewer than three updates: one within-pair distance says nothing about the
honest spread, and comparing every other pair against it rejected honest non-IID nodes of small
networks round after round (a 4-node testnet has two clusters of two). With an ``evaluate``
callback a far group is only a candidate for dropping: each radius is tried first with every
group kept, then with the far groups dropped, and the drop must validate better than keeping them
(by any amount: distance already made the group suspicious; a tie keeps it). Two honest nodes with
similar data are a group far from the rest as well (the Fashion-MNIST preset's 8 daemons dropped
two nodes' updates 43 times in 54, by distance alone); what tells them from a group of attackers
is what the group does to the model, and that the public set measures. A 6-daemon testnet's sign
flipper and noise sender gained the drop only 3 to 5 samples of 287 in some rounds, so the drop
takes no margin. A kept far group scores 1 (suspicious, not rejected).

Phase 1 never drops the reference or more than half of all updates (farthest groups go first).

Phase 2. The robust centre, the geometric median of the survivors (dropped groups no longer pull
it), is computed and every survivor farther from it than the adaptive radius is rejected. Below
``SMALL`` updates, with an ``evaluate`` callback, that is a suggestion as well: the first
candidate keeps phase 2's outliers (scores capped at 1), and a candidate that rejects them must
validate better than it, by any amount, while it is the best. Eight honest updates spread too
unevenly for a radius built from their MAD (floored at 10% of the median): on the Fashion-MNIST
preset's 8 daemons one honest node was rejected in 44 of its 47 updates.

Norm clip. An accepted update longer than ``norm_clip`` times the median norm of the accepted
updates is scaled down to it before averaging. Whatever slipped through the filters (an
attacker boosted to the admission bound, as model-replacement backdoors are, or one just inside
the phase-2 radius) then weighs no more than a typical honest update; honest updates, mostly of
similar norms after the client's clip, are barely touched. Norms come from the exact Gram
diagonal, the factors are correctly rounded divisions, so the aggregate stays bit-identical.

Feature clip. Each accepted update is then clipped feature group by feature group (with the
caller's ``groups``, the model's layout: the weights leaving one input of a layer): a group whose
norm exceeds ``feature_clip`` times the median of that group's norms over the accepted updates is
scaled down to it, and a group most accepted updates leave untouched (median zero) is dropped.
A data backdoor is no outlier as a whole: its trigger is a feature honest data rarely shows, so
its push lands on weights honest updates hardly move. On 20 Fashion-MNIST nodes (the MLP) with 8
attackers poisoning 10% of their samples, the backdoor's success after 30 rounds fell from 99% to
8% at 1.5x (15% at 2x, 5% at 1x for 0.6 points of clean accuracy; one seed, see
``docs/decisions.md`` and the adversary benchmark). Honest updates keep what most of them agree to
move; a lone honest node's rare feature waits until others see it too. The medians count one
row per sender: with the caller's ``witness`` (:class:`._core.WitnessRows`, chain state) each
recent sender none of whose updates is accepted adds the group norms of its last accepted update.
A round's accepted updates alone are a poor witness where attackers crowd it (asynchronous
arrivals gave some rounds 6 or 7 attackers of 10, and a round that rejects the honest rest then
lets the attackers set every median): on the asynchronous MLP rows at 40%, the backdoor's
success fell from 30% (one seed in three near 90%) to 4% with the witness.

Guard, for rounds the attackers outnumber (asynchronous arrivals give some rounds an attacker
majority, and every test above sides with a round's majority). With an ``evaluate`` callback the
best aggregate must validate no more than ``guard`` below the current model; if not, a second
pass without the drift, direction and shared-offset tests tries every k-means group as the
reference (and may drop all but ``min_cluster_size`` updates), and when that fails too the rule
raises: a chain skips the round. The second pass has a drift test of its own that takes no side
from the majority (:func:`.direction.split_scores`: updates against the drift go, when a group
going its way shows a shared direction alone). Attackers who only stall training (IPM) pass the
bar, so the second pass also runs, and wins if it validates better, when most updates point
against the drift while such a group exists. ``docs/aggregation.md`` has what it bought and costs.

Adaptive radius: ``median + radius * sigma`` of the distances in question, sigma from the MAD
(:func:`robust_threshold`), so it follows each round's spread. With an ``evaluate`` callback
(validation accuracy of a candidate aggregate) each multiplier of ``radius_candidates`` is tried
and the best-scoring aggregate kept; a later candidate must score more than ``tune_margin``
above the best so far (not a rejection that only distance suggests, while the candidate without
it is the best: see phases 1b and 2). Validation on a few hundred public samples is noisy:
without the margin a tighter radius won by chance in many honest rounds and rejected an honest update with it
(1.4 honest rejections per round on 20 Fashion-MNIST nodes with no attacker and 300 public
samples; 0.7 with a margin of 0.02, 0.4 with the radius fixed at 3); a radius that shuts
attackers out moves accuracy by more than that.

Score of an update: the largest of its distance to the robust centre over the phase-2 radius, its
cluster's between-group distance over the phase-1 radius, its partner similarity over the
phase-1a'' radius, how far its cosine to the centre falls below the median over half the median
(above 1 below half the median; for an update the direction test dropped at least its fall over
``1 - direction`` of the median), how far its cosine to the caller's reference falls below the
median of those cosines over that median (above 1 below zero; for a sender nobody holds, in a
round without evidence of a shared direction, above 1 below the floor), for a near copy a value in (1, 2] growing as the copy
gets closer, and the share of its norm the feature clip removes over the adaptive radius of all
updates' shares (``radius`` MADs above their median); above 1 means the update fell outside some
radius. The feature clip
rejects nobody, but what it takes is a detector: on a 40% backdoor run (MLP, seed 0, 10 rounds)
the attackers lost 45% of their norm to it on average and never less than 31% in nine updates of
ten, honest updates 12% (18% in nine of ten); as a score alone its ROC AUC was 0.999 against 0.35
for the distance scores.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from . import exact
from ._core import AggregationResult, Inputs, result, weighted_mean
from .direction import (DRIFT_EVIDENCE, SUSPECT, against_scores, cosines_to, cosines_to_centre, drift_scores, split_scores,
                        weak_groups)
from .distance import SMALL, cluster_scores, near_copies, outliers
from .geomed import weiszfeld_coefficients
from .kmeans import membership, quad_forms, restricted_kmeans
from .offset import partner_scores
from .shrink import clip_share_score, feature_shrink, norm_shrink

AGAINST_DRIFT = "clustering: against the model's drift"
"""The reason of an update the drift test dropped (its sender is then held: :func:`learning.round.holds_after`)."""
DEFAULT_RADIUS = 3.0
RADIUS_CANDIDATES = (3.0, 2.0, 4.0, 1.5, 6.0)
DEFAULT_COLLUSION = 0.1
DEFAULT_TUNE_MARGIN = 0.02  # validation gain (accuracy) a later radius candidate needs over the best so far
DEFAULT_GUARD = 0.03    # validation loss (accuracy) against the current model that skips the round (0 = off)
DEFAULT_NORM_CLIP = 1.0  # accepted updates are clipped to this multiple of their median norm (0 = off)
DEFAULT_FEATURE_CLIP = 1.5  # and each feature group to this multiple of the group's median norm (0 = off)
DEFAULT_OFFSET = 4.0    # MADs above the median partner similarity that mark a shared offset
DEFAULT_DIRECTION = 0.25  # a cosine to the centre below this share of the median cosine goes against it (0 = off)
MIN_REFERENCE = 3       # phase 1b needs a reference cluster with at least this many updates
UNSUSPECTED = float(np.nextafter(1.0, 2.0))  # score of a group dropped for a validation gain alone


def _highest(scores: np.ndarray, budget: int) -> np.ndarray:
    """Updates scoring above 1, highest first, at most ``budget`` of them."""
    picked = np.zeros(scores.size, dtype=bool)
    for i in np.argsort(-scores, kind="stable")[:budget]:
        picked[i] = scores[i] > 1.0
    return picked


def _variants(rest_dist: np.ndarray, weak: np.ndarray, labels: np.ndarray, k: int, ref: int,
              candidates: tuple[float, ...], active: bool, validated: bool,
              small: bool) -> Iterator[tuple[float, np.ndarray, str, bool]]:
    """The candidates to try, in order: (radius multiplier, phase 1b's cluster scores, which groups
    they drop: ``"keep"`` none, ``"far"`` the far groups the candidate before kept, ``"weak"`` the
    ``weak`` ones; whether phase 2 rejects). With a validation set the far groups are first kept
    (scores capped at 1: suspicious, not rejected) and only then dropped, so a drop must validate
    better than keeping them; the second try is skipped when no group is far. A weak group is
    offered last and must win on validation by the margin. Below ``SMALL`` updates the first
    candidate also keeps phase 2's outliers. Without a validation set distance alone decides.
    ``active`` is False when the reference is too small to describe the honest spread (scores 0)."""
    for i, multiplier in enumerate(candidates):
        far = cluster_scores(rest_dist, labels, k, ref, multiplier) if active else np.zeros(k)
        if not validated:
            yield multiplier, far, "keep", True
            continue
        if small and i == 0:
            yield multiplier, np.minimum(far, 1.0), "keep", False
        yield multiplier, np.minimum(far, 1.0), "keep", True
        if (far > 1.0).any():
            yield multiplier, far, "far", True
        if active and weak.any():
            yield multiplier, np.where(weak, np.maximum(far, UNSUSPECTED), np.minimum(far, 1.0)), "weak", True


def _drop_groups(group_score: np.ndarray, group_of: np.ndarray, protected: int, budget: int) -> np.ndarray:
    """Groups to drop: score above 1, highest first, never ``protected``, at most ``budget`` rows."""
    sizes = np.bincount(group_of, minlength=group_score.size)
    dropped = np.zeros(group_score.size, dtype=bool)
    for h in np.argsort(-group_score, kind="stable"):
        if group_score[h] > 1.0 and h != protected and sizes[h] <= budget:
            dropped[h] = True
            budget -= sizes[h]
    return dropped


def _quality(inp: Inputs, vector: np.ndarray) -> float:
    """The caller's validation of the model moved by ``vector`` (finite, or the round fails)."""
    assert inp.evaluate is not None
    quality = float(inp.evaluate(vector))
    if not math.isfinite(quality):
        raise ValueError(f"clustering: evaluate returned a non-finite value {quality!r}")
    return quality


def check_params(p: Mapping[str, Any]) -> None:
    """Raise ValueError for a parameter value :func:`clustering` cannot take (``p`` holds every
    parameter, defaults included), before any update is read."""
    size = p["min_cluster_size"]
    if min(p["n_clusters"], p["n_init"], p["max_iter"]) < 1 or (size is not None and size < 1):
        raise ValueError("clustering: n_clusters, min_cluster_size, n_init and max_iter must be >= 1")
    if not 0.0 <= p["collusion"] < 1.0:
        raise ValueError(f"clustering: collusion must be in [0, 1), got {p['collusion']}")
    for name in ("tune_margin", "guard", "drift_evidence"):
        if not (math.isfinite(p[name]) and p[name] >= 0):
            raise ValueError(f"clustering: {name} must be finite and >= 0, got {p[name]}")
    if not 0.0 <= p["direction"] < 1.0:
        raise ValueError(f"clustering: direction must be in [0, 1), got {p['direction']}")
    if not (p["norm_clip"] == 0 or p["norm_clip"] >= 1):
        raise ValueError(f"clustering: norm_clip must be 0 (off) or >= 1, got {p['norm_clip']}")
    if not (p["feature_clip"] == 0 or (math.isfinite(p["feature_clip"]) and p["feature_clip"] >= 1)):
        raise ValueError(f"clustering: feature_clip must be 0 (off) or finite and >= 1, got {p['feature_clip']}")
    radii = (p["radius"], *p["radius_candidates"])
    if not p["radius_candidates"] or not all(float(r) > 0 for r in radii):
        raise ValueError("clustering: radius multipliers must be positive")


def clustering(inp: Inputs, *, n_clusters: int = 2, min_cluster_size: int | None = None,
               radius: float = DEFAULT_RADIUS, radius_candidates: tuple[float, ...] = RADIUS_CANDIDATES,
               collusion: float = DEFAULT_COLLUSION, offset: float = DEFAULT_OFFSET,
               direction: float = DEFAULT_DIRECTION, drift: bool = True, drift_evidence: float = DRIFT_EVIDENCE,
               norm_clip: float = DEFAULT_NORM_CLIP,
               feature_clip: float = DEFAULT_FEATURE_CLIP, tune_margin: float = DEFAULT_TUNE_MARGIN,
               guard: float = DEFAULT_GUARD, n_init: int = 3, max_iter: int = 50) -> AggregationResult:
    """Secured-FL two-phase filter, then FedAvg of the accepted updates.

    ``min_cluster_size`` defaults to ``max(2, ceil(n / 10))``; ``n_clusters`` is lowered when the
    updates cannot fill that many clusters. ``radius`` is the MAD multiplier used without an
    ``evaluate`` callback; with one, ``radius_candidates`` are tried. ``collusion = 0`` turns the
    near-copy test off, ``direction = 0`` the direction test, ``offset = 0`` the shared-offset
    test, ``drift = False`` the drift test (which also needs the caller's ``reference``;
    ``drift_evidence = 0`` lets it drop any sender whatever the evidence, not only held ones),
    ``norm_clip = 0`` the norm clip,
    ``feature_clip = 0`` the feature clip (which also needs the caller's ``groups``);
    ``tune_margin = 0`` keeps whichever radius candidate validates best; ``guard = 0`` turns the
    guard off (with an ``evaluate`` callback it refuses a best aggregate that validates more than
    ``guard`` below the current model: the round is skipped). :func:`check_params` checks the
    values (``aggregate`` calls it, and so does a genesis naming them).
    """
    n = inp.n
    min_size = max(2, math.ceil(n / 10)) if min_cluster_size is None else int(min_cluster_size)
    candidates = (float(radius),) if inp.evaluate is None else tuple(float(r) for r in radius_candidates)
    g, dist = inp.gram, np.sqrt(inp.sq_dists)
    to_drift = cosines_to(inp.updates, g, inp.reference) if drift and inp.reference is not None else None

    def attempt(contested: bool, current: float | None = None) -> AggregationResult:
        """One pass of the filter; ``contested``: the second pass (see the module docstring), with every
        k-means group tried as the reference and the drift test that takes no side; ``current``: the
        current model's validation, once the first pass has it."""
        budget = n - min_size if contested else n // 2   # phase 1 never drops the majority, unless contested

        copy_score = near_copies(dist, collusion)
        copies = copy_score > 1.0
        if copies.sum() > budget:
            copies[:] = False
        budget -= int(copies.sum())
        kept = np.flatnonzero(~copies)
        drift_score, evidence, split = np.zeros(n), None, None
        if to_drift is not None and kept.size:
            d = inp.updates.shape[1]
            # a first pass needs the split only when most go against the model's way (a rival pass may win)
            if contested or exact.median(to_drift[kept]) <= 0.0:
                split = split_scores(to_drift, kept, float(drift_evidence), d, min_size)
            if contested:
                drift_score = np.zeros(n) if split is None else split
            elif kept.size >= SMALL:
                drift_score, evidence = drift_scores(to_drift, kept, inp.held, float(drift_evidence), d)
        drifting = _highest(drift_score, budget)
        budget -= int(drifting.sum())
        kept = np.flatnonzero(~copies & ~drifting)
        cos = cosines_to_centre(g, kept) if direction > 0 and not contested and kept.size >= SMALL else None
        against_score = np.zeros(n) if cos is None else against_scores(cos, kept, float(direction))
        against = _highest(against_score, budget)
        if cos is not None:                       # every update is scored by how far it turns away
            against_score = np.maximum(np.where(against, against_score, 0.0), against_scores(cos, kept, SUSPECT))
        budget -= int(against.sum())
        rows = np.flatnonzero(~copies & ~against)
        tested = offset > 0 and not contested and rows.size >= max(2 * min_size + 2, SMALL)
        offset_score = partner_scores(g, rows, min_size, float(offset)) if tested else np.zeros(n)
        shared = _highest(offset_score, budget)
        if shared.sum() <= min_size:              # an offset shared by fewer is no group: chance
            shared[:] = False
            offset_score = np.minimum(offset_score, 1.0)
        budget -= int(shared.sum())
        copies |= shared | against | drifting     # dropped as a group, like near copies
        rest = np.flatnonzero(~copies)
        k = max(1, min(n_clusters, rest.size // min_size))
        labels = np.full(n, -1)
        labels[rest] = restricted_kmeans(g[np.ix_(rest, rest)], inp.sq_dists[np.ix_(rest, rest)], k,
                                         min(min_size, rest.size), np.random.default_rng(inp.seed),
                                         n_init=n_init, max_iter=max_iter)
        sub_labels = labels[rest]
        r0, _ = weiszfeld_coefficients(g, np.ones(n))
        to_r0 = np.zeros((n, k))
        to_r0[rest] = membership(sub_labels, k)
        to_r0 -= r0[:, None]
        _, centre_r0 = quad_forms(g, to_r0)                       # squared centre-to-R0 distances
        sizes = np.bincount(sub_labels, minlength=k)
        # the largest group is the reference (ties: nearest the geometric median); contested, each in turn
        order = sorted(range(k), key=lambda h: (-sizes[h], centre_r0[h], h))

        best: tuple[float, float, np.ndarray, np.ndarray, np.ndarray, list[str], float | None] | None = None
        best_key = kept_key = everyone_key = b""
        tried: set[bytes] = set()
        centred: dict[tuple[bytes, float], tuple[np.ndarray, np.ndarray]] = {}  # phase 2 is the same for the same survivors
        rest_dist = dist[np.ix_(rest, rest)]
        small = rest.size < SMALL
        for ref in order if contested else order[:1]:
            weak = (weak_groups(cos[rest], sub_labels, k, ref) if cos is not None and rest.size >= SMALL
                    else np.zeros(k, dtype=bool))
            for multiplier, cluster_score, drops, rejects in _variants(rest_dist, weak, sub_labels, k, ref, candidates,
                                                                       sizes[ref] >= MIN_REFERENCE, inp.evaluate is not None,
                                                                       small):
                dropped = _drop_groups(cluster_score, sub_labels, ref, budget)
                survivors = ~copies
                survivors[rest] = ~dropped[sub_labels]
                at = (survivors.tobytes(), multiplier)
                if at not in centred:
                    centred[at] = outliers(g, survivors, multiplier)
                accepted, ratio = centred[at]
                if not rejects:                       # phase 2's outliers are suspicious, not rejected
                    accepted, ratio = survivors, np.minimum(ratio, 1.0)
                    everyone_key = accepted.tobytes()
                key = accepted.tobytes()
                if drops == "keep":
                    kept_key = key
                if key in tried:
                    continue
                tried.add(key)
                shrink, norm_limit = norm_shrink(g, accepted, float(norm_clip))
                features = feature_shrink(inp, accepted, float(feature_clip))
                vector = weighted_mean(inp.updates, inp.weights, np.flatnonzero(accepted), shrink, features)
                quality = 0.0 if inp.evaluate is None else _quality(inp, vector.copy())
                # A rejection distance suggests only has to beat the candidate that made no such rejection
                # (keeping everyone, or the far groups at this radius), while that is the best; anything
                # else must beat the best so far by the margin.
                suggested = best_key == everyone_key or (drops == "far" and kept_key == best_key)
                margin = 0.0 if suggested and drops != "weak" else tune_margin
                if best is None or quality > best[0] + margin:
                    scores = np.maximum.reduce([ratio, copy_score, offset_score, against_score, drift_score,
                                                clip_share_score(inp, features, float(radius))])
                    scores[rest] = np.maximum(scores[rest], cluster_score[sub_labels])
                    reasons = [AGAINST_DRIFT if r else "clustering: shared offset" if o else
                               "clustering: against the majority" if t else "clustering: colluding group" if c else
                               "" if a else "clustering: cluster outlier" if not s else "clustering: outlier in cluster"
                               for r, o, t, c, a, s in zip(drifting.tolist(), shared.tolist(), against.tolist(),
                                                           copies.tolist(), accepted.tolist(), survivors.tolist())]
                    best, best_key = (quality, multiplier, vector, accepted, scores, reasons, norm_limit), key
        if best is None:
            raise ValueError("clustering: no radius candidate produced an aggregate")
        quality, multiplier, vector, accepted, scores, reasons, norm_limit = best
        if inp.evaluate is not None and guard > 0:
            if current is None:
                current = _quality(inp, np.zeros(inp.updates.shape[1], dtype=np.float32))
            if quality < current - guard:
                if not contested:
                    return attempt(True, current)
                raise ValueError(f"clustering: the best aggregate validates at {quality:.4f}, more than {guard:g} "
                                 f"below the current model's {current:.4f}")
            if not contested and split is not None:
                # the drift test abstained (most updates go against the model's way) while a group goes
                # its way with evidence: the round may be the attackers', so the contested pass may win
                try:
                    rival = attempt(True, current)
                except ValueError:
                    rival = None
                if rival is not None and rival.info["validation"] > quality:
                    return rival
        info = {"clusters": int(k), "labels": labels.tolist(), "radius": multiplier,
                "near_copies": int((copies & ~shared & ~against & ~drifting).sum()), "shared_offset": int(shared.sum()),
                "against": int(against.sum()), "against_drift": int(drifting.sum()), "drift_evidence": evidence,
                "norm_limit": norm_limit, "contested": contested}
        if inp.evaluate is not None:
            info["validation"] = quality
        return result(vector, accepted, scores, reasons, **info)

    return attempt(False)
