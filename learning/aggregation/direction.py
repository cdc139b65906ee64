"""The default rule's direction test (phase 1a' of :mod:`.clustering`): updates and groups that
push against the majority.

Honest updates are steps on one objective: each points, more or less, the way the robust centre
(the geometric median of the updates the near-copy test left) points. Attackers who undo the
round's progress (IPM, a sign flip, a push along the negative mean) point elsewhere, whatever
noise each adds. An update whose cosine to the centre is below ``share`` times the median cosine
is dropped; nothing is tested when the median cosine is not positive (no common direction to go
against). On 20 Fashion-MNIST nodes with 8 noisy IPM attackers the test dropped all of them in the
first five to eight rounds without touching an honest update; honest updates of a 30-round clean
run never fell below it (the lowest was 0.28 times the median, once).

Later in training honest updates barely agree (cosines 0.1-0.25), and the centre's lean toward
each update by its own share lifts attackers to 0.05-0.1, above a quarter of the median: the test
then lets them in. What still tells them apart is their group: k-means mostly puts them in a
cluster of their own whose median cosine is a third of the reference cluster's (0.26-0.38 in
recorded rounds), while honest clusters of a 30-round clean run stayed above 0.6 of it in 29 of
30 rounds. Such a *weak* group (below ``WEAK_GROUP`` of the reference's median cosine) is offered
to phase 1b as a drop that must validate better by the radius tuning's margin: no honest update
more was rejected on 3 clean seeds, and a 40% noisy IPM run (MLP, seed 1) ended 3.2 points higher.

The test also scores every update it sees, dropped or not: how far its cosine falls below the
median, over half the median (``SUSPECT``), so an update at half the median cosine scores 1 and
one at the drop threshold 1.5. An attacker that tunes itself to sit just inside the threshold
(:mod:`learning.adaptive`, the rule in its loop) still points away from the majority more than
honest updates do: on 20 Fashion-MNIST nodes (the MLP, 3 seeds, 10 rounds) this cosine alone
ranked it above every honest update (ROC AUC 1.00 at 20% and 40%), while the distances it keeps
inside put it below them (0.41 and 0.20 when only dropped updates were scored this way).

The drift test (phase 1a', first) compares every update with a direction that does not depend
on this round's updates at all: how the global model moved over the staleness window (the current
model minus the oldest base an update may still build on, :func:`learning.round.drift`), which
every verifier reads from the chain. Honest updates keep going the way the model has been going;
a sign flipper or IPM attacker undoes it. Unlike the centre, the reference cannot lean toward the
updates it judges, so it does not fade as honest updates stop agreeing late in training: on 20
Fashion-MNIST nodes with 8 sign flippers (the MLP, 25 rounds, seed 0) the flippers' cosines to
the centre rose from -0.35 to +0.2 by round 9 and they were let in from then on (final accuracy
73.4%, 83.2% without attackers); with the drift test their cosines to the drift stayed at -0.03
or below through round 23, honest medians 0.07-0.53, two honest updates below zero in 25 rounds,
and the run ended at 81.5%. An update whose cosine to the drift is below zero is dropped, lowest first;
nothing is tested when the median cosine is not positive, so a drift that attackers did steer
(the honest majority then points against it) never locks honest corrections out.

The drift holds every accepted sender's own recent updates, and a sender's data changes little
from one round to the next, so its cosine to the drift includes its cosine to its own past
contribution: a sender once dropped has none, and stays below zero. Against sign flippers that
lock-out is what works late in training, when honest updates agree with the others' drift no more
than chance; for honest nodes whose data differs from everyone's it locked them out for good (on
Synthetic(1,1)'s natural partition five nodes of twenty were dropped in 79-97% of 30 rounds, final
accuracy 74.9% against 83.0% without the test). So the test drops an update on its own evidence
only while the round shows a shared direction: the median cosine at least ``DRIFT_EVIDENCE``
times the spread a cosine between unrelated directions has (``1/sqrt(d)``). Otherwise it drops
senders the chain *holds* (``held``: senders it dropped against the drift before and has not
accepted since, :func:`learning.round.holds_after`) below zero, and anyone else only as far below
zero as the bar is above it (``-DRIFT_EVIDENCE/sqrt(d)``): without that floor an attacker with the
rule in its loop (`adaptive`, 40%, the MLP on digits) found the first round short of evidence
(2.2), pushed freely, turned the drift its way and took the model to chance (10.0% against 59.6%).
Measured: Synthetic's median cosine never reached 4 such spreads and digits' logistic regression
5.4, the MLP's started at 37 on Fashion-MNIST, the CNN's above 60.

The median guard sides with a round's majority, and asynchronous rounds can hold an attacker
majority: IPM at 40% (the MLP, 10 arrivals an aggregation, seed 0) held half a round or more in
11 of 20, pointed against the drift at -0.4 to -0.7 while honest updates went with it at +0.2 to
+0.6, and the test stood aside. The clustering rule's second pass, which validation arbitrates,
has a test of its own (:func:`split_scores`): when the updates that go the drift's way are enough
and show a shared direction alone, every update below zero goes.

Cosines come from the exact Gram matrix (and exact dot products with the reference) and the
fixed-order Weiszfeld coefficients, medians by sorting: the same bits on every CPU.
"""

from __future__ import annotations

import math

import numpy as np

from . import exact
from .geomed import weiszfeld_coefficients

DRIFT_EVIDENCE = 8.0    # median cosine to the drift, in units of 1/sqrt(d), that shows a shared direction
WEAK_GROUP = 0.5        # a cluster whose median cosine to the centre is below half the reference's is weak
SUSPECT = 0.5           # an update whose cosine is below half the median scores above 1 (suspicious, kept)


def cosines_to_centre(g: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Each update's cosine to the geometric median ``c`` of ``rows`` (NaN outside ``rows``):
    ``(G c)_i / sqrt(G_ii c'Gc)``, fixed-order steps on the exact Gram matrix ``g``."""
    n = g.shape[0]
    coef = np.zeros(n)
    coef[rows], _ = weiszfeld_coefficients(g[np.ix_(rows, rows)], np.ones(rows.size))
    gc = exact.matvec(g, coef)
    centre = math.sqrt(max(exact.total(coef * gc), 0.0))
    norms = np.sqrt(exact.clip_negative(np.diagonal(g).copy()))
    cos = np.full(n, np.nan)
    cos[rows] = gc[rows] / np.maximum(norms[rows] * centre, 1e-300)
    return cos


def cosines_to(updates: np.ndarray, g: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each update's cosine to ``reference``, from exact dot products and the Gram diagonal."""
    dots, own = exact.dots_with(updates, reference)
    norms = np.sqrt(exact.clip_negative(np.diagonal(g).copy()))
    return dots / np.maximum(norms * math.sqrt(own), 1e-300)


def against_scores(cos: np.ndarray, rows: np.ndarray, share: float) -> np.ndarray:
    """Per update, how far its cosine falls below the median cosine of ``rows``, over ``1 - share``
    of that median: above 1 below ``share`` times the median (0 outside ``rows``, and everywhere
    when the median is not positive)."""
    scores = np.zeros(cos.size)
    med = exact.median(cos[rows])
    if med > 0.0:
        scores[rows] = (med - cos[rows]) / ((1.0 - share) * med)
    return scores


def weak_groups(cos: np.ndarray, labels: np.ndarray, k: int, ref: int) -> np.ndarray:
    """Clusters whose median cosine to the centre is below ``WEAK_GROUP`` times the reference's."""
    med = np.array([exact.median(cos[labels == h]) for h in range(k)])
    return (med < WEAK_GROUP * med[ref]) & (med[ref] > 0.0) & (np.arange(k) != ref)


def drift_scores(cos: np.ndarray, rows: np.ndarray, held: np.ndarray | None, evidence: float,
                 d: int) -> tuple[np.ndarray, float]:
    """The drift test's scores (above 1 below zero, as :func:`against_scores` with share 0) and the
    round's evidence, the median cosine of ``rows`` times ``sqrt(d)``. Below ``evidence`` that holds
    for ``held`` updates only; the others score above 1 only below ``-evidence / sqrt(d)``."""
    scores = against_scores(cos, rows, 0.0)
    med = exact.median(cos[rows])
    strength = med * math.sqrt(d)
    if strength < evidence and med > 0.0:
        floor = -evidence / math.sqrt(d)
        alone = np.zeros(cos.size)
        alone[rows] = (med - cos[rows]) / (med - floor)
        scores = alone if held is None else np.where(held, scores, alone)
    return scores, strength


def split_scores(cos: np.ndarray, rows: np.ndarray, evidence: float, d: int, least: int) -> np.ndarray | None:
    """The drift test of a contested pass (:mod:`.clustering`'s guard), which takes no side from the
    round's majority: when at least ``least`` of ``rows`` go the drift's way (cosine above zero) and
    show a shared direction on their own (their median cosine at least ``evidence / sqrt(d)``),
    every update scores how far its cosine falls below that median, over the median (above 1 below
    zero); None when no such group exists."""
    along = rows[cos[rows] > 0.0]
    if along.size < least:
        return None
    med = exact.median(cos[along])
    if med * math.sqrt(d) < evidence:
        return None
    scores = np.zeros(cos.size)
    scores[rows] = (med - cos[rows]) / med
    return scores

