"""The node daemon: wires identity, storage, gossip, consensus, the application and the HTTP API.

One process per device. It serves the HTTP API and the gossip endpoint on one port, runs the
consensus engine, and stops cleanly on SIGTERM or SIGINT (open connections closed, SQLite closed),
so a supervisor (systemd, ``fedchain testnet up``) can stop it without losing anything.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from functools import partial
from pathlib import Path

import aiohttp
import uvloop
from aiohttp import web

from consensus.app import CounterApp
from consensus.engine import Engine, EngineConfig
from consensus.proposer import BlockProposer
from consensus.store import ChainStore
from gossip import Gossip
from node.api import build_api
from node.connections import ConnectionGuard, GuardedRunner
from node.faults import (
    DoubleSigningProposer,
    MempoolFlooder,
    SkewedClock,
    VoteWithholdingNetwork,
    height_lie_middleware,
)
from node.fetcher import HttpBlockFetcher
from node.home import Home, load_home
from node.looplag import LoopLag
from node.prometheus import NodeMetrics
from node.telemetry import Telemetry

log = logging.getLogger("fedchain.node")

SHUTDOWN_GRACE_S = 5.0


def log_formatter(log_format: str) -> logging.Formatter:
    """Plain lines for people, or one JSON object per line (``time``, ``level``, ``logger``,
    ``message``, ``exc_info`` when there is one) for log shippers such as Fluent Bit or Vector."""
    if log_format == "json":
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter("{levelname}{name}{message}", style="{", timestamp="time",
                             rename_fields={"levelname": "level", "name": "logger"})
    return logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(home: Home) -> None:
    level = getattr(logging, home.config.log_level.upper())
    fmt = log_formatter(home.config.log_format)
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(home.paths.log_file)]
    root = logging.getLogger()
    root.setLevel(level)
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)


class Daemon:
    """A running node. ``start()`` brings every part up in dependency order; ``stop()`` reverses it."""

    def __init__(self, home: Home) -> None:
        self.home = home
        cfg = home.config
        if cfg.fault.any_enabled:
            log.warning("FAULT INJECTION ENABLED (%s): this node misbehaves on purpose", cfg.fault)
        self.clock = SkewedClock(cfg.fault.clock_offset_ms) if cfg.fault.clock_offset_ms else None
        self.gossip = Gossip(home.keypair, cfg.network.gossip_config(home.genesis.chain_id), clock=self.clock)
        self.fl = None
        if home.genesis.app.get("kind") == "fl":
            from node.fl.service import (
                FLService,  # torch is only loaded on federated-learning chains
            )

            self.fl = FLService(home, self.gossip)
            self.app = self.fl.app
        else:
            self.app = CounterApp()
        # after the application accepted its task and data: a node that refuses them leaves no chain database
        self.store = ChainStore(home.paths.chain_db, home.genesis)
        self.loop_lag = LoopLag()
        self.metrics = NodeMetrics(fl=self.fl is not None)
        self.telemetry: Telemetry | None = None
        self.web = web.Application(client_max_size=cfg.api.max_body)
        self.gossip.attach(self.web)
        self.session: aiohttp.ClientSession | None = None
        self.engine: Engine | None = None
        self.runner: web.AppRunner | None = None
        self.connections: ConnectionGuard | None = None
        self._lag_task: asyncio.Task | None = None
        self._fault_tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        cfg, fault = self.home.config, self.home.config.fault
        self.session = aiohttp.ClientSession()
        proposer = (partial(DoubleSigningProposer, self.home.keypair, self.gossip) if fault.double_sign
                    else BlockProposer)
        network = VoteWithholdingNetwork(self.gossip) if fault.withhold_votes else self.gossip
        fetcher = HttpBlockFetcher(self.session, max_block_bytes=self.home.genesis.max_block_bytes)
        self.engine = Engine(self.home.keypair, self.home.genesis, self.store, self.app, network, fetcher,
                             EngineConfig(max_message=cfg.network.max_message, checkpoint=cfg.sync.checkpoint),
                             proposer=proposer, clock=self.clock)
        self.telemetry = Telemetry(self.engine.view, self.gossip, self.metrics, self.loop_lag, fl=self.fl,
                                   session=self.session)
        api = build_api(self.web, self.engine, self.gossip, cfg, self.home.genesis, self.telemetry, self.fl)
        if fault.lie_height:
            self.web.middlewares.append(height_lie_middleware())  # innermost: the limits still apply
        self._lag_task = asyncio.create_task(self.loop_lag.run(), name="loop-lag")
        # A stopping node lets requests in flight finish for a few seconds, not aiohttp's minute:
        # a supervisor (systemd, Kubernetes) must see it stop in time.
        self.connections = api.connections
        self.runner = GuardedRunner(self.web, self.connections, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self.runner.setup()
        self.connections.start()
        await web.TCPSite(self.runner, cfg.network.host, cfg.network.port).start()
        await self.gossip.start()
        if self.fl is not None:
            await self.fl.obtain_eval_set(self.session)  # rounds cannot be verified without it
        await self.engine.start()
        if self.fl is not None:
            await self.fl.start(self.engine.view, self.session)
        if fault.flood_mempool:
            flooder = MempoolFlooder(self.engine.view, self.home.keypair, self.home.genesis.chain_id)
            self._fault_tasks.append(asyncio.create_task(flooder.run(), name="fault-flood-mempool"))
        await self.telemetry.start()
        log.info("node %s serving %s", self.home.keypair.node_id[:12], cfg.network.url)

    async def stop(self) -> None:
        for task in self._fault_tasks:
            task.cancel()
        await asyncio.gather(*self._fault_tasks, return_exceptions=True)
        if self._lag_task is not None:
            self._lag_task.cancel()
        if self.telemetry is not None:
            await self.telemetry.stop()
        # Inputs first (peers' messages, then HTTP requests, which may still read the chain and
        # the blob store), then the engine (a finalizing block writes to the FL blob store), then
        # the FL service: a message delivered after its store closed once failed at every stop.
        await self.gossip.stop()
        if self.connections is not None:
            await self.connections.stop()
        if self.runner is not None:
            await self.runner.cleanup()
        if self.engine is not None:
            await self.engine.stop()
        if self.fl is not None:
            await self.fl.stop()
        if self.session is not None:
            await self.session.close()
        self.store.close()
        log.info("node stopped")


async def serve(home: Home) -> None:
    """Run until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    daemon = Daemon(home)
    starting = asyncio.create_task(daemon.start())
    stopping = asyncio.create_task(stop.wait())
    try:  # a start that waits (for the evaluation set from peers) still ends on a signal
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()
            await stopping
    finally:
        for task in (starting, stopping):
            task.cancel()
        await asyncio.gather(starting, stopping, return_exceptions=True)
        await daemon.stop()


def run(home_dir: Path) -> None:
    """Entry point of ``fedchain node start``: load the home (errors are ConfigError) and serve."""
    home = load_home(home_dir)
    setup_logging(home)
    uvloop.run(serve(home))
