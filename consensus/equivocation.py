"""``Evidence``: proof that a delegate signed two conflicting statements in one height.

Evidence is self-authenticating (both statements carry the offender's signature), so any node may
submit it and every node can check it alone; :mod:`consensus.evidence` pools it and
:mod:`consensus.state` punishes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from consensus.header import SignedHeader
from consensus.messages import Proposal, Vote
from consensus.wireshape import expect
from gossip.codec import DecodeError, pack
from gossip.crypto import sha256


def _same_slot(a: SignedHeader, b: SignedHeader) -> str | None:
    ha, hb = a.header, b.header
    if ha.producer != hb.producer or ha.height != hb.height or ha.slot != hb.slot:
        return "headers are not by one producer at one height and slot"
    return "headers are identical" if ha.hash == hb.hash else None


def _same_proposal_round(a: Proposal, b: Proposal) -> str | None:
    if a.proposer != b.proposer or a.height != b.height or a.round != b.round:
        return "proposals are not by one proposer at one height and round"
    return "proposals are identical" if a.signed_bytes() == b.signed_bytes() else None


def _same_vote_round(a: Vote, b: Vote, kind: str) -> str | None:
    if a.kind != kind or b.kind != kind:
        return f"{kind} evidence must be two {kind}s"
    if a.voter != b.voter or a.height != b.height or a.round != b.round:
        return f"{kind}s are not by one voter at one height and round"
    return f"{kind}s are for the same block" if a.block_hash == b.block_hash else None


@dataclass(frozen=True)
class Evidence:
    """Two conflicting signed statements by one delegate in one height (an equivocation).

    ``double_block``: two signed headers for one height and slot; ``double_proposal``: two
    proposals for one height and round; ``double_prevote`` / ``double_precommit``: two votes of
    that kind for different blocks (nil included) in one height and round.
    """

    kind: str
    first: Any  # SignedHeader | Proposal | Vote
    second: Any

    @property
    def offender(self) -> str:
        if self.kind == "double_block":
            return self.first.header.producer
        return self.first.proposer if self.kind == "double_proposal" else self.first.voter

    @property
    def height(self) -> int:
        return self.first.header.height if self.kind == "double_block" else self.first.height

    def _chain_ids(self) -> tuple[str, str]:
        if self.kind == "double_block":
            return self.first.header.chain_id, self.second.header.chain_id
        return self.first.chain_id, self.second.chain_id

    def check(self, chain_id: str) -> str | None:
        """None if this is genuine evidence on ``chain_id``, else the reason it is not.

        Shape checks come first; the two signatures are verified last.
        """
        a, b = self.first, self.second
        if any(c != chain_id for c in self._chain_ids()):
            return "evidence from another chain"
        if self.kind == "double_block":
            reason = _same_slot(a, b)
        elif self.kind == "double_proposal":
            reason = _same_proposal_round(a, b)
        else:
            reason = _same_vote_round(a, b, self.kind.removeprefix("double_"))
        if reason is not None:
            return reason
        if not (a.verify_signature() and b.verify_signature()):
            return "evidence signature invalid"
        return None

    def to_wire(self) -> list:
        return [self.kind, self.first.to_wire(), self.second.to_wire()]

    @classmethod
    def from_wire(cls, obj: Any) -> "Evidence":
        expect(isinstance(obj, list) and len(obj) == 3, "evidence must be a 3-element array")
        kind, a, b = obj
        if kind == "double_block":
            return cls(kind, SignedHeader.from_wire(a), SignedHeader.from_wire(b))
        if kind == "double_proposal":
            return cls(kind, Proposal.from_wire(a), Proposal.from_wire(b))
        if kind in ("double_prevote", "double_precommit"):
            first, second = Vote.from_wire(a), Vote.from_wire(b)
            expect(first.kind == second.kind == kind.removeprefix("double_"), f"{kind} must hold two such votes")
            return cls(kind, first, second)
        raise DecodeError(f"unknown evidence kind {kind!r}")

    @cached_property
    def hash(self) -> bytes:
        """Identity of the offence: the same two statements in either order are one offence."""
        parts = sorted([pack(self.first.to_wire()), pack(self.second.to_wire())])
        return sha256(pack([self.kind, *parts]))
