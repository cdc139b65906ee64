"""Signed envelopes: the unit gossip disseminates, and the verdict a topic validator returns.

An envelope is signed once by its publisher and forwarded unchanged, so any node can check it
end to end whichever path it took. Its id is the hash of the bytes the signature covers (not of
the signature: Ed25519 signatures are deterministic, but ids must not depend on that).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from gossip.codec import DecodeError
from gossip.crypto import SIGNATURE_SIZE, KeyPair, is_node_id, sha256, signing_bytes, verify

GOSSIP_DOMAIN = "fedchain/gossip"
ANNOUNCE_DOMAIN = "fedchain/gossip-announce"
"""Domain of an announcement's signature: never confusable with a pushed message's."""
MAX_TOPIC_LENGTH = 128
MAX_SEQ = (1 << 63) - 1
SEQ_PER_MS = 1000
"""A seq is ``ms_since_epoch * SEQ_PER_MS + counter``: its publication time is readable from it."""


class Verdict(enum.Enum):
    """A topic validator's decision on one envelope.

    ACCEPT: deliver and forward. IGNORE: drop quietly (e.g. stale for the layer above).
    REJECT: drop, count, and lower the score of the peer that forwarded it.
    """

    ACCEPT = "accept"
    IGNORE = "ignore"
    REJECT = "reject"


@dataclass(frozen=True)
class Envelope:
    """``(topic, sender, seq, body, signature)``; the signature is the original publisher's."""

    topic: str
    sender: str
    seq: int
    body: bytes
    signature: bytes

    def signing_bytes(self, chain_id: str) -> bytes:
        """The bytes the signature covers; includes the chain id so no envelope crosses chains."""
        return signing_bytes(GOSSIP_DOMAIN, chain_id, [self.topic, self.sender, self.seq, self.body])

    def msg_id(self, chain_id: str) -> bytes:
        """The message id: SHA-256 of :meth:`signing_bytes`."""
        return sha256(self.signing_bytes(chain_id))

    def verify(self, chain_id: str) -> bool:
        """True when the signature is the sender's over this envelope on this chain."""
        return verify(self.sender, self.signing_bytes(chain_id), self.signature)

    @property
    def timestamp_ms(self) -> int:
        """Publication time in milliseconds since the epoch, as encoded in ``seq``."""
        return self.seq // SEQ_PER_MS

    @classmethod
    def create(cls, keypair: KeyPair, chain_id: str, topic: str, seq: int, body: bytes) -> Envelope:
        """Sign a new envelope as ``keypair``."""
        check_topic(topic)
        if not isinstance(body, bytes):
            raise TypeError("envelope body must be bytes")
        if not (isinstance(seq, int) and 0 <= seq <= MAX_SEQ):
            raise ValueError("seq must be an int in [0, 2**63)")
        unsigned = cls(topic, keypair.node_id, seq, body, b"")
        return cls(topic, keypair.node_id, seq, body, keypair.sign(unsigned.signing_bytes(chain_id)))

    def to_wire(self) -> list:
        """Fields in wire order: ``[topic, sender, seq, body, signature]``."""
        return [self.topic, self.sender, self.seq, self.body, self.signature]

    @classmethod
    def from_wire(cls, fields: object) -> Envelope:
        """Inverse of :meth:`to_wire`; checks every field's type and bounds, raises DecodeError."""
        if not (isinstance(fields, list) and len(fields) == 5):
            raise DecodeError("envelope must be [topic, sender, seq, body, signature]")
        topic, sender, seq, body, signature = fields
        if not (isinstance(topic, str) and 0 < len(topic) <= MAX_TOPIC_LENGTH):
            raise DecodeError("envelope topic must be a non-empty short string")
        if not is_node_id(sender):
            raise DecodeError("envelope sender must be a node id")
        if not (type(seq) is int and 0 <= seq <= MAX_SEQ):
            raise DecodeError("envelope seq must be an int in [0, 2**63)")
        if not isinstance(body, bytes):
            raise DecodeError("envelope body must be bin")
        if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
            raise DecodeError("envelope signature must be 64 bytes")
        return cls(topic, sender, seq, body, signature)


@dataclass(frozen=True)
class Announcement:
    """A signed header ``(topic, sender, seq, body_id, size)`` for a body peers pull by id.

    Large bodies (model updates) are announced rather than pushed, so that each node receives
    the body once, from one announcer, instead of once per mesh neighbour. ``body_id`` is the
    SHA-256 of the body, so whoever serves it cannot substitute another; the signature is the
    publisher's and is forwarded unchanged, like an envelope's.
    """

    topic: str
    sender: str
    seq: int
    body_id: bytes
    size: int
    signature: bytes

    def signing_bytes(self, chain_id: str) -> bytes:
        return signing_bytes(ANNOUNCE_DOMAIN, chain_id,
                             [self.topic, self.sender, self.seq, self.body_id, self.size])

    def msg_id(self, chain_id: str) -> bytes:
        return sha256(self.signing_bytes(chain_id))

    @classmethod
    def create(cls, keypair: KeyPair, chain_id: str, topic: str, seq: int, body: bytes) -> Announcement:
        check_topic(topic)
        unsigned = cls(topic, keypair.node_id, seq, sha256(body), len(body), b"")
        return cls(topic, keypair.node_id, seq, unsigned.body_id, unsigned.size,
                   keypair.sign(unsigned.signing_bytes(chain_id)))

    def envelope(self, body: bytes) -> Envelope:
        """The envelope a subscriber receives once the body is here. Its ``signature`` is the
        announcement's (over ``body_id = sha256(body)``), not one over ``body`` itself."""
        return Envelope(self.topic, self.sender, self.seq, body, self.signature)

    def to_wire(self) -> list:
        return [self.topic, self.sender, self.seq, self.body_id, self.size, self.signature]

    @classmethod
    def from_wire(cls, fields: object) -> Announcement:
        if not (isinstance(fields, list) and len(fields) == 6):
            raise DecodeError("announcement must be [topic, sender, seq, body_id, size, signature]")
        topic, sender, seq, body_id, size, signature = fields
        Envelope.from_wire([topic, sender, seq, b"", signature])  # the shared field checks
        if not (isinstance(body_id, bytes) and len(body_id) == 32):
            raise DecodeError("announcement body_id must be 32 bytes")
        if not (type(size) is int and 0 < size <= MAX_SEQ):
            raise DecodeError("announcement size must be a positive int")
        return cls(topic, sender, seq, body_id, size, signature)


def check_topic(topic: object) -> None:
    """Raise :class:`ValueError` for a topic name that could not travel on the wire."""
    if not (isinstance(topic, str) and 0 < len(topic) <= MAX_TOPIC_LENGTH):
        raise ValueError(f"topic must be a non-empty string of at most {MAX_TOPIC_LENGTH} chars")


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch (seqs are comparable across nodes)."""
    return time.time_ns() // 1_000_000


class SeqClock:
    """Issues strictly increasing, time-based sequence numbers for one publisher.

    Because a seq starts from the current wall-clock millisecond, a node that restarts never
    reuses one (its old seqs are all in the past), with no state on disk. Up to
    ``SEQ_PER_MS`` messages fit in one millisecond; beyond that the counter borrows from the
    next millisecond, which keeps seqs unique and drifts only microscopically ahead of time.
    """

    def __init__(self, wall_ms: Callable[[], int] = now_ms) -> None:
        self._wall_ms = wall_ms
        self._last = -1

    def next(self) -> int:
        seq = max(self._wall_ms() * SEQ_PER_MS, self._last + 1)
        self._last = seq
        return seq


def is_fresh(seq: int, window_s: float, now: int | None = None) -> bool:
    """True when the publication time in ``seq`` is within ``window_s`` of now (either side)."""
    current = now_ms() if now is None else now
    return abs(current - seq // SEQ_PER_MS) <= window_s * 1000
