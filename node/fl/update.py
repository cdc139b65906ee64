"""A node's model update on the wire: what it trained on, how much, and the compressed delta.

``[chain_id, sender, seq, base_hash, base_height, num_samples, loss, sparse, signature]`` with the
signature over everything before it (domain ``fedchain/update``). ``sparse`` is
:func:`learning.compression.to_wire`. ``seq`` is
the sender's time-based sequence number (DESIGN section 1), and the pool admits one update per
sender per base model, which is what stops a replay. The update id is the SHA-256 of the whole
encoded update (Ed25519 signatures are deterministic), so an update is a content-addressed blob.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from gossip.codec import DecodeError, pack
from gossip.crypto import KeyPair, is_node_id, sha256, signing_bytes, verify
from learning.bounds import sparse_norm
from learning.compression import SparseUpdate, densify, from_wire, to_wire


@dataclass(frozen=True)
class ModelUpdate:
    chain_id: str
    sender: str
    seq: int
    base_hash: bytes
    base_height: int
    num_samples: int
    loss: float
    sparse: SparseUpdate
    signature: bytes = b""

    @cached_property
    def _sparse_wire(self) -> list:
        return to_wire(self.sparse)

    def _fields(self) -> list:
        return [self.sender, self.seq, self.base_hash, self.base_height, self.num_samples, float(self.loss),
                self._sparse_wire]

    def signed_bytes(self) -> bytes:
        return signing_bytes("fedchain/update", self.chain_id, self._fields())

    def signed(self, keypair: KeyPair) -> ModelUpdate:
        return replace(self, signature=keypair.sign(self.signed_bytes()))

    def verify_signature(self) -> bool:
        """Whether the sender signed this update. Checked once per object: an update is immutable,
        and a verifier re-checks every update a proposal lists, nearly all of them objects it
        admitted from gossip (signature checked) a moment before, all at the block boundary, when
        every delegate's CPU is busiest. An update decoded again from bytes is checked again."""
        return self._signature_ok

    @cached_property
    def _signature_ok(self) -> bool:
        return verify(self.sender, self.signed_bytes(), self.signature)

    @cached_property
    def norm(self) -> float:
        """L2 norm of the decoded delta, exactly as admission computes it (computed once)."""
        return sparse_norm(self.sparse)

    @property
    def base_key(self) -> tuple[str, int]:
        """(sender, base height): the pool and the chain admit one update per sender per base."""
        return self.sender, self.base_height

    @cached_property
    def id(self) -> bytes:
        return sha256(self.encode())

    def to_wire(self) -> list:
        return [self.chain_id, *self._fields(), self.signature]

    @cached_property
    def _encoded(self) -> bytes:
        return pack(self.to_wire())

    def encode(self) -> bytes:
        """The canonical bytes (computed once: an update is encoded to hash, store and send it)."""
        return self._encoded

    def dense(self) -> np.ndarray:
        return densify(self.sparse)

    @staticmethod
    def seq_of_wire(obj: Any) -> int | None:
        """The ``seq`` of a wire array, the rest unparsed (None if it has none): for an update that
        was fully checked when it was admitted and is read back only for its creation time."""
        seq = obj[2] if isinstance(obj, list) and len(obj) == 9 else None
        return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else None

    @classmethod
    def from_wire(cls, obj: Any, max_dim: int) -> ModelUpdate:
        """Parse an untrusted update; shape, types and the sparse payload are fully checked."""
        if not (isinstance(obj, list) and len(obj) == 9):
            raise DecodeError("update must be a 9-element array")
        chain_id, sender, seq, base_hash, base_height, samples, loss, sparse, sig = obj
        if not isinstance(chain_id, str) or not is_node_id(sender):
            raise DecodeError("update chain id or sender malformed")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (seq, base_height, samples)):
            raise DecodeError("update seq, base height and sample count must be non-negative ints")
        if samples == 0:
            raise DecodeError("update trained on zero samples")
        if not (isinstance(base_hash, bytes) and len(base_hash) == 32):
            raise DecodeError("update base hash must be 32 bytes")
        if not isinstance(loss, (int, float)) or isinstance(loss, bool) or not math.isfinite(loss):
            raise DecodeError("update loss must be a finite number")
        if not isinstance(sig, bytes):
            raise DecodeError("update signature must be bin")
        try:
            parsed = from_wire(sparse, max_dim)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc
        return cls(chain_id, sender, seq, base_hash, base_height, samples, float(loss), parsed, sig)

    def summary(self) -> dict:
        return {"id": self.id.hex(), "sender": self.sender, "seq": self.seq, "base_hash": self.base_hash.hex(),
                "base_height": self.base_height, "num_samples": self.num_samples, "loss": self.loss,
                "k": int(self.sparse.indices.size), "dtype": self.sparse.dtype}
