"""``Block``: a signed header with the body it commits to (transactions, payload, evidence, last commit).

The body is checked against the header's hashes by :meth:`Block.body_hashes_ok`; every other rule
a block must satisfy is in :mod:`consensus.validation`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consensus.equivocation import Evidence
from consensus.header import EMPTY_HASH, BlockHeader, SignedHeader, merkle_root
from consensus.messages import Commit, commit_json
from consensus.tx import Tx
from consensus.wireshape import expect
from gossip.codec import pack
from gossip.crypto import sha256


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    signature: bytes
    txs: tuple[Tx, ...] = ()
    payload: bytes = b""
    evidence: tuple[Evidence, ...] = ()
    last_commit: Commit | None = None
    _wire_cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height

    def signed_header(self) -> SignedHeader:
        return SignedHeader(self.header, self.signature)

    def verify_signature(self) -> bool:
        return self.signed_header().verify_signature()

    def body_hashes_ok(self) -> str | None:
        """None if the header's body hashes match the body, else which one does not."""
        h = self.header
        if h.txs_hash != merkle_root([t.hash for t in self.txs]):
            return "txs_hash does not match transactions"
        if h.payload_hash != sha256(self.payload):
            return "payload_hash does not match payload"
        if h.evidence_hash != merkle_root([e.hash for e in self.evidence]):
            return "evidence_hash does not match evidence"
        lc = self.last_commit.hash if self.last_commit is not None else EMPTY_HASH
        if h.last_commit_hash != lc:
            return "last_commit_hash does not match last commit"
        return None

    def to_wire(self) -> list:
        return [
            self.header.to_wire(),
            self.signature,
            [t.to_wire() for t in self.txs],
            self.payload,
            [e.to_wire() for e in self.evidence],
            self.last_commit.to_wire() if self.last_commit is not None else None,
        ]

    def encode(self) -> bytes:
        if "bytes" not in self._wire_cache:
            self._wire_cache["bytes"] = pack(self.to_wire())
        return self._wire_cache["bytes"]

    @classmethod
    def from_wire(cls, obj: Any) -> "Block":
        expect(isinstance(obj, list) and len(obj) == 6, "block must be a 6-element array")
        header, sig, txs, payload, evidence, last_commit = obj
        expect(isinstance(sig, bytes), "block signature must be bin")
        expect(isinstance(txs, list) and isinstance(evidence, list), "block txs/evidence must be arrays")
        expect(isinstance(payload, bytes), "block payload must be bin")
        return cls(
            BlockHeader.from_wire(header),
            sig,
            tuple(Tx.from_wire(t) for t in txs),
            payload,
            tuple(Evidence.from_wire(e) for e in evidence),
            Commit.from_wire(last_commit) if last_commit is not None else None,
        )

    def to_json(self) -> dict:
        h = self.header
        return {
            "hash": self.hash.hex(),
            "height": h.height,
            "slot": h.slot,
            "time_ms": h.timestamp_ms,
            "parent_hash": h.parent_hash.hex(),
            "producer": h.producer,
            "state_root": h.state_root.hex(),
            "app_hash": h.app_hash.hex(),
            "payload_hash": h.payload_hash.hex(),
            "payload_size": len(self.payload),
            "txs": [t.to_json() for t in self.txs],
            "evidence": [{"kind": e.kind, "offender": e.offender, "height": e.height} for e in self.evidence],
            "last_commit": commit_json(self.last_commit),
            "signature": self.signature.hex(),
        }
