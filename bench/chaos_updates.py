"""What became of every update an honest trainer sent during a chaos run.

A trainer makes at most one update per base model (the global model of a final height), keeps it
in its blob store (``data/blobs.sqlite``, kind ``update``, under its id) before it gossips it, and
re-announces it until a block considers it or its base leaves the window. So the updates a node
*sent* are the updates of its own key in its own blob store; their count is checked against the
privacy releases its accountant persisted (``/fl/privacy``), which count every update it made.

Each sent update has exactly one fate, decided in this order from the nodes' own records:

* ``considered``: a final block lists it (accepted or rejected by the aggregation rule, or listed
  in a skipped round), per the blocks' FL payloads and the ``/fl/updates?height=`` records;
* ``made_stale``: not considered, and its base had already left the window (the chain had
  finalized ``base + max_staleness + 1``) when the trainer finished it: the trainer started from
  the newest model its node had while the node was behind (catching up after a restart or a
  pause), or training took longer than the window. Every node refuses it at admission
  (``stale_base``);
* ``superseded``: not considered, and its sender made a newer update (on a newer base) before
  this one's base left the window: every pool keeps one update per sender, the newest, so the
  newer one took its place (dropped by design, as in FedAsync);
* ``sender_down``: not considered, no newer update in time, its base left the window (the chain
  finalized ``base + max_staleness + 1``) and its sender was down (killed, paused, or restarting
  and catching up) at some point between the update's creation and that moment;
* ``pending_at_end``: its base is still in the window when the run ends;
* ``lost``: anything else: an update whose sender stayed up, kept re-announcing it, made no newer
  one, and that no final block took before its base aged out. This must be 0.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gossip.codec import unpack

FATES = ("considered", "made_stale", "superseded", "sender_down", "pending_at_end", "lost")
MAX_UPDATE = 1 << 24


@dataclass(frozen=True)
class SentUpdate:
    id: str
    base_height: int
    created: float  # wall time in seconds (an update's seq is its creation time in microseconds)


def sent_updates(blobs: Path, node_id: str) -> list[SentUpdate]:
    """The updates of ``node_id`` in a node's blob store (read-only; the daemon is stopped)."""
    db = sqlite3.connect(f"file:{blobs}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT hash, data FROM blobs WHERE kind = 'update'").fetchall()
    finally:
        db.close()
    out = []
    for key, data in rows:
        wire = unpack(data, MAX_UPDATE)  # [chain_id, sender, seq, base_hash, base_height, ...]
        if wire[1] == node_id:
            out.append(SentUpdate(key.hex(), wire[4], wire[2] / 1e6))
    return sorted(out, key=lambda u: (u.base_height, u.created))


def classify(sent: list[SentUpdate], considered: set[str], final_at: Callable[[int], float | None],
             down: list[tuple[float, float]], max_staleness: int) -> list[tuple[SentUpdate, str]]:
    """Each of one sender's updates with its fate (see the module docstring)."""
    out = []
    for k, u in enumerate(sent):
        if u.id in considered:
            out.append((u, "considered"))
            continue
        aged = final_at(u.base_height + max_staleness + 1)
        newer = next((v for v in sent[k + 1:] if v.base_height > u.base_height), None)
        if aged is not None and aged <= u.created:
            fate = "made_stale"
        elif newer is not None and (aged is None or newer.created <= aged):
            fate = "superseded"
        elif aged is None:
            fate = "pending_at_end"
        elif any(start < aged and stop > u.created for start, stop in down):
            fate = "sender_down"
        else:
            fate = "lost"
        out.append((u, fate))
    return out


def account(sent: dict[int, list[SentUpdate]], releases: dict[int, int], considered: set[str],
            final_at: Callable[[int], float | None], down: dict[int, list[tuple[float, float]]],
            max_staleness: int) -> dict:
    """Per node and in total: updates sent, their fates, and releases never recorded as updates."""
    per_node, totals, lost = {}, Counter(), []
    for i, updates in sent.items():
        fates = classify(updates, considered, final_at, down.get(i, []), max_staleness)
        counts = Counter(f for _, f in fates)
        per_node[i] = {"sent": len(updates), "releases": releases.get(i), **{f: counts[f] for f in FATES},
                       "released_not_recorded": max(0, (releases.get(i) or 0) - len(updates))}
        totals.update({"sent": len(updates), "released_not_recorded": per_node[i]["released_not_recorded"], **counts})
        lost += [{"node": i, "id": u.id, "base_height": u.base_height, "created": u.created,
                  "base_aged_out": final_at(u.base_height + max_staleness + 1), "down": down.get(i, [])}
                 for u, f in fates if f == "lost"]
    return {"per_node": per_node, "totals": {k: totals[k] for k in ("sent", *FATES, "released_not_recorded")},
            "lost_examples": lost[:20]}
