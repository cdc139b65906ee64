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

DialScope = Literal["public", "private", "local"]
SCOPES: tuple[DialScope, ...] = ("public", "private", "local")
"""Address classes a node dials when a peer names them (see :mod:`gossip.netpolicy`)."""

DEFAULT_PENALTIES: dict[str, float] = {
    "malformed": 10.0,
    "oversized": 20.0,
    "bad_signature": 20.0,
    "rejected": 10.0,
    "rate_limited": 0.25,
    "pex_rate": 10.0,
    "unsolicited": 5.0,
}
"""Score cost of one drop, by reason. Reasons not listed cost nothing: a duplicate, a stale
message or an unknown topic can reach an honest peer through no fault of its own (clock skew,
topologies where two paths race, a newer software version with more topics).
``unsolicited``: a body we never asked that peer for, or one that does not hash to its id."""

DEFAULT_ADDRESS_COSTS: dict[str, float] = {
    "handshake": 2.0,
    "session": 4.0,
    "ban": 16.0,
}
"""Handshake tokens taken from a source address's budget, on top of the one every handshake
costs, when a connection from it fails its handshake, sends a frame that fails authentication
after it, or gets its node id banned. Node ids are free; addresses are not, so this is what a
misbehaving host cannot shed by changing keys."""


@dataclass
class ScoreParams:
    """Peer scoring of gossipsub v1.1, per peer and summed over topics (see ``docs/gossip.md``).

    Positive terms are capped, so good behaviour cannot be banked without bound; counters decay
    every heartbeat by their ``*_decay`` factor. Weights of penalties are negative.
    """

    time_in_mesh_weight: float = 0.01
    time_in_mesh_quantum: float = 1.0
    time_in_mesh_cap: float = 600.0
    """P1: seconds in our mesh of a topic / quantum, capped; at most 6 points per topic."""
    first_delivery_weight: float = 0.5
    first_delivery_decay: float = 0.97
    first_delivery_cap: float = 20.0
    """P2: messages this peer delivered to us first (decaying, capped); at most 10 points."""
    invalid_weight: float = -1.0
    invalid_decay: float = 0.99
    """P4: messages that failed signature or validation, squared: 9 of them are -81 (graylisted,
    about when the penalty score bans: one rejected message is not enough to silence a peer
    whose other messages, e.g. a delegate's votes, may matter)."""
    colocation_weight: float = -10.0
    colocation_threshold: int = 3
    colocation_exempt: tuple[str, ...] = ("127.0.0.1", "::1")
    """P6: peers beyond ``threshold`` on one source address, squared. A testnet on one host has
    every daemon on 127.0.0.1, which is therefore exempt (as libp2p's whitelist)."""
    behaviour_weight: float = -10.0
    behaviour_decay: float = 0.99
    behaviour_threshold: float = 2.0
    """P7: grafts during a backoff and broken IWANT promises beyond the threshold, squared."""
    gossip_threshold: float = -10.0
    """Below it: no IHAVE to or from the peer, its IWANTs are ignored."""
    publish_threshold: float = -50.0
    """Below it: our own messages are not flood-published to the peer."""
    graylist_threshold: float = -80.0
    """Below it: every frame from the peer is dropped unread (``graylisted``)."""


@dataclass
class MeshParams:
    """gossipsub v1.1's mesh (DESIGN section 2: D=6, D_low=4, D_high=12, heartbeat 1 s)."""

    d: int = 6
    d_low: int = 4
    d_high: int = 12
    d_lazy: int = 6
    """Least peers (outside the mesh) an IHAVE goes to per topic per heartbeat."""
    d_score: int = 4
    """Peers kept by score when an oversubscribed mesh is pruned; the rest are kept at random."""
    d_out: int = 2
    """Outbound peers (ones we dialled) a mesh keeps when pruned, against inbound eclipses."""
    gossip_factor: float = 0.25
    """Share of the other subscribed peers an IHAVE goes to, if more than ``d_lazy``."""
    flood_peers: int = 8
    """A node with at most this many connected peers sends every message to all of them: the
    full mesh DESIGN wants for networks of 8 nodes or fewer (see ``docs/gossip.md``)."""
    flood_publish: bool = True
    """Our own messages go to every connected peer above the publish threshold, not only the mesh."""
    fanout_ttl: float = 60.0
    """How long a fanout (peers for a topic we publish on without subscribing) outlives its
    last publication."""
    history_length: int = 5
    history_gossip: int = 3
    """Heartbeats the message cache keeps messages for IWANT, and announces in IHAVE."""
    mcache_bytes: int = 64 * 1024 * 1024
    """Bytes of frames the message cache holds at most (oldest first out)."""
    prune_backoff: int = 60
    """Seconds a pruned peer must wait before it grafts again."""
    graft_flood: float = 10.0
    """A graft this soon after our prune counts double as a behaviour penalty."""
    max_ihave_ids: int = 500
    """Message ids in one IHAVE or IWANT frame."""
    max_ihave_frames: int = 10
    """IHAVE frames accepted from one peer per heartbeat."""
    max_iwant_ids: int = 2000
    """Message ids we ask one peer for per heartbeat."""
    iwant_followup: float = 3.0
    """A peer that answered our IWANT must deliver within this, or its promise is broken."""
    max_transmissions: int = 3
    """Times one peer may have one cached message sent again through IWANT."""
    max_topics: int = 64
    """Topics one peer may subscribe to (a longer ``sub`` frame is malformed)."""
    d_eager: int = 3
    """Mesh peers per topic left unchoked (pushing messages to us); the later ones are choked and
    announce instead (:mod:`gossip.choke`). 0 turns choking off. 3, with relays, meets the
    amplification goal on 1,000 simulated nodes (``docs/decisions.md``)."""
    relay: bool = True
    """A message that came straight from its publisher goes on to every connected subscriber
    outside the mesh too (flood publishing one hop further), but for peers that choked our
    relays: in a large network a second wide hop saves a mesh hop or two."""
    relay_choke_ttl: float = 60.0
    """Seconds a peer's choke of our relays holds; a late copy after that renews it."""
    choke_evidence: float = 5.0
    """Copies a mesh peer must have delivered (decayed) before it may be choked for lateness."""
    choke_decay: float = 0.9
    """Per-heartbeat decay of each mesh peer's delivery record (a memory of about ten seconds)."""
    score: ScoreParams = field(default_factory=ScoreParams)

    def check(self) -> None:
        if not 0 < self.d_low <= self.d <= self.d_high:
            raise ValueError("gossipsub needs 0 < d_low <= d <= d_high")
        if not 0 <= self.d_out <= self.d_low or self.d_score > self.d:
            raise ValueError("gossipsub needs d_out <= d_low and d_score <= d")
        if self.d_eager < 0:
            raise ValueError("gossipsub needs d_eager >= 0 (0: no choking)")
        if not (self.choke_evidence >= 1.0 and 0.0 < self.choke_decay < 1.0):
            raise ValueError("choking needs choke_evidence >= 1 and 0 < choke_decay < 1")
        if not 0 < self.history_gossip <= self.history_length:
            raise ValueError("gossipsub needs 0 < history_gossip <= history_length")
        s = self.score
        if not s.graylist_threshold < s.publish_threshold < s.gossip_threshold <= 0:
            raise ValueError("score thresholds must be graylist < publish < gossip <= 0")


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
    """Largest frame (after reassembly) a peer may send once authenticated."""
    max_inbound: int = 48
    """Connections other nodes opened to us. Separate from outbound slots, so strangers who
    fill every inbound slot cannot stop us from dialling the peers we chose."""
    max_outbound: int = 16
    """Connections we dial ourselves, from the address book (bootstrap and tried peers first)."""
    dial_scope: DialScope = "public"
    """Address classes a URL learned from the network may have to be dialled: public, private
    (LAN) or local (one host). Bootstrap URLs are exempt."""

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
    send_queue_bytes: int = 0
    """Bytes of frames awaiting write, per peer; 0 means ``2 * max_message``."""
    inbox_size: int = 256
    """Verified messages waiting for their topic validator, per peer."""
    inbox_bytes: int = 0
    """Bytes of those messages, per peer; 0 means ``2 * max_message``."""
    buffer_bytes: int = 0
    """Bytes all peers' send queues and inboxes may hold together; 0 means ``8 * max_message``
    (the per-peer bounds alone add up to 1 GiB over 32 peers at the default ``max_message``)."""

    ping_interval: float = 10.0
    """WebSocket ping period; a peer silent for half of it after a ping is dropped."""
    handshake_timeout: float = 3.0
    """The whole handshake (three messages) must finish within this."""
    max_handshakes: int = 64
    """Inbound connections still in their handshake, in all. Beyond it new ones get HTTP 503."""
    max_handshakes_per_ip: int = 8
    """The same, per source address. Only connections still in the handshake count, so honest
    nodes sharing one address (a test host, a NAT) are not kept apart by it once connected."""
    handshake_rate: float = 2.0
    handshake_burst: float = 16.0
    """Per source address budget of inbound handshakes (token bucket); misbehaviour from the
    address takes extra tokens (``address_costs``). An empty budget gets HTTP 429 until it refills:
    a throttle rather than a ban, because one address may hold honest nodes too."""
    address_costs: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ADDRESS_COSTS))
    dial_timeout: float = 5.0
    close_timeout: float = 2.0
    heartbeat: float = 1.0
    """Period of the maintenance loop: dialling, dissemination-policy upkeep, cache expiry."""
    pex_interval: float = 30.0
    pex_min_interval: float = 5.0
    """We send a peer at most one peer-exchange frame per this interval (announcements of new
    peers wait and are merged); a peer sending more than twice as often, beyond a burst of 4,
    is penalised (``pex_rate``)."""
    pex_max: int = 64
    """Most URLs in one peer-exchange frame; a longer list is malformed."""
    book_new_buckets: int = 64
    book_tried_buckets: int = 16
    book_bucket_size: int = 16
    """Address book tables (see :mod:`gossip.book`): learned URLs go to ``new`` buckets chosen
    by the network group of the peer that told us; URLs we reached go to ``tried`` buckets."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_dial_failures: int = 8
    """URLs learned from peers are forgotten after this many failed dials in a row (bootstrap
    URLs and peers we were once connected to are kept and retried at the capped backoff)."""

    dissemination: Literal["gossipsub", "flood"] = "gossipsub"
    """``gossipsub`` (a mesh per topic, which is a full mesh while a node has at most
    ``mesh.flood_peers`` peers) or ``flood`` (every message to every peer, at any size)."""
    mesh: MeshParams = field(default_factory=MeshParams)
    pull_threshold: int = 16 * 1024
    """Bodies at least this large, on topics subscribed for pulling, are announced and pulled
    by id (each node receives them once) instead of being pushed to every mesh peer."""
    pull_timeout: float = 1.0
    pull_rate: float = 256 * 1024
    """A requested body must arrive within ``pull_timeout + size / pull_rate`` seconds, or it is
    asked of the next peer that announced it."""
    max_pulls: int = 256
    """Bodies being pulled at once; announcements beyond it are dropped (``queue_full``)."""
    body_cache_bytes: int = 64 * 1024 * 1024
    body_ttl: float = 120.0
    """Bodies kept to serve peers' pulls: at most this many bytes (the publisher with the most
    bytes loses its oldest first), each for at most ``body_ttl`` seconds."""
    serves_per_body: int = 2
    """Times we send one body to one peer (a lost answer may be asked again, a loop may not)."""

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
        self.send_queue_bytes = self.send_queue_bytes or 2 * self.max_message
        self.inbox_bytes = self.inbox_bytes or 2 * self.max_message
        self.buffer_bytes = self.buffer_bytes or 8 * self.max_message
        positive = (
            "max_message", "freshness_window", "seen_ttl", "seen_max", "msg_rate",
            "msg_burst", "byte_rate", "byte_burst", "send_queue", "send_queue_bytes", "inbox_size",
            "inbox_bytes", "buffer_bytes", "ping_interval", "handshake_timeout", "max_handshakes",
            "max_handshakes_per_ip", "handshake_rate", "handshake_burst", "dial_timeout",
            "close_timeout", "heartbeat", "pex_interval", "pex_min_interval", "pex_max",
            "book_new_buckets", "book_tried_buckets", "book_bucket_size", "backoff_base",
            "backoff_max", "max_dial_failures", "score_half_life", "ban_seconds",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_inbound < 0 or self.max_outbound < 0 or not self.max_inbound + self.max_outbound:
            raise ValueError("max_inbound and max_outbound must be >= 0, and not both 0")
        if self.dial_scope not in SCOPES:
            raise ValueError(f"dial_scope must be one of {', '.join(SCOPES)}")
        if self.send_queue_bytes < self.max_message or self.inbox_bytes < self.max_message:
            raise ValueError("send_queue_bytes and inbox_bytes must hold at least one max_message")
        if self.buffer_bytes < 2 * self.max_message:
            raise ValueError("buffer_bytes must hold at least two max_message (one sent, one received)")
        if self.seen_ttl < 2 * self.freshness_window:
            raise ValueError("seen_ttl must be at least twice freshness_window (replay protection)")
        if self.byte_burst < self.max_message:
            raise ValueError("byte_burst must be at least max_message, or no large message passes")
        if self.send_queue_drop not in ("oldest", "newest"):
            raise ValueError("send_queue_drop must be 'oldest' or 'newest'")
        if self.score_threshold >= 0:
            raise ValueError("score_threshold must be negative (scores start at 0)")
        if self.dissemination not in ("gossipsub", "flood"):
            raise ValueError("dissemination must be 'gossipsub' or 'flood'")
        self.mesh.check()
        for name in ("pull_threshold", "pull_timeout", "pull_rate", "max_pulls", "body_cache_bytes",
                     "body_ttl", "serves_per_body"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if any(v < 0 for v in [*self.penalties.values(), *self.address_costs.values()]):
            raise ValueError("penalties and address costs are magnitudes and must be non-negative")

    @property
    def max_peers(self) -> int:
        """Connections in all: inbound and outbound slots."""
        return self.max_inbound + self.max_outbound
