"""``Tx``: a native transaction of the chain, its wire form and its signature.

Transactions are what accounts sign on their own; their semantic rules are in
:mod:`consensus.txrules` (shape) and :mod:`consensus.state` (effect). ``from_wire`` checks shape
and field types only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from consensus.wireshape import expect, is_uint
from gossip.codec import pack
from gossip.crypto import KeyPair, is_node_id, sha256, signing_bytes, verify

TX_KINDS = ("transfer", "stake", "unstake", "vote", "register")


@dataclass(frozen=True)
class Tx:
    """A native transaction. ``nonce`` must be the sender's account nonce + 1."""

    kind: str
    chain_id: str
    sender: str
    nonce: int
    args: list
    signature: bytes = b""

    def signed_bytes(self) -> bytes:
        return signing_bytes("fedchain/tx", self.chain_id, [self.kind, self.sender, self.nonce, self.args])

    def signed(self, keypair: KeyPair) -> "Tx":
        if keypair.node_id != self.sender:
            raise ValueError("a transaction is signed by its sender")
        return replace(self, signature=keypair.sign(self.signed_bytes()))

    def verify_signature(self) -> bool:
        return verify(self.sender, self.signed_bytes(), self.signature)

    def to_wire(self) -> list:
        return [self.kind, self.chain_id, self.sender, self.nonce, self.args, self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> "Tx":
        expect(isinstance(obj, list) and len(obj) == 6, "tx must be a 6-element array")
        kind, chain_id, sender, nonce, args, sig = obj
        expect(kind in TX_KINDS, f"unknown tx kind {kind!r}")
        expect(isinstance(chain_id, str), "tx chain_id must be a string")
        expect(is_node_id(sender), "tx sender must be a node id")
        expect(is_uint(nonce), "tx nonce must be a non-negative int")
        expect(isinstance(args, list), "tx args must be an array")
        expect(isinstance(sig, bytes), "tx signature must be bin")
        return cls(kind, chain_id, sender, nonce, args, sig)

    @cached_property
    def encoded(self) -> bytes:
        return pack(self.to_wire())

    @cached_property
    def hash(self) -> bytes:
        return sha256(self.encoded)

    def to_json(self) -> dict:
        return {"hash": self.hash.hex(), "kind": self.kind, "sender": self.sender, "nonce": self.nonce,
                "args": self.args}
