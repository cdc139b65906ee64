"""The application interface the consensus engine drives (as CometBFT drives an ABCI app).

The engine orders, signs, validates, finalizes and persists blocks; the application decides what
a block's *payload* is. It builds the payload when this node proposes, verifies payloads others
propose (a delegate only votes for a block whose payload its application accepts), and applies a
final block's payload to its own state, returning the app hash and any stake changes (rewards and
penalties) the chain state must apply in the same SQLite transaction as the block.

:class:`CounterApp` is the small built-in application used when no other is configured: its
payload is a hash chain, enough to exercise every path of the interface.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gossip.codec import DecodeError, pack, unpack
from gossip.crypto import sha256

AppWrites = list[tuple[bytes, bytes | None]]
"""Key-value writes of the application for one block: ``(key, value)`` puts, ``(key, None)``
deletes. The store commits them in the block's own transaction, so they never disagree with it."""


@dataclass(frozen=True)
class BlockContext:
    """What the application may know about the block being built, verified or applied.

    ``state`` is the chain state as of the parent block; the application must treat it as
    read-only (accounts, stakes, trust, members, delegates).

    ``attempt`` is how many slots of this height already passed without a final block
    (``slot - parent_slot - 1``): chain data, so every verifier computes the same number, and an
    application may accept a fallback payload (e.g. skipping a round its delegates cannot agree
    on) only from the second attempt on. ``retry`` is a hint to the proposer alone: the engine saw
    a proposal for this height in an earlier slot, and the height is still open. It is never part
    of verification (verifiers cannot know what the proposer saw).
    """

    height: int
    slot: int
    producer: str
    parent_hash: bytes
    timestamp_ms: int
    state: Any
    signed_header: Any = None  # SignedHeader of a proposal being verified (evidence of a bad payload)
    attempt: int = 0  # slots of this height that passed before this block's slot (chain data: all agree)
    retry: bool = False  # proposer only: a proposal of this height was seen and the height is still open


@dataclass(frozen=True)
class PayloadVerdict:
    ok: bool
    reason: str = ""


@dataclass
class BlockOutcome:
    """Result of applying a final block's payload."""

    app_hash: bytes
    stake_changes: list[tuple[str, int, str]] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    writes: AppWrites = field(default_factory=list)


class Application(Protocol):
    def init_chain(self, app_state: dict, records: Mapping[bytes, bytes]) -> None:
        """Start from genesis ``app_state``, or resume from its stored ``records`` if non-empty.

        ``records`` is a read-only view of the application's key-value records as of the last
        final block (each lookup is one read; nothing is loaded up front).
        """

    def app_hash(self) -> bytes:
        """Hash of the application state after the last final block."""

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        """Build the payload of a block this node proposes."""

    async def verify_payload(self, ctx: BlockContext, payload: bytes) -> PayloadVerdict:
        """Check a payload another delegate proposed, without changing state."""

    def finalize_block(self, ctx: BlockContext, payload: bytes) -> BlockOutcome:
        """Apply the payload of a final block (already verified) and return its outcome."""


class CounterApp:
    """Built-in application: each block's payload is ``[height, digest]`` where ``digest`` chains.

    ``digest(h) = sha256(digest(h-1) || height)``. It has no value beyond proving that the engine
    asks, verifies and applies application payloads correctly and persists them atomically.
    """

    KEY = b"counter/digest"

    def __init__(self) -> None:
        self._digest = b""

    def init_chain(self, app_state: dict, records: Mapping[bytes, bytes]) -> None:
        seed = str(app_state.get("seed", "fedchain")).encode()
        self._digest = records.get(self.KEY) or sha256(seed)

    def app_hash(self) -> bytes:
        return self._digest

    def _next(self, height: int) -> bytes:
        return sha256(self._digest + height.to_bytes(8, "big"))

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        return pack([ctx.height, self._next(ctx.height)])

    async def verify_payload(self, ctx: BlockContext, payload: bytes) -> PayloadVerdict:
        try:
            obj = unpack(payload, max_size=1024)
        except DecodeError as exc:
            return PayloadVerdict(False, f"counter payload: {exc}")
        if obj != [ctx.height, self._next(ctx.height)]:
            return PayloadVerdict(False, "counter payload does not extend the digest chain")
        return PayloadVerdict(True)

    def finalize_block(self, ctx: BlockContext, payload: bytes) -> BlockOutcome:
        self._digest = self._next(ctx.height)
        return BlockOutcome(app_hash=self._digest, writes=[(self.KEY, self._digest)])
