"""What must hold in every simulated run, checked as the run goes.

* Agreement: no two honest nodes finalize different blocks at one height.
* No reversion: a node's final blocks only ever extend its chain, one height at a time, and a
  node that crashes comes back with every block it had finalized, unchanged.
* Liveness after a partition heals: every running node finalizes a block above the highest
  height of the moment of healing within ``liveness_slots`` slots.

A violation is recorded with the virtual time it was seen at; the run's result lists them all
(an empty list is the pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Invariants:
    slot_ms: int
    liveness_slots: int = 10
    canonical: dict[int, str] = field(default_factory=dict)
    heights: dict[int, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    recoveries: list[dict] = field(default_factory=list)
    """After each heal: the height to pass, and when each running node passed it (ms after)."""

    def on_final(self, node: int, height: int, block_hash: str, at_ms: int) -> None:
        known = self.canonical.setdefault(height, block_hash)
        if known != block_hash:
            self.violations.append(f"t={at_ms}ms: node {node} finalized {block_hash[:12]} at height {height}, "
                                   f"another node {known[:12]}")
        last = self.heights.get(node, 0)
        if height != last + 1:
            self.violations.append(f"t={at_ms}ms: node {node} went from final height {last} to {height}")
        self.heights[node] = max(last, height)
        for rec in self.recoveries:
            if height > rec["height"] and node in rec["pending"]:
                rec["pending"].discard(node)
                rec["after_ms"][node] = at_ms - rec["healed_at_ms"]

    def on_restart(self, node: int, stored: dict[int, str], at_ms: int) -> None:
        """``stored``: height -> hash of every block in the restarted node's database."""
        had = self.heights.get(node, 0)
        if max(stored, default=0) < had:
            self.violations.append(f"t={at_ms}ms: node {node} restarted at height {max(stored, default=0)}, "
                                   f"below its final height {had}")
        for height, block_hash in stored.items():
            if self.canonical.setdefault(height, block_hash) != block_hash:
                self.violations.append(f"t={at_ms}ms: node {node} restarted with another block at height {height}")
        self.heights[node] = max(stored, default=0)

    def healed(self, at_ms: int, running: list[int]) -> None:
        self.recoveries.append({"healed_at_ms": at_ms, "height": max(self.heights.values(), default=0),
                                "pending": set(running), "after_ms": {}})

    def check_liveness(self, now_ms: int, running: set[int]) -> None:
        """Call once the run is over (or at any time past every bound)."""
        for rec in self.recoveries:
            bound = rec["healed_at_ms"] + self.liveness_slots * self.slot_ms
            late = sorted(n for n in rec["pending"] & running)
            if late and now_ms >= bound:
                self.violations.append(f"t={bound}ms: {len(late)} node(s) (e.g. {late[:5]}) finalized nothing above "
                                       f"height {rec['height']} within {self.liveness_slots} slots of the heal")
                rec["pending"].clear()
