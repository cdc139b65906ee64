"""A sender's standing: a weight factor from how its last accepted updates scored against their rounds.

The default rule scores every update's suspicion (above 1: rejected) and rejects by what one round
shows. Attackers who coordinate learn to sit just under that bar as one group, round after round:
on the CNN a backdoor's senders scored 0.87-1.00 for five rounds while honest updates scored
0.4-0.8, and eight accepted attackers of twenty added up to a 60% backdoor
(``bench/adversary_findings.md``). No single round holds that evidence; the chain does, since
every final block records every update's score.

What counts is a score's *excess*: how far it sits above its round's lower quartile (the
``len // 4``-th lowest finite score of the round), floored at 0 and capped at :data:`CAP`. The bar
alone is no yardstick: the rule tunes its radius to each round, and on the MLP honest updates
score 0.8-0.95 round after round (an absolute threshold tried first held back 46% of honest weight
there, and 90% on a run whose every sender sat near the bar). The lower quartile is an honest
score whenever fewer than three quarters of a round attack, and excess is 0 for a sender below it,
so rounds of low scores bank nothing against a round of attack. And an excess counts only in a
*crowd*: when at least :func:`crowd` of the round's accepted updates (three, or a fifth of the
round) sit more than :data:`LOW` above the quartile; otherwise every excess of the round counts as
0. Rejected updates are no part of the crowd: attackers the rule rejects still score far above the
quartile, and counting them turned the measure against the honest updates that sat highest. A lone
honest outlier (a device whose data no other device shares) scores high round after round too;
without the crowd test the odd node of a four-node testnet went to the floor for good and cost the
federation up to 2.5 points of accuracy (the simulator, digits, 3 seeds). Coordinated attackers
are a crowd by definition; a single attacker is the rule's business, round by round.

Each sender's weight is multiplied by its *standing*: 1 while the mean excess of its last
:data:`WINDOW` accepted updates (at least :data:`MIN_SCORES` of them) stays at or below
:data:`LOW`, falling linearly to :data:`FLOOR` at :data:`HIGH`. Nobody is rejected or penalized
for it: a sender whose updates keep sitting far above its rounds' honest quartile counts for less,
and an attacker who lowers its score to regain weight must weaken what it sends in every round it
wants to count.

It is chain state every verifier derives alike: the scores are those final blocks record (the
proposer's floats, the same bytes on every node); the quartile, the excess, the mean and the
factor are IEEE-754 double operations in a fixed order, so every CPU computes the same weights.
Entries lapse :data:`HORIZON` rounds after a sender's last accepted update, which bounds the
record by the senders of the last rounds, never by the chain's length.

Only the ``clustering`` rule's scores have that meaning (Krum's are squared distances), so only it
uses standing (:func:`applies`), and only when genesis ``standing`` turns it on. It is off by
default: it cuts the CNN's backdoors at 40% about four-fold, but on asynchronous arrivals it
withholds about 14% of honest weight from the freshest updates and costs about a point at 40%
(``docs/decisions.md``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

from learning.settings import FLSettings

WINDOW = 4
"""Accepted updates per sender that count (the newest)."""
MIN_SCORES = 2
"""Below this many accepted updates a sender's standing is 1: one round is that round's business."""
LOW = 0.10
"""Mean excess at or below which a sender keeps its full weight."""
HIGH = 0.30
"""Mean excess at or above which a sender's weight is :data:`FLOOR` times its claim."""
FLOOR = 0.1
"""The least standing: never zero, so a sender whose data make it an outlier still counts."""
CAP = 1.0
"""Excess counts at most this much (an honest outlier the rule keeps alone may score far above 1)."""
HORIZON = 100
"""Rounds (a chain: heights) a sender's record lasts after its last accepted update."""

Record = dict[Hashable, tuple[tuple[int, float], ...]]
"""Sender -> (round, excess) of its last accepted updates, oldest first, at most :data:`WINDOW`."""


def applies(settings: FLSettings) -> bool:
    """Do the chain's rounds weigh senders by standing (the default rule, ``standing`` on)?"""
    return settings.standing and settings.rule == "clustering"


def factor(excess: Sequence[float]) -> float:
    """The standing of a sender whose last accepted updates had ``excess`` (oldest first)."""
    if len(excess) < MIN_SCORES:
        return 1.0
    mean = 0.0
    for e in excess:
        mean += e
    mean /= len(excess)
    return min(1.0, max(FLOOR, (HIGH - mean) / (HIGH - LOW)))


def factors(record: Mapping[Hashable, Sequence[tuple[int, float]]], senders: Sequence[Hashable]) -> list[float]:
    """Per update, its sender's standing (1 for a sender without a record)."""
    return [factor([e for _, e in record.get(s, ())]) for s in senders]


def round_factors(settings: FLSettings, record: Mapping[Hashable, Sequence[tuple[int, float]]] | None,
                  senders: Sequence[Hashable]) -> list[float] | None:
    """What a round of updates from ``senders`` is weighed by: their :func:`factors`, or None
    when the genesis does not weigh by standing (:func:`applies`)."""
    return factors(record or {}, senders) if applies(settings) else None


def crowd(n: int) -> int:
    """Updates of a round of ``n`` that must sit more than :data:`LOW` above its quartile for any
    excess of the round to count: three, or a fifth of the round if more."""
    return max(3, n // 5)


def lower_quartile(scores: Sequence[float]) -> float | None:
    """The round's ``len // 4``-th lowest finite score (None without one)."""
    finite = sorted(s for s in scores if math.isfinite(s))
    return finite[len(finite) // 4] if finite else None


def standing_after(record: Mapping[Hashable, Sequence[tuple[int, float]]], senders: Sequence[Hashable],
                   accepted: Sequence[bool], scores: Sequence[float], now: int) -> Record:
    """The record after round ``now``, whose updates came from ``senders`` and scored ``scores``:
    each accepted update's excess over the round's lower quartile (0 unless its accepted updates
    hold a :func:`crowd`) joins its sender's last :data:`WINDOW` (a score that is not a finite
    number is no evidence and is left out); senders whose newest entry is :data:`HORIZON` rounds
    old lapse."""
    kept: Record = {s: tuple(v) for s, v in record.items() if v and v[-1][0] > now - HORIZON}
    base = lower_quartile(scores)
    if base is None:
        return kept
    excess = [min(max(s - base, 0.0), CAP) if math.isfinite(s) else math.nan for s in scores]
    crowded = sum(e > LOW for e, ok in zip(excess, accepted) if ok) >= crowd(len(scores))
    for s, ok, e in zip(senders, accepted, excess):
        if ok and not math.isnan(e):
            kept[s] = (*kept.get(s, ()), (now, e if crowded else 0.0))[-WINDOW:]
    return kept
