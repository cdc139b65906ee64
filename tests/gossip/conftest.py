"""Fixtures for gossip tests: real nodes on 127.0.0.1 ephemeral ports, and a raw hostile peer."""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import uvloop
from aiohttp import web

from gossip import Envelope, Gossip, GossipConfig, Verdict
from gossip.crypto import KeyPair
from tests.gossip.rawpeer import RawPeer

CHAIN = "fedchain-test"
TOPIC = "t"

def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict:
    """Multi-node tests run on both the standard loop and uvloop (what the daemon uses)."""
    factories = {"asyncio": asyncio.new_event_loop}
    if item.path.name == "test_network.py":
        factories["uvloop"] = uvloop.new_event_loop
    return factories


FAST = dict(heartbeat=0.05, backoff_base=0.05, backoff_max=0.5, handshake_timeout=2.0,
            dial_timeout=2.0, close_timeout=1.0, pex_min_interval=0.05, dial_scope="local",
            handshake_burst=64.0)
"""Settings that make a test network on 127.0.0.1 converge in a fraction of a second."""


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def url_of(sock: socket.socket) -> str:
    return f"http://127.0.0.1:{sock.getsockname()[1]}"


def bind_loopback(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@dataclass
class Node:
    gossip: Gossip
    runner: web.AppRunner
    url: str
    keypair: KeyPair
    delivered: list[Envelope] = field(default_factory=list)
    verdict: Callable[[Envelope], Verdict | Awaitable[Verdict]] = lambda env: Verdict.ACCEPT
    """What this node's validator answers; tests swap it (a coroutine function works too)."""
    stopped: bool = False

    @property
    def node_id(self) -> str:
        return self.keypair.node_id

    def peer_ids(self) -> set[str]:
        return {p.node_id for p in self.gossip.peers()}

    def bodies(self) -> list[bytes]:
        return [e.body for e in self.delivered]

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.gossip.stop()
        await self.runner.cleanup()


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    """Start gossip nodes, each with its own aiohttp server; all are stopped at teardown."""
    nodes: list[Node] = []

    async def factory(*, bootstrap: tuple[str, ...] = (), keypair: KeyPair | None = None,
                      chain_id: str = CHAIN, port: int = 0, topics: tuple[str, ...] = (TOPIC,),
                      sock: socket.socket | None = None, start: bool = True,
                      **settings: object) -> Node:
        sock = sock or bind_loopback(port)
        url = url_of(sock)
        keypair = keypair or KeyPair.generate()
        config = GossipConfig(chain_id=chain_id, listen_url=url, bootstrap=list(bootstrap),
                              **{**FAST, **settings})
        gossip = Gossip(keypair, config)
        app = web.Application()
        gossip.attach(app)
        runner = web.AppRunner(app)
        node = Node(gossip, runner, url, keypair)

        async def validate(env: Envelope) -> Verdict:
            verdict = node.verdict(env)
            return await verdict if inspect.isawaitable(verdict) else verdict

        async def deliver(env: Envelope) -> None:
            node.delivered.append(env)

        for topic in topics:
            gossip.subscribe(topic, validate, deliver)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        if start:
            await gossip.start()
        nodes.append(node)
        return node

    yield factory
    await asyncio.gather(*(n.stop() for n in nodes))


@pytest.fixture
async def make_raw() -> AsyncIterator[Callable[..., RawPeer]]:
    """Raw protocol peers, closed at teardown."""
    peers: list[RawPeer] = []

    def factory(**kwargs: object) -> RawPeer:
        peer = RawPeer(kwargs.pop("chain_id", CHAIN), **kwargs)  # type: ignore[arg-type]
        peers.append(peer)
        return peer

    yield factory
    await asyncio.gather(*(p.close() for p in peers))
