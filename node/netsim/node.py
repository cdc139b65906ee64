"""One simulated node: the real gossip service, consensus engine, chain store and application.

What a daemon wires up (``node/daemon.py``), minus its HTTP server: the gossip service dials and
accepts through the simulated network, the engine reads the simulation's clock, the chain store
is a real SQLite database (on tmpfs) whose writes run inline, and catch-up sync asks other
nodes for blocks through :class:`SimFetcher`, which answers from their chain views what their
HTTP API would, after the time the request and answer take on the simulated link. A crash
drops the node's connections and tasks without a clean shutdown; its database keeps what was
committed, and a restart resumes from it as a daemon does.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.engine import Engine, EngineConfig
from consensus.genesis import Genesis
from consensus.store import ChainStore
from gossip import Gossip, GossipConfig
from gossip.codec import pack
from gossip.crypto import KeyPair
from gossip.envelope import Envelope
from gossip.pull import PullRule
from node.netsim.loop import InlineExecutor
from node.netsim.network import Network
from node.netsim.updates import MAX_BODY, TOPIC, DissentingApp, Stored, UpdateApp

EPOCH_MS = 1_700_000_000_000
"""Wall-clock time at virtual time zero (fixed: a run reads no real clock)."""
PAGE_BYTES = 1024 * 1024


def node_ip(i: int) -> str:
    """Node ``i``'s address: distinct, in 127.0.0.0/8 (never 127.0.0.1, which is every local
    daemon's and exempt from IP colocation scoring). Nothing is ever sent to it: the simulated
    network only uses it as a name."""
    return f"127.{100 + i // 62500}.{(i // 250) % 250}.{i % 250 + 1}"


class SimClock:
    """Virtual time for the engine (``now_ms``) and the gossip layer (``monotonic``, ``wall_ms``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def wall_ms(self) -> int:
        return EPOCH_MS + int(self._loop.time() * 1000)

    def now_ms(self) -> int:
        return self.wall_ms()


@dataclass
class NodeSpec:
    index: int
    keypair: KeyPair
    ip: str
    bootstrap: list[str]

    @property
    def url(self) -> str:
        return f"http://{self.ip}:26657"

    @property
    def node_id(self) -> str:
        return self.keypair.node_id


class SimFetcher:
    """:class:`consensus.sync.BlockFetcher` over the simulated network, answering what a peer's
    ``/status``, ``/blocks?raw=1``, ``/commit/{h}?raw=1`` and ``/fl/updates/{id}`` would. ``lookup``
    finds a node by its URL or its node id."""

    def __init__(self, net: Network, ip: str, lookup: Callable[[str], SimNode | None],
                 peers: Callable[[], list[str]] = list) -> None:
        """``peers`` lists the URLs of the node's connected peers (where a missing update is
        looked for after its producer)."""
        self._net = net
        self._ip = ip
        self._lookup = lookup
        self._peers = peers

    async def _reach(self, url: str) -> SimNode:
        node = self._lookup(url)
        if node is None or not node.running:
            await asyncio.sleep(2 * self._net.params.latency_s)
            raise ConnectionRefusedError(f"{url} is down")
        if not self._net.reachable(self._ip, node.spec.ip):
            await asyncio.sleep(5.0)
            raise TimeoutError(f"{url} is unreachable")
        await asyncio.sleep(2 * self._net.latency(self._ip, node.spec.ip))
        return node

    async def _transfer(self, node: SimNode, nbytes: int) -> None:
        await asyncio.sleep(self._net.latency(self._ip, node.spec.ip) + nbytes / self._net.params.bandwidth)

    async def final_height(self, url: str) -> int:
        node = await self._reach(url)
        assert node.engine is not None
        return node.engine.executor.state.height  # /status's final_height (the whole status hashes the genesis)

    async def blocks(self, url: str, from_height: int, limit: int) -> list[bytes]:
        node = await self._reach(url)
        assert node.engine is not None
        raws: list[bytes] = []
        for block in node.engine.view.blocks(from_height, limit):
            raws.append(block.encode())
            if sum(map(len, raws)) >= PAGE_BYTES:
                break
        await self._transfer(node, sum(map(len, raws)))
        return raws

    async def commit(self, url: str, height: int) -> bytes | None:
        node = await self._reach(url)
        assert node.engine is not None
        commit = node.engine.view.commit(height)
        raw = pack(commit.to_wire()) if commit is not None else None
        await self._transfer(node, len(raw or b""))
        return raw

    async def update(self, producer: str, uid: bytes) -> Envelope | None:
        """An update a verifying delegate lacks: from the block's producer, else from each peer in
        turn (as ``FLService.fetch_update``; the caller checks what it gets)."""
        for source in [producer, *(url for url in self._peers() if url != producer)]:
            try:
                node = await self._reach(source)
            except (ConnectionError, TimeoutError):
                continue
            assert node.app is not None
            env = node.app.held(uid)
            await self._transfer(node, len(env.body) if env is not None else 0)
            if env is not None:
                return env
        return None


class SimNode:
    """A node's full stack, started, crashed and restarted by the simulation."""

    def __init__(self, spec: NodeSpec, genesis: Genesis, net: Network, clock: SimClock, data_dir: Path,
                 gossip_settings: dict[str, Any], seed: int, lookup: Callable[[str], SimNode | None],
                 shelf: Callable[[bytes], bytes] = bytes, dissent: bool = False) -> None:
        self.spec = spec
        self.genesis = genesis
        self.net = net
        self.clock = clock
        self.db = data_dir / f"node{spec.index}.sqlite"
        self.gossip_settings = gossip_settings
        self.seed = seed
        self.lookup = lookup
        self.shelf = shelf
        self.app_class = DissentingApp if dissent else UpdateApp
        self.gossip: Gossip | None = None
        self.engine: Engine | None = None
        self.store: ChainStore | None = None
        self.app: UpdateApp | None = None
        self.running = False
        self.incarnation = 0
        self.on_start: list[Callable[[SimNode], None]] = []
        self.stored: Stored = {}
        """The updates this node admitted or fetched, kept across crashes (its blob store)."""

    def _peer_urls(self) -> list[str]:
        return [p.url for p in self.gossip.peers() if p.url] if self.gossip is not None else []

    async def start(self) -> None:
        """Bring the stack up (from the stored chain, after a crash)."""
        spec = self.spec
        self.incarnation += 1
        rng = random.Random(f"node:{self.seed}:{spec.index}:{self.incarnation}")
        config = GossipConfig(chain_id=self.genesis.chain_id, listen_url=spec.url, bootstrap=list(spec.bootstrap),
                              dial_scope="local", **self.gossip_settings)
        self.gossip = Gossip(spec.keypair, config, transport=self.net.dialer(spec.ip), clock=self.clock, rng=rng)
        self.store = ChainStore(self.db, self.genesis, writer=InlineExecutor())
        fetcher = SimFetcher(self.net, spec.ip, self.lookup, peers=self._peer_urls)
        self.app = self.app_class(self.genesis.chain_id, fetcher.update, self.shelf, self.stored)
        self.gossip.subscribe(TOPIC, self.app.validate, self.app.deliver, pull=PullRule(MAX_BODY))
        self.engine = Engine(spec.keypair, self.genesis, self.store, self.app, self.gossip, fetcher,
                             EngineConfig(), clock=self.clock,
                             rng=random.Random(f"sync:{self.seed}:{spec.index}:{self.incarnation}"))
        for hook in self.on_start:
            hook(self)
        self.net.listen(spec.url, spec.ip, self.gossip)
        await self.gossip.start()
        await self.engine.start()
        self.running = True

    async def crash(self) -> None:
        """Power off: connections drop, tasks stop mid-flight; the database keeps what it had."""
        if not self.running:
            return
        self.running = False
        self.net.crash(self.spec.url)
        assert self.engine is not None and self.gossip is not None and self.store is not None
        await self.engine.stop()
        await self.gossip.stop()
        self.store.close()

    async def stop(self) -> None:
        await self.crash()

