"""Dissemination policies: which peers a message goes to, and the control traffic that decides it.

The router asks the policy for targets and tells it about peers, topics, accepted and invalid
messages and control frames; the policy owns no sockets and sends through the :class:`PolicyIO`
it is bound to. Two policies:

* :class:`FloodPolicy`: every message to every connected peer (a full mesh), which DESIGN
  prescribes for networks of a few nodes; it has no control traffic.
* :class:`gossip.mesh.GossipSubPolicy`: gossipsub v1.1 (a mesh per topic, fanout, IHAVE/IWANT
  over a message cache, peer scoring); it floods while a node has few peers, so small networks
  get the full mesh either way.

``GossipConfig.dissemination`` chooses (:func:`gossip.mesh.make_policy`).
"""

from __future__ import annotations

from typing import Protocol


class PolicyIO(Protocol):
    """What a policy may do to the network, through the router."""

    def send(self, node_id: str, frame: bytes, topic: str | None = None) -> None:
        """Queue ``frame`` for a connected peer (``topic`` for a cached message resent)."""

    def has_seen(self, msg_id: bytes) -> bool:
        """True for a message id already handled here."""


class DisseminationPolicy(Protocol):
    def bind(self, io: PolicyIO) -> None:
        """Called once by the router before anything else."""

    def add_peer(self, node_id: str, ip: str = "", outbound: bool = False) -> None:
        """A peer finished its handshake and can be sent to."""

    def remove_peer(self, node_id: str) -> None:
        """A peer's connection ended."""

    def join(self, topic: str) -> None:
        """We subscribed to ``topic``."""

    def publish_targets(self, topic: str) -> list[str]:
        """Peers to send our own new message on ``topic`` to."""

    def forward_targets(self, topic: str, exclude: set[str], msg_id: bytes, from_publisher: bool = False) -> list[str]:
        """Peers to forward accepted message ``msg_id`` to; never one in ``exclude`` (the peers
        that sent it to us, and its original publisher). ``from_publisher``: it came to us from
        the peer that signed it."""

    def received(self, msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
        """The first copy of ``msg_id`` with a valid signature arrived, from ``node_id`` (it
        may still fail validation); ``publisher`` signed it."""

    def duplicate(self, msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
        """Another copy of a message already being handled here arrived from ``node_id``."""

    def accepted(self, msg_id: bytes, topic: str, frame: bytes, source: str | None) -> None:
        """``frame`` (message ``msg_id``) was accepted from peer ``source``, or published by us
        (``source`` None): it may be asked for again (IWANT)."""

    def invalid(self, node_id: str, topic: str) -> None:
        """``node_id`` sent a message on ``topic`` that failed its signature or its validator."""

    def on_control(self, node_id: str, frame: list) -> None:
        """A control frame from a peer; raises :class:`~gossip.codec.DecodeError` if malformed."""

    def graylisted(self, node_id: str) -> bool:
        """True when every frame from ``node_id`` is to be dropped unread."""

    def score(self, node_id: str) -> float:
        """The policy's opinion of a peer (0 when it keeps none)."""

    def heartbeat(self) -> None:
        """Periodic upkeep (mesh maintenance); called every ``GossipConfig.heartbeat``."""


class FloodPolicy:
    """Full mesh: every connected peer gets every message once, from each node that accepts it.

    Cost per message is O(n) sends per node, O(n^2) in the network, fine up to ~8 nodes.
    """

    def __init__(self) -> None:
        self._peers: dict[str, None] = {}  # insertion-ordered set: deterministic send order

    def bind(self, io: PolicyIO) -> None:
        """Flooding sends nothing of its own."""

    def add_peer(self, node_id: str, ip: str = "", outbound: bool = False) -> None:
        self._peers[node_id] = None

    def remove_peer(self, node_id: str) -> None:
        self._peers.pop(node_id, None)

    def join(self, topic: str) -> None:
        """Flooding sends every topic to every peer; nothing to set up."""

    def publish_targets(self, topic: str) -> list[str]:
        return list(self._peers)

    def forward_targets(self, topic: str, exclude: set[str], msg_id: bytes, from_publisher: bool = False) -> list[str]:
        return [nid for nid in self._peers if nid not in exclude]

    def received(self, msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
        """Nothing is promised under flooding."""

    def duplicate(self, msg_id: bytes, node_id: str, topic: str, publisher: str = "") -> None:
        """Every peer sends everything under flooding: duplicates change nothing."""

    def accepted(self, msg_id: bytes, topic: str, frame: bytes, source: str | None) -> None:
        """Nothing is cached: every peer already got everything."""

    def invalid(self, node_id: str, topic: str) -> None:
        """Penalties are the router's (``gossip.score``); flooding keeps no opinion."""

    def on_control(self, node_id: str, frame: list) -> None:
        """Control frames of a mesh-running peer are harmless here and ignored."""

    def graylisted(self, node_id: str) -> bool:
        return False

    def score(self, node_id: str) -> float:
        return 0.0

    def heartbeat(self) -> None:
        """A full mesh needs no upkeep."""

