"""The message pipeline: what happens to every frame a live peer sends, and to what we publish.

Frames: signed messages (``msg``), announcements of bodies to pull and the pulls themselves
(``ann``, ``want``, ``body``, see :mod:`gossip.pull`), the dissemination policy's control frames
(handed to it, see :mod:`gossip.mesh`) and peer exchange. A peer the policy graylists has every
frame dropped before it is even decoded.

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
from gossip.clock import Clock
from gossip.codec import DecodeError
from gossip.config import GossipConfig
from gossip.crypto import KeyPair, sha256, verify
from gossip.envelope import Announcement, Envelope, SeqClock, Verdict, check_topic, is_fresh
from gossip.metrics import MetricsRecorder
from gossip.netpolicy import address_group
from gossip.peer import Peer
from gossip.policy import DisseminationPolicy
from gossip.pull import Pull, Puller, PullRule
from gossip.score import PeerScores
from gossip.seen import SeenCache
from gossip.wire import (
    ANN,
    BODY,
    CONTROL,
    MSG,
    PEERS,
    WANT,
    Close,
    ann_frame,
    decode_frame,
    msg_frame,
    parse_body,
    parse_peers,
    parse_want,
)

log = logging.getLogger(__name__)

Validator = Callable[[Envelope], Awaitable[Verdict]]
Deliver = Callable[[Envelope], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    validate: Validator
    deliver: Deliver
    pull: PullRule | None = None


@dataclass(frozen=True)
class _Pending:
    """A verified envelope (pushed, or a pulled body with its announcement) awaiting its
    topic validator."""

    envelope: Envelope
    msg_id: bytes
    size: int
    """Bytes of the frame(s) it came in (what the peer's inbox is bounded by)."""
    frame: bytes
    """The frame to forward if accepted: the message itself, or the announcement of a body."""
    body_id: bytes | None = None
    """For a pulled body: its id, under which it is kept to serve others once accepted."""


class Router:
    """Implements :class:`gossip.peer.PeerHooks` for every live peer of one node, and
    :class:`gossip.policy.PolicyIO` for its dissemination policy."""

    def __init__(self, keypair: KeyPair, config: GossipConfig, peers: dict[str, Peer],
                 policy: DisseminationPolicy, book: AddressBook, admission: Admission,
                 metrics: MetricsRecorder, on_new_urls: Callable[[], None], clock: Clock) -> None:
        self.keypair = keypair
        self.config = config
        self.topics: dict[str, Subscription] = {}
        self.seen = SeenCache(config.seen_ttl, config.seen_max, clock.monotonic)
        self.scores = PeerScores(config.penalties, config.score_threshold,
                                 config.score_half_life, config.ban_seconds, clock.monotonic)
        self._clock = clock
        self._peers = peers
        self._policy = policy
        self._book = book
        self._admission = admission
        self._metrics = metrics
        self._on_new_urls = on_new_urls
        self._seq = SeqClock(clock.wall_ms)
        self._max_items = max(config.pex_max, config.mesh.max_ihave_ids, config.mesh.max_topics)
        self._sources: dict[bytes, dict[str, None]] = {}
        """Peers that sent each message awaiting validation: it is not forwarded back to them."""
        self.pulls = Puller(config, clock.monotonic, peers, self)
        policy.bind(self)

    # ------------------------------------------------------------------ local side

    def subscribe(self, topic: str, validate: Validator, deliver: Deliver, pull: PullRule | None = None) -> None:
        check_topic(topic)
        if topic in self.topics:
            raise ValueError(f"topic {topic!r} already has a subscriber")
        self.topics[topic] = Subscription(validate, deliver, pull)
        self._metrics.topic(topic)
        self._policy.join(topic)

    def publish(self, topic: str, body: bytes) -> bytes:
        """Sign and send ``body`` on ``topic`` to the policy's targets; returns the msg id. A
        large body on a pull topic is announced, and kept to be served."""
        chain, seq = self.config.chain_id, self._seq.next()
        sub = self.topics.get(topic)
        if sub is not None and sub.pull is not None and len(body) >= self.config.pull_threshold:
            if len(body) > sub.pull.max_body:
                raise ValueError(f"body of {len(body)} bytes exceeds the topic's max_body ({sub.pull.max_body})")
            ann = Announcement.create(self.keypair, chain, topic, seq, body)
            frame, msg_id = ann_frame(ann), ann.msg_id(chain)
            self.pulls.bodies.put(ann.body_id, topic, self.keypair.node_id, body)
        else:
            envelope = Envelope.create(self.keypair, chain, topic, seq, body)
            frame, msg_id = msg_frame(envelope), envelope.msg_id(chain)
        if len(frame) > self.config.max_message:
            raise ValueError(f"message of {len(frame)} bytes exceeds max_message "
                             f"({self.config.max_message})")
        self.seen.add(msg_id)  # so that copies echoed back to us are dropped as duplicates
        self._metrics.topic(topic).published += 1
        self._policy.accepted(msg_id, topic, frame, None)
        for node_id in self._policy.publish_targets(topic):
            self.send(node_id, frame, topic)
        return msg_id

    # ------------------------------------------------------------------ PolicyIO

    def send(self, node_id: str, frame: bytes, topic: str | None = None) -> None:
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.send(frame, topic)

    def has_seen(self, msg_id: bytes) -> bool:
        return msg_id in self.seen

    # ------------------------------------------------------------------ peers

    def add_peer(self, peer: Peer) -> None:
        self._policy.add_peer(peer.node_id, peer.ip, peer.direction == "out")

    def remove_peer(self, node_id: str) -> None:
        self._policy.remove_peer(node_id)
        self.pulls.peer_gone(node_id)

    # ------------------------------------------------------------------ PeerHooks

    def on_frame(self, peer: Peer, data: bytes) -> None:
        if self._policy.graylisted(peer.node_id):
            self._metrics.drop("graylisted")
            return
        size = len(data)
        try:
            frame = decode_frame(data, self.config.max_message, self._max_items)
            kind = frame[0]
            if kind == MSG:
                self._on_envelope(peer, Envelope.from_wire(frame[1:]), data)
            elif kind == ANN:
                self._on_announcement(peer, Announcement.from_wire(frame[1:]), data)
            elif kind == BODY:
                body_id, body = parse_body(frame)
                topic = self.pulls.topic_of(body_id)
                if topic is not None:
                    self._metrics.topic(topic).bytes_in += size
                    self._metrics.topic(topic).bodies_in += 1
                self.pulls.on_body(peer, body_id, body)
            elif kind == WANT:
                self._metrics.control_bytes_in += size
                self.pulls.on_want(peer, parse_want(frame))
            elif kind in CONTROL:
                self._metrics.control_bytes_in += size
                self._policy.on_control(peer.node_id, frame)
            elif kind == PEERS:
                self._metrics.control_bytes_in += size
                if not peer.pex_limiter.take():
                    self.on_drop(peer, "pex_rate")
                    return
                self._on_peers(parse_peers(frame, self.config.pex_max), address_group(peer.ip))
            else:
                raise DecodeError(f"unexpected frame type {kind[:16]!r}")
        except DecodeError as exc:
            log.debug("malformed frame from %s: %s", peer.node_id[:16], exc)
            self.on_drop(peer, "malformed")

    def _admit(self, peer: Peer, topic: str, sender: str, signed: bytes, signature: bytes, seq: int,
               size: int) -> bytes | None:
        """The checks every message and announcement passes, cheapest first: known topic,
        freshness, seen-cache, signature. Returns the message id, or None when dropped."""
        if topic not in self.topics:
            self.on_drop(peer, "unknown_topic")
            return None
        counters = self._metrics.topic(topic)
        counters.msgs_in += 1
        counters.bytes_in += size
        if not is_fresh(seq, self.config.freshness_window, self._clock.wall_ms()):
            self.on_drop(peer, "stale")
            return None
        msg_id = sha256(signed)
        if msg_id in self.seen or sender == self.keypair.node_id:
            sources = self._sources.get(msg_id)
            if sources is not None:
                sources[peer.node_id] = None
            self._policy.duplicate(msg_id, peer.node_id, topic, sender)
            self.on_drop(peer, "duplicate")
            return None
        if not verify(sender, signed, signature):
            self.on_drop(peer, "bad_signature")
            self._policy.invalid(peer.node_id, topic)
            return None
        return msg_id

    def _on_envelope(self, peer: Peer, envelope: Envelope, frame: bytes) -> None:
        signed = envelope.signing_bytes(self.config.chain_id)
        msg_id = self._admit(peer, envelope.topic, envelope.sender, signed, envelope.signature,
                             envelope.seq, len(frame))
        if msg_id is not None:
            self._submit(peer, _Pending(envelope, msg_id, len(frame), frame))

    def _submit(self, peer: Peer, work: _Pending) -> None:
        if not peer.submit(work):
            self.on_drop(peer, "queue_full")
            return
        self.seen.add(work.msg_id, peer.node_id)
        self._sources.setdefault(work.msg_id, {})[peer.node_id] = None
        self._policy.received(work.msg_id, peer.node_id, work.envelope.topic, work.envelope.sender)

    def _on_announcement(self, peer: Peer, ann: Announcement, frame: bytes) -> None:
        sub = self.topics.get(ann.topic)
        if sub is not None and sub.pull is None:
            raise DecodeError(f"announcement on topic {ann.topic!r}, which is not pulled")
        signed = ann.signing_bytes(self.config.chain_id)
        if sha256(signed) in self.seen:
            self.pulls.announced_too(ann.body_id, peer.node_id)
        msg_id = self._admit(peer, ann.topic, ann.sender, signed, ann.signature, ann.seq, len(frame))
        if msg_id is None:
            return
        assert sub is not None and sub.pull is not None
        verdict = Verdict.ACCEPT if ann.size <= sub.pull.max_body else Verdict.REJECT
        if verdict is Verdict.ACCEPT and sub.pull.screen is not None:
            verdict = sub.pull.screen(ann.sender, ann.size)
        if verdict is not Verdict.ACCEPT:
            self._refuse(peer, ann.topic, verdict)
            return
        if not self.pulls.start(peer, ann, msg_id, frame):
            self.on_drop(peer, "queue_full")
            return
        self.seen.add(msg_id, peer.node_id)
        self._policy.received(msg_id, peer.node_id, ann.topic, ann.sender)

    # ------------------------------------------------------------------ PullHooks

    def pulled(self, peer: Peer, pull: Pull, body: bytes) -> None:
        self._sources[pull.msg_id] = dict(pull.announcers)
        work = _Pending(pull.ann.envelope(body), pull.msg_id, len(pull.frame) + len(body), pull.frame,
                        pull.ann.body_id)
        if not peer.submit(work):
            self._sources.pop(pull.msg_id, None)
            self.seen.discard(pull.msg_id)
            self.on_drop(peer, "queue_full")

    def pull_failed(self, pull: Pull) -> None:
        self.seen.discard(pull.msg_id)

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
            self._sources.pop(work.msg_id, None)
            self.on_drop(None, "validator_error")
            return
        sources = self._sources.pop(work.msg_id, {})
        if verdict is Verdict.ACCEPT:
            if work.body_id is not None:
                self.pulls.bodies.put(work.body_id, envelope.topic, envelope.sender, envelope.body)
            # Forward first: queuing is instant, and the subscriber's work should not delay
            # the rest of the network. Peers that sent us a copy already have it.
            exclude = {*sources, peer.node_id, envelope.sender}
            for node_id in self._policy.forward_targets(envelope.topic, exclude, work.msg_id,
                                                        peer.node_id == envelope.sender):
                self.send(node_id, work.frame, envelope.topic)
            self._policy.accepted(work.msg_id, envelope.topic, work.frame, peer.node_id)
            self._metrics.topic(envelope.topic).delivered += 1
            try:
                await subscription.deliver(envelope)
            except Exception:
                log.exception("deliver callback of topic %r raised", envelope.topic)
                self.on_drop(None, "validator_error")
        elif verdict in (Verdict.REJECT, Verdict.IGNORE):
            self._refuse(peer, envelope.topic, verdict)
        else:
            log.error("validator of topic %r returned %r, not a Verdict", envelope.topic, verdict)
            self.on_drop(None, "validator_error")

    def _refuse(self, peer: Peer, topic: str, verdict: Verdict) -> None:
        if verdict is Verdict.REJECT:
            self.on_drop(peer, "rejected")
            self._policy.invalid(peer.node_id, topic)
        elif verdict is Verdict.IGNORE:
            self.on_drop(peer, "ignored")
        else:
            log.error("screen of topic %r returned %r, not a Verdict", topic, verdict)
            self.on_drop(None, "validator_error")

    def on_abandon(self, peer: Peer, work: _Pending) -> None:
        # Never processed: forget it, so a copy from another peer can still be accepted.
        self.seen.discard(work.msg_id)
        self._sources.pop(work.msg_id, None)

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
