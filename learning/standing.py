"""A sender's standing: a weight factor from the scores of its last accepted updates.

The default rule scores every update's suspicion on one scale (above 1: rejected) and rejects by
what one round shows. Attackers who coordinate learn to sit just under that bar, round after
round: on the CNN a backdoor's senders scored 0.87-1.00 as one group for five rounds while honest
updates scored 0.4-0.8, and eight accepted attackers of twenty added up to a 60% backdoor
(``bench/adversary_findings.md``). No single round holds that evidence; the chain does, since
every final block records every update's score.

So each sender's weight is multiplied by its *standing*: 1 while the mean of the scores of its
last :data:`WINDOW` accepted updates (at least :data:`MIN_SCORES` of them) stays at or below
:data:`LOW`, falling linearly to :data:`FLOOR` at :data:`HIGH`. Nobody is rejected or penalized
for it: a sender whose updates keep scoring near the bar just counts for less, and an attacker
who lowers its score to regain weight must weaken what it sends in every round it wants to count.

It is chain state every verifier derives alike: the scores are those final blocks record (the
proposer's floats, the same bytes on every node), the mean and the factor are IEEE-754 double
operations in a fixed order, so every CPU computes the same weight. Entries lapse
:data:`HORIZON` rounds after a sender's last accepted update, which bounds the record by the
senders of the last rounds, never by the chain's length.

Only the ``clustering`` rule's scores have that scale (Krum's are squared distances), so only it
uses standing (:func:`applies`); ``FLSettings.standing`` turns it off.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

from learning.settings import FLSettings

WINDOW = 4
"""Accepted scores per sender that count (the newest)."""
MIN_SCORES = 2
"""Below this many accepted scores a sender's standing is 1: one round is that round's business."""
LOW = 0.80
"""Mean score at or below which a sender keeps its full weight."""
HIGH = 0.95
"""Mean score at or above which a sender's weight is :data:`FLOOR` times its claim."""
FLOOR = 0.1
"""The least standing: never zero, so a sender whose data make it an outlier still counts."""
CAP = 2.0
"""Scores count at most this much (an honest outlier the rule keeps alone may score far above 1)."""
HORIZON = 100
"""Rounds (a chain: heights) a sender's scores last after its last accepted update."""

Record = dict[Hashable, tuple[tuple[int, float], ...]]
"""Sender -> (round, score) of its last accepted updates, oldest first, at most :data:`WINDOW`."""


def applies(settings: FLSettings) -> bool:
    """Do the chain's rounds weigh senders by standing (the default rule, ``standing`` on)?"""
    return settings.standing and settings.rule == "clustering"


def factor(scores: Sequence[float]) -> float:
    """The standing of a sender whose last accepted updates scored ``scores`` (oldest first)."""
    if len(scores) < MIN_SCORES:
        return 1.0
    mean = 0.0
    for s in scores:
        mean += s
    mean /= len(scores)
    return min(1.0, max(FLOOR, (HIGH - mean) / (HIGH - LOW)))


def factors(record: Mapping[Hashable, Sequence[tuple[int, float]]], senders: Sequence[Hashable]) -> list[float]:
    """Per update, its sender's standing (1 for a sender without a record)."""
    return [factor([score for _, score in record.get(s, ())]) for s in senders]


def standing_after(record: Mapping[Hashable, Sequence[tuple[int, float]]], senders: Sequence[Hashable],
                   accepted: Sequence[bool], scores: Sequence[float], now: int) -> Record:
    """The record after round ``now``: each accepted update's score (capped at :data:`CAP`; a
    score that is not a finite number, or below 0, is not evidence and is left out) joins its
    sender's last :data:`WINDOW`; senders whose newest entry is :data:`HORIZON` rounds old lapse."""
    kept: Record = {s: tuple(v) for s, v in record.items() if v and v[-1][0] > now - HORIZON}
    for s, ok, score in zip(senders, accepted, scores):
        if ok and math.isfinite(score) and score >= 0:
            kept[s] = (*kept.get(s, ()), (now, min(float(score), CAP)))[-WINDOW:]
    return kept
