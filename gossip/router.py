"""The message pipeline: what happens to every frame a live peer sends, and to what we publish.

Order of checks for an incoming envelope, cheapest and most discriminating first, so a flood of
junk costs as little as possible: (session authentication, size cap and rate limits, in the
peer) -> decode -> shape -> known topic -> freshness window -> seen-cache -> signature -> topic
validator (async, in the peer's worker) -> deliver and forward.

A message id enters the seen-cache only once its signature has verified: otherwise anyone could
pre-empt a real message by sending a forgery with the same signed fields, and the real one would
then be dropped as a duplicate.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gossip.admission import Admission
from gossip.book import AddressBook
from gossip.codec import DecodeError
from gossip.config import GossipConfig
from gossip.crypto import KeyPair, sha256, verify
from gossip.envelope import Envelope, SeqClock, Verdict, check_topic, is_fresh
from gossip.metrics import MetricsRecorder
from gossip.netpolicy import address_group
from gossip.peer import Peer
from gossip.policy import DisseminationPolicy
from gossip.score import PeerScores
from gossip.seen import SeenCache
from gossip.wire import MSG, PEERS, Close, decode_frame, msg_frame, parse_peers

log = logging.getLogger(__name__)

Validator = Callable[[Envelope], Awaitable[Verdict]]
Deliver = Callable[[Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    validate: Validator
    deliver: Deliver


@dataclass(frozen=True)
class _Pending:
    """A verified envelope waiting for its topic validator."""

    envelope: Envelope
    msg_id: bytes
    size: int
    """Bytes of the frame it came in (what the peer's inbox is bounded by)."""


class Router:
    """Implements :class:`gossip.peer.PeerHooks` for every live peer of one node."""

    def __init__(self, keypair: KeyPair, config: GossipConfig, peers: dict[str, Peer],
                 policy: DisseminationPolicy, book: AddressBook, admission: Admission,
                 metrics: MetricsRecorder, on_new_urls: Callable[[], None]) -> None:
        self.keypair = keypair
        self.config = config
        self.topics: dict[str, Subscription] = {}
        self.seen = SeenCache(config.seen_ttl, config.seen_max)
        self.scores = PeerScores(config.penalties, config.score_threshold,
                                 config.score_half_life, config.ban_seconds)
        self._peers = peers
        self._policy = policy
        self._book = book
        self._admission = admission
        self._metrics = metrics
        self._on_new_urls = on_new_urls
        self._seq = SeqClock()

    # ------------------------------------------------------------------ local side

    def subscribe(self, topic: str, validate: Validator, deliver: Deliver) -> None:
        check_topic(topic)
        if topic in self.topics:
            raise ValueError(f"topic {topic!r} already has a subscriber")
        self.topics[topic] = Subscription(validate, deliver)
        self._metrics.topic(topic)
        self._policy.join(topic)

    def publish(self, topic: str, body: bytes) -> bytes:
        """Sign and send ``body`` on ``topic`` to the policy's targets; returns the msg id."""
        envelope = Envelope.create(self.keypair, self.config.chain_id, topic, self._seq.next(), body)
        frame = msg_frame(envelope)
        if len(frame) > self.config.max_message:
            raise ValueError(f"message of {len(frame)} bytes exceeds max_message "
                             f"({self.config.max_message})")
        msg_id = envelope.msg_id(self.config.chain_id)
        self.seen.add(msg_id)  # so that copies echoed back to us are dropped as duplicates
        self._metrics.topic(topic).published += 1
        self._send(self._policy.publish_targets(topic), frame, topic)
        return msg_id

    def _send(self, node_ids: list[str], frame: bytes, topic: str) -> None:
        for node_id in node_ids:
            peer = self._peers.get(node_id)
            if peer is not None:
                peer.send(frame, topic)

    # ------------------------------------------------------------------ PeerHooks

    def on_frame(self, peer: Peer, data: bytes) -> None:
        size = len(data)
        try:
            frame = decode_frame(data, self.config.max_message, self.config.pex_max)
            if frame[0] == MSG:
                self._on_envelope(peer, Envelope.from_wire(frame[1:]), size)
            elif frame[0] == PEERS:
                self._metrics.control_bytes_in += size
                if not peer.pex_limiter.take():
                    self.on_drop(peer, "pex_rate")
                    return
                self._on_peers(parse_peers(frame, self.config.pex_max), address_group(peer.ip))
            else:
                raise DecodeError(f"unexpected frame type {frame[0][:16]!r}")
        except DecodeError as exc:
            log.debug("malformed frame from %s: %s", peer.node_id[:16], exc)
            self.on_drop(peer, "malformed")

    def _on_envelope(self, peer: Peer, envelope: Envelope, size: int) -> None:
        if envelope.topic not in self.topics:
            self.on_drop(peer, "unknown_topic")
            return
        counters = self._metrics.topic(envelope.topic)
        counters.msgs_in += 1
        counters.bytes_in += size
        if not is_fresh(envelope.seq, self.config.freshness_window):
            self.on_drop(peer, "stale")
            return
        signed = envelope.signing_bytes(self.config.chain_id)
        msg_id = sha256(signed)
        if msg_id in self.seen or envelope.sender == self.keypair.node_id:
            self.on_drop(peer, "duplicate")
            return
        if not verify(envelope.sender, signed, envelope.signature):
            self.on_drop(peer, "bad_signature")
            return
        if not peer.submit(_Pending(envelope, msg_id, size)):
            self.on_drop(peer, "queue_full")
            return
        self.seen.add(msg_id, peer.node_id)

    def _on_peers(self, urls: list[str], source_group: str) -> None:
        new = [url for url in urls if self._book.learn(url, source_group)]
        if new:
            self._on_new_urls()

    async def on_work(self, peer: Peer, work: _Pending) -> None:
        envelope = work.envelope
        subscription = self.topics[envelope.topic]
        try:
            verdict = await subscription.validate(envelope)
        except Exception:
            log.exception("validator of topic %r raised", envelope.topic)
            self.on_drop(None, "validator_error")
            return
        if verdict is Verdict.ACCEPT:
            # Forward first: queuing is instant, and the subscriber's work should not delay
            # the rest of the network.
            targets = self._policy.forward_targets(envelope.topic, {peer.node_id, envelope.sender})
            if targets:
                self._send(targets, msg_frame(envelope), envelope.topic)
            self._metrics.topic(envelope.topic).delivered += 1
            try:
                await subscription.deliver(envelope)
            except Exception:
                log.exception("deliver callback of topic %r raised", envelope.topic)
                self.on_drop(None, "validator_error")
        elif verdict is Verdict.REJECT:
            self.on_drop(peer, "rejected")
        elif verdict is Verdict.IGNORE:
            self.on_drop(peer, "ignored")
        else:
            log.error("validator of topic %r returned %r, not a Verdict", envelope.topic, verdict)
            self.on_drop(None, "validator_error")

    def on_abandon(self, peer: Peer, work: _Pending) -> None:
        # Never processed: forget it, so a copy from another peer can still be accepted.
        self.seen.discard(work.msg_id)

    def on_drop(self, peer: Peer | None, reason: str) -> None:
        """Count a drop and charge its penalty to ``peer``; ban a peer that sinks too low."""
        self._metrics.drop(reason)
        if peer is None or not self.scores.penalize(peer.node_id, reason):
            return
        self.scores.ban(peer.node_id)
        self._admission.charge(peer.ip, "ban")
        self._metrics.bans += 1
        log.warning("banning peer %s (%s): score %.1f after %s", peer.node_id[:16], peer.url,
                    self.scores.score(peer.node_id), reason)
        peer.request_close(Close.BANNED, "banned: score below threshold")

    def on_session_failure(self, peer: Peer, detail: str) -> None:
        # Not the node id's fault (a relay may have injected it): only the address pays.
        self._metrics.drop("session")
        self._admission.charge(peer.ip, "session")

    def on_sent(self, topic: str | None, nbytes: int) -> None:
        self._metrics.sent(topic, nbytes)
