"""Is this node's clock in step with the delegates'? Judged from how late their proposals arrive.

Slots follow the wall clock, and a block stamped more than ``max_clock_drift_ms`` away from its
slot, or ahead of a receiver's clock, is refused. A device whose clock runs ahead proposes early
and sees its blocks refused; one whose clock runs behind refuses honest blocks as "from the
future". Either way its operator saw missed slots and, in time, a jailed delegate, with no word
about the clock. A delegate stamps its block when it builds it, at the start of its slot, so by
a clock in step the proposals of others arrive a little after their stamps (propagation). The
median over the proposers of each one's typical lateness says more: well above the drift bound,
this clock is ahead; below minus the bound, behind (blocks seem to come from so far in the
future that they are refused). A median over proposers, not proposals, is what their honest majority says: one
delegate with a bad clock proposes in round after round of a height while the others propose
once, and a median over proposals took its word (a node with a good clock was told it was
behind).
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from statistics import median

log = logging.getLogger("fedchain.consensus")

PER_PROPOSER = 5
"""A proposer's typical lateness is the median of its last this many proposals."""
MAX_PROPOSERS = 64
"""Proposers remembered (the least recently heard is forgotten first)."""
MIN_SAMPLES = 8
MIN_PROPOSERS = 2
"""Fewer proposals or proposers say nothing: one slow link or one liar would decide."""


class ClockCheck:
    def __init__(self, drift_ms: int) -> None:
        self.drift_ms = drift_ms
        self.lateness: OrderedDict[str, deque[int]] = OrderedDict()
        self.verdict = "unknown"

    def observe(self, proposer: str, received_ms: int, stamped_ms: int) -> None:
        """A proposal of ``proposer`` (signature checked), stamped ``stamped_ms`` by it, reached
        this node at ``received_ms`` by this node's clock. Logs when the verdict changes."""
        own = self.lateness.pop(proposer, None) or deque(maxlen=PER_PROPOSER)
        own.append(received_ms - stamped_ms)
        self.lateness[proposer] = own
        if len(self.lateness) > MAX_PROPOSERS:
            self.lateness.popitem(last=False)
        late = self.median()
        if late is None:
            return
        verdict = "ahead" if late > self.drift_ms else "behind" if late < -self.drift_ms else "ok"
        if verdict == self.verdict:
            return
        if verdict == "ok":
            if self.verdict != "unknown":
                log.info("this node's clock is in step with the delegates' again (proposals arrive %d ms "
                         "after their stamps)", late)
        else:
            log.warning("this node's clock looks about %d ms %s the delegates' (the median of %d "
                        "proposers' proposals arrived %d ms after their stamps): blocks stamped more than %d ms off are "
                        "refused, so check the device's time synchronisation (NTP)", abs(late),
                        "ahead of" if verdict == "ahead" else "behind", len(self.lateness), late, self.drift_ms)
        self.verdict = verdict

    def median(self) -> int | None:
        """The median over proposers of each one's median lateness (None while too few)."""
        if len(self.lateness) < MIN_PROPOSERS or sum(map(len, self.lateness.values())) < MIN_SAMPLES:
            return None
        return int(median(median(own) for own in self.lateness.values()))

    def summary(self) -> dict:
        """For ``/status``: the verdict and the median lateness it rests on."""
        return {"verdict": self.verdict, "proposers": len(self.lateness),
                "proposal_lateness_p50_ms": self.median()}
