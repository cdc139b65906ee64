"""The node's HTTP API (aiohttp), modelled on CometBFT's RPC; see ``docs/node.md``.

:func:`build_api` registers every route of the route tables in ``api_node.py``, ``api_chain.py``,
``fl/api.py`` and ``api_dashboard.py`` on the daemon's application (which also carries the gossip ``/p2p`` endpoint:
one port per node), adds the rate and concurrency limits (``api_limits.py``) and the JSON error
middleware, and serves the OpenAPI document generated from the same tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from consensus.genesis import Genesis
from node.api_base import Route, bind, error_middleware
from node.api_limits import Limiter
from node.api_chain import CHAIN_ROUTES
from node.api_dashboard import DASHBOARD_ROUTES
from node.api_node import NODE_ROUTES, VERSION, close_subscribers
from node.config import NodeConfig
from node.fl.api import FL_ROUTES
from node.openapi import build_openapi

ROUTES: tuple[Route, ...] = NODE_ROUTES + CHAIN_ROUTES + FL_ROUTES + DASHBOARD_ROUTES
"""Every API route; ``/blocks/latest`` precedes ``/blocks/{height}`` so it is matched first."""

@dataclass
class ApiContext:
    """What the handlers see: the engine's read side and submit, gossip's peers and counters."""

    engine: Any  # consensus.views.ChainView: the engine's read side, tx submission and events
    gossip: Any
    config: NodeConfig
    genesis: Genesis
    genesis_text: str = ""
    openapi: dict = field(default_factory=dict)
    subscribers: set = field(default_factory=set)  # open /subscribe WebSockets, closed at shutdown
    fl: Any = None  # node.fl.service.FLService on a federated-learning chain
    telemetry: Any = None  # node.telemetry.Telemetry: metrics registry, event-loop lag, history, peer probes
    limiter: Limiter | None = None
    version: str = VERSION


def genesis_text(genesis: Genesis) -> str:
    """The genesis JSON with the exact formatting of ``Genesis.save`` (sorted keys, indent 2)."""
    return json.dumps(genesis.to_dict(), sort_keys=True, indent=2) + "\n"


def openapi_document(routes: tuple[Route, ...] = ROUTES) -> dict:
    return build_openapi(
        routes, title="fedchain node API", version=VERSION,
        description="HTTP API of one fedchain node. Errors are JSON: {\"error\": {\"code\": status, "
                    "\"message\": text}}. The gossip WebSocket /p2p shares this port and is not part of this API.")


def build_api(app: web.Application, engine: Any, gossip: Any, config: NodeConfig, genesis: Genesis,
              telemetry: Any, fl: Any = None) -> ApiContext:
    """Register the API on ``app`` (before it starts) and return the handlers' shared context;
    the metrics registry of ``telemetry`` reads the node's state through that context."""
    ctx = ApiContext(engine.view, gossip, config, genesis, genesis_text(genesis), openapi_document(), fl=fl,
                     telemetry=telemetry, limiter=Limiter(config.api, ROUTES))
    telemetry.metrics.collect_state(ctx)
    app.middlewares.extend([ctx.limiter.middleware, error_middleware])
    for route in ROUTES:
        app.router.add_route(route.method, route.path, bind(route, ctx))
    app.on_shutdown.append(lambda _app: close_subscribers(ctx))
    return ctx
