"""Peer-to-peer dissemination of opaque signed messages on topics.

This package is the bottom of fedchain's network stack: it knows peers, WebSocket transport,
sessions, signed envelopes, topics and validators, and nothing of blocks or models. It also owns
the two primitives every layer above signs and encodes with: :mod:`gossip.codec` (canonical,
bounded msgpack) and :mod:`gossip.crypto` (Ed25519 identities and SHA-256).

The transport (aiohttp and everything built on it) is loaded only when one of its names is first
used (PEP 562), so that ``gossip.codec``, ``gossip.crypto`` and ``from gossip import Verdict``
stay light for the layers that only sign, hash and encode.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gossip.envelope import Envelope, Verdict

if TYPE_CHECKING:
    from gossip.config import GossipConfig
    from gossip.metrics import GossipMetrics
    from gossip.peer import PeerInfo
    from gossip.service import Gossip

_LAZY = {"Gossip": "gossip.service", "GossipConfig": "gossip.config",
         "GossipMetrics": "gossip.metrics", "PeerInfo": "gossip.peer"}

__all__ = ["Envelope", "Gossip", "GossipConfig", "GossipMetrics", "PeerInfo", "Verdict"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gossip' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
