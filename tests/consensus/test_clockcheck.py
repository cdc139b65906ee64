"""consensus/clockcheck.py: a node tells its operator when its clock is out of step."""

from __future__ import annotations

import logging
import re

from consensus.clockcheck import ClockCheck

PROPOSERS = ("a", "b", "c")


def feed(check: ClockCheck, lateness: list[int], proposers: tuple[str, ...] = PROPOSERS) -> None:
    for i, late in enumerate(lateness):
        check.observe(proposers[i % len(proposers)], 10_000 + i * 1000 + late, 10_000 + i * 1000)


def test_in_step_ahead_and_behind_each_said_once(caplog) -> None:
    check = ClockCheck(drift_ms=1000)
    with caplog.at_level(logging.INFO, logger="fedchain.consensus"):
        feed(check, [40, 80, 120] * 3)
        assert check.verdict == "ok" and not caplog.records
        feed(check, [3100, 2900, 3050] * 5)           # a clock 3 s ahead: proposals seem late
        assert check.verdict == "ahead"
        feed(check, [-1400, -1600, -1500] * 5)        # 1.5 s behind: they seem to come from the future
        assert check.verdict == "behind"
        feed(check, [60] * 15)
        assert check.verdict == "ok"
    said = [(r.levelname, re.sub(r"\d+ ms", "N ms", r.getMessage().split(" (")[0])) for r in caplog.records]
    assert said == [("WARNING", "this node's clock looks about N ms ahead of the delegates'"),
                    ("WARNING", "this node's clock looks about N ms behind the delegates'"),
                    ("INFO", "this node's clock is in step with the delegates' again")]
    assert "check the device's time synchronisation (NTP)" in caplog.records[0].getMessage()
    assert check.summary() == {"verdict": "ok", "proposers": 3, "proposal_lateness_p50_ms": 60}


def test_one_proposer_proposing_in_every_round_does_not_outvote_the_others() -> None:
    """Found with real daemons: a delegate whose clock ran 3 s ahead proposed in round after
    round while the others proposed once a height, and a median over proposals told a node with
    a good clock that it was behind."""
    check = ClockCheck(drift_ms=1000)
    for i in range(4):
        feed(check, [-3000] * 5, ("fast",))
        feed(check, [60, 90], ("a", "b"))
    assert check.verdict == "ok" and check.summary()["proposal_lateness_p50_ms"] == 60


def test_a_few_proposals_or_one_proposer_decide_nothing() -> None:
    check = ClockCheck(drift_ms=1000)
    feed(check, [90_000] * 7)
    assert check.verdict == "unknown" and check.summary()["proposal_lateness_p50_ms"] is None
    lone = ClockCheck(drift_ms=1000)
    feed(lone, [90_000] * 20, ("a",))
    assert lone.verdict == "unknown"
