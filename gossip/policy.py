"""Dissemination policies: which peers a message is sent to.

The service asks the policy for targets and tells it about peers and topics; the policy owns no
sockets. :class:`FloodPolicy` sends everything to every connected peer, which is what DESIGN
prescribes for networks of a few nodes (a full mesh). A gossipsub-style mesh (D, D_low, D_high,
IHAVE/IWANT) fits the same interface: it keeps per-topic meshes in ``add_peer``/``remove_peer``/
``heartbeat`` and returns a mesh subset from ``forward_targets``.
"""

from __future__ import annotations

from typing import Protocol


class DisseminationPolicy(Protocol):
    def add_peer(self, node_id: str) -> None:
        """A peer finished its handshake and can be sent to."""

    def remove_peer(self, node_id: str) -> None:
        """A peer's connection ended."""

    def join(self, topic: str) -> None:
        """We subscribed to ``topic``."""

    def publish_targets(self, topic: str) -> list[str]:
        """Peers to send our own new message on ``topic`` to."""

    def forward_targets(self, topic: str, exclude: set[str]) -> list[str]:
        """Peers to forward an accepted message to; never one in ``exclude`` (the peer it came
        from, and its original publisher)."""

    def heartbeat(self) -> None:
        """Periodic upkeep (mesh maintenance); called every ``GossipConfig.heartbeat``."""


class FloodPolicy:
    """Full mesh: every connected peer gets every message once, from each node that accepts it.

    Cost per message is O(n) sends per node, O(n^2) in the network, fine up to ~8 nodes.
    """

    def __init__(self) -> None:
        self._peers: dict[str, None] = {}  # insertion-ordered set: deterministic send order

    def add_peer(self, node_id: str) -> None:
        self._peers[node_id] = None

    def remove_peer(self, node_id: str) -> None:
        self._peers.pop(node_id, None)

    def join(self, topic: str) -> None:
        """Flooding sends every topic to every peer; nothing to set up."""

    def publish_targets(self, topic: str) -> list[str]:
        return list(self._peers)

    def forward_targets(self, topic: str, exclude: set[str]) -> list[str]:
        return [nid for nid in self._peers if nid not in exclude]

    def heartbeat(self) -> None:
        """A full mesh needs no upkeep."""
