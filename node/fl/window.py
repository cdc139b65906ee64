"""What the FL application remembers of the bases updates may still build on.

Updates may build on any of the last ``max_staleness + 1`` global models. For that window the
application keeps, identically on every node (it is derived from final blocks only):

* ``recent``: height -> model hash of each usable base;
* ``claims``: (sender, base height) -> id of the update a final block already considered, so no
  second update of that sender for that base is ever aggregated (and one that arrives is evidence
  of equivocation);
* ``punished``: (sender, base height) pairs already punished for equivocating, so the same
  evidence is never punished twice and the author's updates for that base are never aggregated;
* ``held``: sender -> height of the block that last dropped its update against the model's drift,
  until a block accepts one of its updates (:func:`learning.round.holds_after`): the default rule's
  drift test holds them to zero even when the round shows no shared direction.
* ``witness``: sender -> (height, id) of its last accepted update within
  :data:`learning.round.WITNESS_HORIZON` heights: whose feature-group norms stand in the default
  rule's feature clip for a sender none of whose updates a round accepts
  (:mod:`node.fl.witness` computes them from the updates' bodies).
* ``standing``: sender -> (height, excess) of its last accepted updates: how far each one's score,
  as a final block recorded it, sat above its round's lower quartile
  (:func:`learning.standing.standing_after`); what scales each sender's weight under the default
  rule.

It is stored as one application record, rewritten with every block; its size is bounded by the
window and by the senders of the last ``HOLD_HORIZON`` (and :data:`learning.standing.HORIZON`)
heights, never by the chain's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gossip.codec import DecodeError, pack, unpack

BaseKey = tuple[str, int]
"""(sender, base height): one update per sender per base."""


@dataclass
class Window:
    recent: dict[int, bytes] = field(default_factory=dict)
    claims: dict[BaseKey, bytes] = field(default_factory=dict)
    punished: set[BaseKey] = field(default_factory=set)
    held: dict[str, int] = field(default_factory=dict)
    witness: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    standing: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    def base_problem(self, base_height: int, base_hash: bytes, model_height: int, max_staleness: int) -> str | None:
        """Why an update on this base cannot be aggregated now (None if it can)."""
        if base_height > model_height:
            return "unknown_base"
        if base_height < model_height - max_staleness:
            return "stale_base"
        if self.recent.get(base_height) != base_hash:
            return "unknown_base"
        return None

    def advance(self, height: int, new_hash: bytes, max_staleness: int, claims: dict[BaseKey, bytes],
                punished: set[BaseKey]) -> None:
        """Record final block ``height``, then forget what fell out of the window."""
        self.recent[height] = new_hash
        self.claims.update(claims)
        self.punished |= punished
        oldest = height - max_staleness
        self.recent = {h: v for h, v in self.recent.items() if h >= oldest}
        self.claims = {k: v for k, v in self.claims.items() if k[1] >= oldest}
        self.punished = {k for k in self.punished if k[1] >= oldest}

    def encode(self) -> bytes:
        return pack([sorted([h, v] for h, v in self.recent.items()),
                     sorted([s, h, uid] for (s, h), uid in self.claims.items()),
                     sorted([s, h] for s, h in self.punished), sorted([s, h] for s, h in self.held.items()),
                     sorted([s, h, uid] for s, (h, uid) in self.witness.items()),
                     sorted([s, [list(e) for e in v]] for s, v in self.standing.items())])

    @classmethod
    def decode(cls, data: bytes) -> Window:
        """The stored record; one written before holds existed (three fields) holds nobody, one
        written before witnesses (four fields) witnesses nobody, one written before standing (five
        fields) gives everybody full standing.

        Such a node starts without the holds, witnesses or scores its peers derived, so until those
        lapse (:data:`learning.round.HOLD_HORIZON`, :data:`learning.round.WITNESS_HORIZON` and
        :data:`learning.standing.HORIZON` heights at most) it may disagree with a proposal that
        tests a held or witnessed sender or weighs one by its standing; it still applies every final
        block, and refusing to start would cost more (``docs/decisions.md``)."""
        try:
            fields = unpack(data, 1 << 24)
            if not isinstance(fields, list) or not 3 <= len(fields) <= 6:
                raise ValueError("expected three to six fields")
            recent, claims, punished, held, witness, standing = [*fields, [], [], []][:6]
            return cls({int(h): bytes(v) for h, v in recent},
                       {(str(s), int(h)): bytes(uid) for s, h, uid in claims},
                       {(str(s), int(h)) for s, h in punished}, {str(s): int(h) for s, h in held},
                       {str(s): (int(h), bytes(uid)) for s, h, uid in witness},
                       {str(s): tuple((int(h), _score(v)) for h, v in entries) for s, entries in standing})
        except (DecodeError, ValueError, TypeError) as exc:
            raise DecodeError(f"FL window record is corrupt: {exc}") from exc


def _score(value: object) -> float:
    """A recorded score: a float, as a final block records it."""
    if not isinstance(value, float):
        raise TypeError(f"a standing score must be a float, got {value!r}")
    return value
