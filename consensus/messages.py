"""The signed messages of a consensus round: proposals, votes, and the commits votes add up to.

Each is signed over its own domain (``fedchain/proposal``, ``fedchain/prevote``,
``fedchain/precommit``) with the chain id; a commit is the precommits of a quorum for one block,
carried in the next block. ``from_wire`` checks shape and field types only; tallying is
:mod:`consensus.votes`' business.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from consensus.wireshape import expect, is_hash, is_uint
from gossip.codec import pack
from gossip.crypto import KeyPair, is_node_id, sha256, signing_bytes, verify

VOTE_KINDS = ("prevote", "precommit")


@dataclass(frozen=True)
class Vote:
    """A prevote or precommit for one block (or nil) in one round of one height.

    Rounds are slots: the round of a vote is the slot in which it was cast. ``block_hash`` is
    ``EMPTY_HASH`` for a nil vote. Both kinds sign (height, round, block hash), so a voter that
    signs two different votes of one kind in one round has equivocated, whatever the values.
    """

    kind: str  # "prevote" | "precommit"
    chain_id: str
    height: int
    round: int
    block_hash: bytes
    voter: str
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return signing_bytes(f"fedchain/{self.kind}", self.chain_id,
                             [self.height, self.round, self.block_hash, self.voter])

    def signed(self, keypair: KeyPair) -> "Vote":
        return replace(self, signature=keypair.sign(self.signed_bytes()))

    def verify_signature(self) -> bool:
        return verify(self.voter, self.signed_bytes(), self.signature)

    def to_wire(self) -> list:
        return [self.kind, self.chain_id, self.height, self.round, self.block_hash, self.voter, self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> "Vote":
        expect(isinstance(obj, list) and len(obj) == 7, "vote must be a 7-element array")
        kind, chain_id, height, rnd, block_hash, voter, sig = obj
        expect(kind in VOTE_KINDS, f"unknown vote kind {kind!r}")
        expect(isinstance(chain_id, str), "vote chain_id must be a string")
        expect(is_uint(height) and is_uint(rnd), "vote height/round must be uints")
        expect(is_hash(block_hash), "vote block_hash must be 32-byte bin")
        expect(is_node_id(voter), "vote voter must be a node id")
        expect(isinstance(sig, bytes), "vote signature must be bin")
        return cls(kind, chain_id, height, rnd, block_hash, voter, sig)


@dataclass(frozen=True)
class Proposal:
    """The proposer of a round putting a block forward in that round.

    A fresh block is proposed in the slot it was made for (``pol_round`` = -1). A block that
    already gathered a quorum of prevotes (a *polka*) in an earlier round ``pol_round`` may be
    proposed again by a later round's proposer, who signs this statement; the block keeps its
    own header, producer and signature. Tendermint's proposal message, with rounds as slots.
    """

    chain_id: str
    height: int
    round: int
    block_hash: bytes
    pol_round: int
    proposer: str
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return signing_bytes("fedchain/proposal", self.chain_id,
                             [self.height, self.round, self.block_hash, self.pol_round, self.proposer])

    def signed(self, keypair: KeyPair) -> "Proposal":
        return replace(self, signature=keypair.sign(self.signed_bytes()))

    def verify_signature(self) -> bool:
        return verify(self.proposer, self.signed_bytes(), self.signature)

    def to_wire(self) -> list:
        return [self.chain_id, self.height, self.round, self.block_hash, self.pol_round, self.proposer,
                self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> "Proposal":
        expect(isinstance(obj, list) and len(obj) == 7, "proposal must be a 7-element array")
        chain_id, height, rnd, block_hash, pol_round, proposer, sig = obj
        expect(isinstance(chain_id, str), "proposal chain_id must be a string")
        expect(is_uint(height) and is_uint(rnd), "proposal height/round must be uints")
        expect(isinstance(pol_round, int) and not isinstance(pol_round, bool) and -1 <= pol_round < rnd,
                "proposal pol_round must be -1 or an earlier round")
        expect(is_hash(block_hash), "proposal block_hash must be 32-byte bin")
        expect(is_node_id(proposer), "proposal proposer must be a node id")
        expect(isinstance(sig, bytes), "proposal signature must be bin")
        return cls(chain_id, height, rnd, block_hash, pol_round, proposer, sig)


@dataclass(frozen=True)
class Commit:
    """A quorum of precommits for one block in one round; carried in the next block."""

    height: int
    round: int
    block_hash: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (voter, signature), sorted by voter

    def to_wire(self) -> list:
        return [self.height, self.round, self.block_hash, [[v, s] for v, s in self.signatures]]

    @classmethod
    def from_wire(cls, obj: Any) -> "Commit":
        expect(isinstance(obj, list) and len(obj) == 4, "commit must be a 4-element array")
        height, rnd, block_hash, sigs = obj
        expect(is_uint(height) and is_uint(rnd) and is_hash(block_hash), "bad commit height, round or hash")
        expect(isinstance(sigs, list) and len(sigs) <= 1024, "commit signatures must be an array")
        pairs = []
        for item in sigs:
            expect(isinstance(item, list) and len(item) == 2 and is_node_id(item[0]) and isinstance(item[1], bytes),
                    "commit signature must be [voter, sig]")
            pairs.append((item[0], item[1]))
        expect([p[0] for p in pairs] == sorted({p[0] for p in pairs}), "commit voters must be sorted and distinct")
        return cls(height, rnd, block_hash, tuple(pairs))

    def votes(self, chain_id: str) -> list[Vote]:
        return [Vote("precommit", chain_id, self.height, self.round, self.block_hash, v, s)
                for v, s in self.signatures]

    def verify(self, chain_id: str, delegates: list[str], quorum: int) -> str | None:
        """Return None if valid for ``delegates`` with at least ``quorum`` signatures, else why not.

        Cheap checks first: who signed and how many, before any signature is verified.
        """
        allowed = set(delegates)
        outsider = next((v for v, _ in self.signatures if v not in allowed), None)
        if outsider is not None:
            return f"commit signed by non-delegate {outsider[:12]}"
        if len(self.signatures) < quorum:
            return f"commit has {len(self.signatures)} signatures, needs {quorum}"
        for vote in self.votes(chain_id):
            if not vote.verify_signature():
                return f"bad commit signature from {vote.voter[:12]}"
        return None

    @cached_property
    def hash(self) -> bytes:
        return sha256(pack(self.to_wire()))


def commit_json(commit: Commit | None) -> dict | None:
    if commit is None:
        return None
    return {"height": commit.height, "round": commit.round, "block_hash": commit.block_hash.hex(),
            "signatures": [{"voter": v, "signature": s.hex()} for v, s in commit.signatures]}
