"""How a node reaches its peers: the seam between the gossip service and the network.

The service dials through a :class:`Transport` and serves connections others open through
:meth:`gossip.service.Gossip.admit_inbound` and :meth:`~gossip.service.Gossip.serve_inbound`.
A daemon uses :class:`WebSocketTransport` (aiohttp WebSockets, inbound ones on ``GET /p2p``);
the network simulation (``netsim``) plugs in WebSockets of its own with simulated latency,
bandwidth, loss and partitions, and everything above the socket (handshake, sessions, router,
policy) runs unchanged.
"""

from __future__ import annotations

from typing import Protocol

import aiohttp

from gossip.config import GossipConfig
from gossip.netpolicy import PolicyResolver, host_of
from gossip.session import WebSocketLike
from gossip.wire import WS_MAX_MESSAGE


class Transport(Protocol):
    async def start(self, config: GossipConfig) -> None: ...

    async def dial(self, url: str) -> tuple[WebSocketLike, str]:
        """An open WebSocket to ``url``'s ``/p2p`` and the peer's address; raises
        ``OSError`` (or ``TimeoutError``, ``aiohttp.ClientError``) when it cannot be reached."""

    async def close(self) -> None: ...


class WebSocketTransport:
    """aiohttp client WebSockets, resolved within the node's dial scope."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._config: GossipConfig | None = None

    async def start(self, config: GossipConfig) -> None:
        resolver = PolicyResolver(config.dial_scope, {host_of(u) for u in config.bootstrap})
        self._config = config
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=resolver),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.dial_timeout))

    async def dial(self, url: str) -> tuple[WebSocketLike, str]:
        assert self._session is not None and self._config is not None, "start() first"
        ws = await self._session.ws_connect(
            url + "/p2p", heartbeat=self._config.ping_interval, max_msg_size=WS_MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_close=self._config.close_timeout))
        peername = ws.get_extra_info("peername")
        return ws, str(peername[0]) if isinstance(peername, tuple) and peername else ""

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
