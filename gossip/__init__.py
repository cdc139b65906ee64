"""Peer-to-peer dissemination of opaque signed messages on topics.

This package is the bottom of fedchain's network stack: it knows peers, WebSocket transport,
signed envelopes, topics and validators, and nothing of blocks or models. It also owns the two
primitives every layer above signs and encodes with: :mod:`gossip.codec` (canonical, bounded
msgpack) and :mod:`gossip.crypto` (Ed25519 identities and SHA-256).
"""

from gossip.config import GossipConfig
from gossip.envelope import Envelope, Verdict
from gossip.metrics import GossipMetrics
from gossip.peer import PeerInfo
from gossip.service import Gossip

__all__ = ["Envelope", "Gossip", "GossipConfig", "GossipMetrics", "PeerInfo", "Verdict"]
