"""Is this node's clock in step with the delegates'? Judged from how late their proposals arrive.

Slots follow the wall clock, and a block stamped more than ``max_clock_drift_ms`` away from its
slot, or ahead of a receiver's clock, is refused. A device whose clock runs ahead proposes early
and sees its blocks refused; one whose clock runs behind refuses honest blocks as "from the
future". Either way its operator saw missed slots and, in time, a jailed delegate, with no word
about the clock. A delegate stamps its block when it builds it, at the start of its slot, so by
a clock in step the proposals of others arrive a little after their stamps (propagation). The
median of that lateness over the last proposals says more: well above the drift bound, this
clock is ahead; below zero by more than half of it, behind (a block cannot arrive before it was
built). A median is what the honest majority of proposers says; a few lying stamps (each bounded
by the slot rules anyway) cannot move it.
"""

from __future__ import annotations

import logging
from collections import deque
from statistics import median

log = logging.getLogger("fedchain.consensus")

WINDOW = 31
"""Proposals the median covers (about a minute of slots on a small chain)."""
MIN_SAMPLES = 8
"""Fewer say nothing: one slow link or one liar would decide."""


class ClockCheck:
    def __init__(self, drift_ms: int) -> None:
        self.drift_ms = drift_ms
        self.lateness: deque[int] = deque(maxlen=WINDOW)
        self.verdict = "unknown"

    def observe(self, received_ms: int, stamped_ms: int) -> None:
        """A proposal of another delegate, stamped ``stamped_ms`` by its producer, reached this
        node at ``received_ms`` by this node's clock. Logs when the verdict changes."""
        self.lateness.append(received_ms - stamped_ms)
        if len(self.lateness) < MIN_SAMPLES:
            return
        late = median(self.lateness)
        verdict = "ahead" if late > self.drift_ms else "behind" if late < -self.drift_ms / 2 else "ok"
        if verdict == self.verdict:
            return
        if verdict == "ok":
            if self.verdict != "unknown":
                log.info("this node's clock is in step with the delegates' again (proposals arrive %d ms "
                         "after their stamps)", late)
        else:
            log.warning("this node's clock looks about %d ms %s the delegates' (the median of the last %d "
                        "proposals arrived %d ms after its stamp): blocks stamped more than %d ms off are "
                        "refused, so check the device's time synchronisation (NTP)", abs(late),
                        "ahead of" if verdict == "ahead" else "behind", len(self.lateness), late, self.drift_ms)
        self.verdict = verdict

    def summary(self) -> dict:
        """For ``/status``: the verdict and the median lateness it rests on."""
        return {"verdict": self.verdict, "samples": len(self.lateness),
                "proposal_lateness_p50_ms": int(median(self.lateness)) if self.lateness else None}
