"""The block header a producer signs, and the hashes it commits to.

A header is what consensus agrees on: its hash is the block hash, and it commits to the block's
body through Merkle roots (:func:`merkle_root`) and plain hashes. ``SignedHeader`` is a header
with its producer's signature and nothing else, which is all that evidence of a double block
needs to carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from consensus.wireshape import expect, is_hash, is_uint
from gossip.crypto import is_node_id, sha256, signing_bytes, verify

EMPTY_HASH = b"\x00" * 32


def merkle_root(items: list[bytes]) -> bytes:
    """Binary SHA-256 Merkle root of ``items`` (RFC 6962 style leaf/node prefixes)."""
    if not items:
        return EMPTY_HASH
    level = [sha256(b"\x00" + it) for it in items]
    while len(level) > 1:
        nxt = [sha256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@dataclass(frozen=True)
class BlockHeader:
    """What a producer signs. ``state_root``/``app_hash`` are the results of applying the parent."""

    chain_id: str
    height: int
    slot: int
    timestamp_ms: int
    parent_hash: bytes
    producer: str
    txs_hash: bytes
    payload_hash: bytes
    evidence_hash: bytes
    last_commit_hash: bytes
    state_root: bytes
    app_hash: bytes

    def fields(self) -> list:
        return [self.height, self.slot, self.timestamp_ms, self.parent_hash, self.producer, self.txs_hash,
                self.payload_hash, self.evidence_hash, self.last_commit_hash, self.state_root, self.app_hash]

    def signed_bytes(self) -> bytes:
        return signing_bytes("fedchain/block", self.chain_id, self.fields())

    def to_wire(self) -> list:
        return [self.chain_id, *self.fields()]

    @classmethod
    def from_wire(cls, obj: Any) -> "BlockHeader":
        expect(isinstance(obj, list) and len(obj) == 12, "header must be a 12-element array")
        chain_id, height, slot, ts, parent, producer, txs_h, payload_h, ev_h, lc_h, state_root, app_hash = obj
        expect(isinstance(chain_id, str), "header chain_id must be a string")
        expect(all(is_uint(v) for v in (height, slot, ts)), "header height/slot/timestamp must be uints")
        expect(is_node_id(producer), "header producer must be a node id")
        expect(all(is_hash(h) for h in (parent, txs_h, payload_h, ev_h, lc_h, state_root)),
                "header hashes must be 32-byte bin")
        expect(isinstance(app_hash, bytes) and len(app_hash) <= 64, "header app_hash must be bin <= 64")
        return cls(chain_id, height, slot, ts, parent, producer, txs_h, payload_h, ev_h, lc_h, state_root, app_hash)

    @cached_property
    def hash(self) -> bytes:
        """The block hash: SHA-256 of the header's signed bytes (signature excluded)."""
        return sha256(self.signed_bytes())


@dataclass(frozen=True)
class SignedHeader:
    header: BlockHeader
    signature: bytes

    def verify_signature(self) -> bool:
        return verify(self.header.producer, self.header.signed_bytes(), self.signature)

    def to_wire(self) -> list:
        return [self.header.to_wire(), self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> "SignedHeader":
        expect(isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], bytes), "bad signed header")
        return cls(BlockHeader.from_wire(obj[0]), obj[1])
