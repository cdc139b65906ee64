"""Gossip settings and peer-URL handling.

Every number here is a default that a node's config may override. The defaults are sized for a
few dozen IoT devices on a LAN: generous enough that an honest node never trips a limit while
sending model updates, tight enough that one hostile peer cannot exhaust a small device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from gossip.codec import DEFAULT_MAX_MESSAGE

MAX_URL_LENGTH = 256
"""Longest peer URL accepted from config or from peer exchange."""

DEFAULT_PENALTIES: dict[str, float] = {
    "malformed": 10.0,
    "oversized": 20.0,
    "bad_signature": 20.0,
    "rejected": 10.0,
    "rate_limited": 0.25,
}
"""Score cost of one drop, by reason. Reasons not listed cost nothing: a duplicate, a stale
message or an unknown topic can reach an honest peer through no fault of its own (clock skew,
topologies where two paths race, a newer software version with more topics)."""


def normalize_url(url: str) -> str:
    """Canonical form of a peer's base URL (``http://host:port``), or :class:`ValueError`.

    Peers are keyed by URL in the address book, so ``http://127.0.0.1:9000/`` and
    ``HTTP://127.0.0.1:9000`` must be the same entry; and a URL learned from a stranger must not
    smuggle in a path, query or credentials.
    """
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise ValueError(f"peer URL must be a non-empty string of at most {MAX_URL_LENGTH} chars")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"peer URL {url!r} must use http or https")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"peer URL {url!r} has a bad port") from exc
    if not parts.hostname or parts.username or parts.password:
        raise ValueError(f"peer URL {url!r} must name a host and carry no credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"peer URL {url!r} must be a base URL without path or query")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme.lower()}://{host}" + (f":{port}" if port is not None else "")


@dataclass
class GossipConfig:
    """Settings of one node's gossip service. Times are seconds, sizes bytes."""

    chain_id: str
    listen_url: str
    """This node's advertised base URL; sent in the handshake and never dialled by us."""
    bootstrap: list[str] = field(default_factory=list)
    """Base URLs dialled at start and redialled (with backoff) whenever the link is lost."""
    max_message: int = DEFAULT_MAX_MESSAGE
    max_peers: int = 32

    freshness_window: float = 120.0
    """A message's seq encodes its publication time; older or newer by more than this is stale."""
    seen_ttl: float = 300.0
    """How long a message id is remembered. Must be at least twice the freshness window: a
    message stamped at the future edge of the window stays fresh for two windows."""
    seen_max: int = 200_000

    msg_rate: float = 200.0
    msg_burst: float = 400.0
    byte_rate: float = 16 * 1024 * 1024
    byte_burst: float = 0.0
    """0 means ``max(byte_rate, 2 * max_message)``, so two largest messages fit back to back."""
    send_queue: int = 256
    send_queue_drop: Literal["oldest", "newest"] = "oldest"
    inbox_size: int = 256
    """Verified messages waiting for their topic validator, per peer."""

    ping_interval: float = 10.0
    """WebSocket ping period; a peer silent for half of it after a ping is dropped."""
    handshake_timeout: float = 5.0
    dial_timeout: float = 5.0
    close_timeout: float = 2.0
    heartbeat: float = 1.0
    """Period of the maintenance loop: dialling, dissemination-policy upkeep, cache expiry."""
    pex_interval: float = 30.0
    pex_max: int = 64
    """Most URLs in one peer-exchange frame; a longer list is malformed."""
    book_max: int = 1024
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_dial_failures: int = 8
    """URLs learned from peers are forgotten after this many failed dials in a row (bootstrap
    URLs and peers we were once connected to are kept and retried at the capped backoff)."""

    score_threshold: float = -100.0
    score_half_life: float = 60.0
    ban_seconds: float = 600.0
    penalties: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PENALTIES))

    def __post_init__(self) -> None:
        if not isinstance(self.chain_id, str) or not self.chain_id:
            raise ValueError("chain_id must be a non-empty string")
        self.listen_url = normalize_url(self.listen_url)
        self.bootstrap = [normalize_url(u) for u in self.bootstrap]
        if not self.byte_burst:
            self.byte_burst = max(self.byte_rate, 2.0 * self.max_message)
        positive = (
            "max_message", "max_peers", "freshness_window", "seen_ttl", "seen_max", "msg_rate",
            "msg_burst", "byte_rate", "byte_burst", "send_queue", "inbox_size", "ping_interval",
            "handshake_timeout", "dial_timeout", "close_timeout", "heartbeat", "pex_interval",
            "pex_max", "book_max", "backoff_base", "backoff_max", "max_dial_failures",
            "score_half_life", "ban_seconds",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.seen_ttl < 2 * self.freshness_window:
            raise ValueError("seen_ttl must be at least twice freshness_window (replay protection)")
        if self.byte_burst < self.max_message:
            raise ValueError("byte_burst must be at least max_message, or no large message passes")
        if self.send_queue_drop not in ("oldest", "newest"):
            raise ValueError("send_queue_drop must be 'oldest' or 'newest'")
        if self.score_threshold >= 0:
            raise ValueError("score_threshold must be negative (scores start at 0)")
        if any(v < 0 for v in self.penalties.values()):
            raise ValueError("penalties are magnitudes and must be non-negative")

    @property
    def frame_limit(self) -> int:
        """Transport-level frame cap: twice ``max_message``.

        Frames between ``max_message`` and this are read, dropped as oversized and penalised,
        and the connection lives on; beyond it the WebSocket layer refuses to buffer the frame
        and closes the connection (also counted as oversized).
        """
        return 2 * self.max_message
