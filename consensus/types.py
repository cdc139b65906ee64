"""Wire types of the chain: transactions, block headers, blocks, votes, commits and evidence.

Every type is a fixed-order msgpack array on the wire (``to_wire``/``from_wire``), signed over
:func:`gossip.crypto.signing_bytes` with its own domain tag and the chain id. ``from_wire`` checks
shape and field types only; whether a signature or a value is acceptable is the caller's
business (``verify_signature`` here, semantic rules in ``state.py`` and ``engine.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from gossip.codec import DecodeError, pack
from gossip.crypto import KeyPair, is_node_id, sha256, signing_bytes, verify

TX_KINDS = ("transfer", "stake", "unstake", "vote", "register")
EMPTY_HASH = b"\x00" * 32


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise DecodeError(what)


def _is_hash(v: Any) -> bool:
    return isinstance(v, bytes) and len(v) == 32


def _is_uint(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


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
        _expect(isinstance(obj, list) and len(obj) == 6, "tx must be a 6-element array")
        kind, chain_id, sender, nonce, args, sig = obj
        _expect(kind in TX_KINDS, f"unknown tx kind {kind!r}")
        _expect(isinstance(chain_id, str), "tx chain_id must be a string")
        _expect(is_node_id(sender), "tx sender must be a node id")
        _expect(_is_uint(nonce), "tx nonce must be a non-negative int")
        _expect(isinstance(args, list), "tx args must be an array")
        _expect(isinstance(sig, bytes), "tx signature must be bin")
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
        _expect(isinstance(obj, list) and len(obj) == 12, "header must be a 12-element array")
        chain_id, height, slot, ts, parent, producer, txs_h, payload_h, ev_h, lc_h, state_root, app_hash = obj
        _expect(isinstance(chain_id, str), "header chain_id must be a string")
        _expect(all(_is_uint(v) for v in (height, slot, ts)), "header height/slot/timestamp must be uints")
        _expect(is_node_id(producer), "header producer must be a node id")
        _expect(all(_is_hash(h) for h in (parent, txs_h, payload_h, ev_h, lc_h, state_root)),
                "header hashes must be 32-byte bin")
        _expect(isinstance(app_hash, bytes) and len(app_hash) <= 64, "header app_hash must be bin <= 64")
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
        _expect(isinstance(obj, list) and len(obj) == 2 and isinstance(obj[1], bytes), "bad signed header")
        return cls(BlockHeader.from_wire(obj[0]), obj[1])


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

    @property
    def is_nil(self) -> bool:
        return self.block_hash == EMPTY_HASH

    def to_wire(self) -> list:
        return [self.kind, self.chain_id, self.height, self.round, self.block_hash, self.voter, self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> "Vote":
        _expect(isinstance(obj, list) and len(obj) == 7, "vote must be a 7-element array")
        kind, chain_id, height, rnd, block_hash, voter, sig = obj
        _expect(kind in VOTE_KINDS, f"unknown vote kind {kind!r}")
        _expect(isinstance(chain_id, str), "vote chain_id must be a string")
        _expect(_is_uint(height) and _is_uint(rnd), "vote height/round must be uints")
        _expect(_is_hash(block_hash), "vote block_hash must be 32-byte bin")
        _expect(is_node_id(voter), "vote voter must be a node id")
        _expect(isinstance(sig, bytes), "vote signature must be bin")
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
        _expect(isinstance(obj, list) and len(obj) == 7, "proposal must be a 7-element array")
        chain_id, height, rnd, block_hash, pol_round, proposer, sig = obj
        _expect(isinstance(chain_id, str), "proposal chain_id must be a string")
        _expect(_is_uint(height) and _is_uint(rnd), "proposal height/round must be uints")
        _expect(isinstance(pol_round, int) and not isinstance(pol_round, bool) and -1 <= pol_round < rnd,
                "proposal pol_round must be -1 or an earlier round")
        _expect(_is_hash(block_hash), "proposal block_hash must be 32-byte bin")
        _expect(is_node_id(proposer), "proposal proposer must be a node id")
        _expect(isinstance(sig, bytes), "proposal signature must be bin")
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
        _expect(isinstance(obj, list) and len(obj) == 4, "commit must be a 4-element array")
        height, rnd, block_hash, sigs = obj
        _expect(_is_uint(height) and _is_uint(rnd) and _is_hash(block_hash), "bad commit height, round or hash")
        _expect(isinstance(sigs, list) and len(sigs) <= 1024, "commit signatures must be an array")
        pairs = []
        for item in sigs:
            _expect(isinstance(item, list) and len(item) == 2 and is_node_id(item[0]) and isinstance(item[1], bytes),
                    "commit signature must be [voter, sig]")
            pairs.append((item[0], item[1]))
        _expect([p[0] for p in pairs] == sorted({p[0] for p in pairs}), "commit voters must be sorted and distinct")
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


EVIDENCE_KINDS = ("double_block", "double_proposal", "double_prevote", "double_precommit")


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
        _expect(isinstance(obj, list) and len(obj) == 3, "evidence must be a 3-element array")
        kind, a, b = obj
        if kind == "double_block":
            return cls(kind, SignedHeader.from_wire(a), SignedHeader.from_wire(b))
        if kind == "double_proposal":
            return cls(kind, Proposal.from_wire(a), Proposal.from_wire(b))
        if kind in ("double_prevote", "double_precommit"):
            first, second = Vote.from_wire(a), Vote.from_wire(b)
            _expect(first.kind == second.kind == kind.removeprefix("double_"), f"{kind} must hold two such votes")
            return cls(kind, first, second)
        raise DecodeError(f"unknown evidence kind {kind!r}")

    @cached_property
    def hash(self) -> bytes:
        """Identity of the offence: the same two statements in either order are one offence."""
        parts = sorted([pack(self.first.to_wire()), pack(self.second.to_wire())])
        return sha256(pack([self.kind, *parts]))


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
        _expect(isinstance(obj, list) and len(obj) == 6, "block must be a 6-element array")
        header, sig, txs, payload, evidence, last_commit = obj
        _expect(isinstance(sig, bytes), "block signature must be bin")
        _expect(isinstance(txs, list) and isinstance(evidence, list), "block txs/evidence must be arrays")
        _expect(isinstance(payload, bytes), "block payload must be bin")
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


def commit_json(commit: Commit | None) -> dict | None:
    if commit is None:
        return None
    return {"height": commit.height, "round": commit.round, "block_hash": commit.block_hash.hex(),
            "signatures": [{"voter": v, "signature": s.hex()} for v, s in commit.signatures]}
