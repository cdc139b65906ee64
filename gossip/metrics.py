"""Counters of the gossip layer, for benchmarks and the node's ``/metrics``.

Per-topic counters exist only for subscribed topics (and topics we publish on): a hostile peer
inventing topic names must not be able to grow this table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

DROP_REASONS = (
    "malformed",        # undecodable frame, wrong shape, unexpected frame type
    "oversized",        # frame larger than max_message (the connection is closed)
    "session",          # a message that failed authentication: session closed, nobody blamed
    "bad_signature",    # envelope signature does not verify
    "wrong_chain",      # handshake from a peer on another chain
    "handshake",        # any other failed or refused handshake
    "unknown_topic",    # envelope on a topic nobody here subscribed to
    "stale",            # seq outside the freshness window
    "duplicate",        # already seen (no penalty)
    "rate_limited",     # over the peer's message or byte rate
    "pex_rate",         # peer-exchange frames faster than any honest node sends them
    "rejected",         # topic validator said REJECT
    "ignored",          # topic validator said IGNORE
    "validator_error",  # a validator or deliver callback raised
    "queue_full",       # a per-peer inbox or send queue overflowed
    "graylisted",       # any frame from a peer whose mesh score is below the graylist threshold
    "withheld",         # a body we asked for did not come in time (the next announcer is asked)
    "unsolicited",      # a body we did not ask that peer for, or that does not hash to its id
)


@dataclass
class TopicCounters:
    msgs_in: int = 0
    """Envelopes received on the topic (every copy, duplicates included)."""
    bytes_in: int = 0
    bodies_in: int = 0
    """Pulled bodies received (every copy: more than one per message means one was re-fetched)."""
    msgs_out: int = 0
    """Envelopes written to peers (one per peer per message)."""
    bytes_out: int = 0
    delivered: int = 0
    """Envelopes handed to the subscriber after its validator accepted them."""
    published: int = 0


@dataclass
class GossipMetrics:
    """A snapshot; mutating it does not affect the live counters."""

    topics: dict[str, TopicCounters] = field(default_factory=dict)
    drops: dict[str, int] = field(default_factory=dict)
    handshake_failures: dict[str, int] = field(default_factory=dict)
    """Failed or refused handshakes by detailed reason (wrong_chain, bad_auth, self, ...);
    ``duplicate`` counts every second connection to a node that was closed, whichever of the
    two it was."""
    peers_connected: int = 0
    peers_banned: int = 0
    bans: int = 0
    """Bans imposed since start."""
    control_bytes_in: int = 0
    control_bytes_out: int = 0
    seen_entries: int = 0
    seen_evictions: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class MetricsRecorder:
    """The live counters, owned by one ``Gossip``."""

    def __init__(self) -> None:
        self.topics: dict[str, TopicCounters] = {}
        self.drops: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        self.handshake_failures: Counter[str] = Counter()
        self.bans = 0
        self.control_bytes_in = 0
        self.control_bytes_out = 0

    def topic(self, name: str) -> TopicCounters:
        """Counters of ``name``, created on first use (callers only pass known topics)."""
        counters = self.topics.get(name)
        if counters is None:
            counters = self.topics[name] = TopicCounters()
        return counters

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def sent(self, topic: str | None, nbytes: int) -> None:
        if topic is None:
            self.control_bytes_out += nbytes
            return
        counters = self.topic(topic)
        counters.msgs_out += 1
        counters.bytes_out += nbytes

    def snapshot(self, *, peers_connected: int, peers_banned: int, seen_entries: int,
                 seen_evictions: int) -> GossipMetrics:
        return GossipMetrics(
            topics={name: TopicCounters(**asdict(c)) for name, c in self.topics.items()},
            drops=dict(self.drops),
            handshake_failures=dict(self.handshake_failures),
            peers_connected=peers_connected,
            peers_banned=peers_banned,
            bans=self.bans,
            control_bytes_in=self.control_bytes_in,
            control_bytes_out=self.control_bytes_out,
            seen_entries=seen_entries,
            seen_evictions=seen_evictions,
        )
