"""Evidence of equivocation waiting to be put in a block.

Evidence is self-authenticating (two signatures by the offender), so anyone may send it, and
that makes it a tempting flood: every piece costs two signature checks and some memory. The
pool therefore checks cheap things first (is the offender someone whose votes could count at
all, has this offence been seen, is it within the unbonding window) before verifying anything,
keeps at most one piece per (offender, height, kind), and holds at most ``capacity`` pieces,
dropping the oldest heights first. A piece leaves when a block includes it or it ages out.
"""

from __future__ import annotations

from consensus.equivocation import Evidence
from consensus.state import ChainState

CAPACITY = 256


class EvidencePool:
    def __init__(self, chain_id: str, capacity: int = CAPACITY) -> None:
        self.chain_id = chain_id
        self.capacity = capacity
        self._pieces: dict[bytes, Evidence] = {}
        self._offences: set[tuple[str, int, str]] = set()

    def __len__(self) -> int:
        return len(self._pieces)

    def add(self, ev: Evidence, state: ChainState) -> str | None:
        """Take ``ev`` if it is new, genuine and punishable on ``state``; returns why not."""
        try:
            offence = (ev.offender, ev.height, ev.kind)
        except (AttributeError, TypeError, ValueError):
            return "malformed evidence"
        if ev.hash in self._pieces or offence in self._offences:
            return "duplicate"
        reason = state.evidence_problem(ev)  # offender, window, already punished, then the signatures
        if reason is not None:
            return reason
        self._pieces[ev.hash] = ev
        self._offences.add(offence)
        while len(self._pieces) > self.capacity:
            oldest = min(self._pieces.values(), key=lambda e: (e.height, e.hash))
            self._drop(oldest)
        return None

    def _drop(self, ev: Evidence) -> None:
        self._pieces.pop(ev.hash, None)
        self._offences.discard((ev.offender, ev.height, ev.kind))

    def pending(self) -> list[Evidence]:
        """Pieces in a fixed order (oldest height first), for a block to include."""
        return sorted(self._pieces.values(), key=lambda e: (e.height, e.hash))

    def update(self, included: tuple[Evidence, ...], state: ChainState) -> None:
        """After a final block: drop what it included and whatever the new state no longer takes
        (too old, or the offender was punished for that height)."""
        for ev in included:
            self._drop(ev)
        for ev in list(self._pieces.values()):
            if state.evidence_problem(ev, verify=False) is not None:
                self._drop(ev)
