"""What the consensus engine needs of the gossip layer, and the topics it uses there.

The engine never imports the transport (see the import contracts in ``pyproject.toml``): the node
hands it anything with these three methods, the real :class:`gossip.service.Gossip` or a
simulated one. The topic names are part of the protocol: every node of a chain subscribes to the
same four.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Protocol

from gossip.envelope import Verdict

TOPIC_PROPOSAL = "consensus/proposal"
TOPIC_VOTE = "consensus/vote"
TOPIC_TX = "consensus/tx"
TOPIC_EVIDENCE = "consensus/evidence"


class Network(Protocol):
    """What the engine needs from the gossip layer."""

    def subscribe(self, topic: str, validate: Callable[[Any], Awaitable[Verdict]],
                  deliver: Callable[[Any], Awaitable[None]]) -> None: ...

    async def publish(self, topic: str, body: bytes) -> bytes: ...

    def peers(self) -> list[Any]: ...
