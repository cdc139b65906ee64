"""The operator's dashboard, served by every node: ``/`` redirects to ``/dashboard``.

The page is static HTML, CSS and one small script (``node/dashboard/``), plus the uPlot chart
library vendored with its licence: no CDN and no build step, so it works on a device with no
Internet. The script reads this node's JSON API and follows ``/subscribe``; ``/telemetry`` gives
it what the rest of the API does not: recent block times and finality, the model's accuracy per
height, each round's decisions per sender, peers' round trips and privacy, and this process's
resource use (``node/telemetry.py``).

Every asset has its own route in the table (so the API's limits and the OpenAPI document cover
it) and is read from the package once. The HTML is served with a Content-Security-Policy that
allows only this origin's scripts, styles and connections: whatever a peer puts in a reason or a
moniker is shown as text, never run.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web

from node.api_base import Route

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
ASSETS = {  # file in node/dashboard -> content type
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
    "uPlot.iife.min.js": "text/javascript",
    "uPlot.min.css": "text/css",
    "LICENSE.uPlot.txt": "text/plain",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP}


@cache
def asset(name: str) -> bytes:
    return (DASHBOARD_DIR / name).read_bytes()


async def get_root(ctx: Any, request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/dashboard"})


async def get_dashboard(ctx: Any, request: web.Request) -> web.Response:
    return web.Response(body=asset("index.html"), content_type="text/html", charset="utf-8", headers=HEADERS)


def _asset_handler(name: str, content_type: str) -> Any:
    async def get_asset(ctx: Any, request: web.Request) -> web.Response:
        return web.Response(body=asset(name), content_type=content_type, charset="utf-8", headers=HEADERS)

    get_asset.__name__ = "get_dashboard_" + re.sub(r"\W", "_", name).lower()  # the OpenAPI operationId
    return get_asset


async def get_telemetry(ctx: Any, request: web.Request) -> dict:
    """What this node saw recently, for the dashboard (``node/telemetry.py``)."""
    return {"node_id": ctx.engine.status()["node_id"], "moniker": ctx.config.moniker,
            "fl": ctx.fl is not None, **ctx.telemetry.snapshot()}


TEXT = {"type": "string"}

DASHBOARD_ROUTES: tuple[Route, ...] = (
    Route("GET", "/", get_root, "Redirects to the dashboard.", "dashboard", response=TEXT, limit="light",
          redirect="/dashboard"),
    Route("GET", "/dashboard", get_dashboard, "The operator's dashboard (HTML; it reads this API and /subscribe).",
          "dashboard", response=TEXT, content_type="text/html"),
    *(Route("GET", f"/dashboard/{name}", _asset_handler(name, ctype), f"Dashboard asset {name}.", "dashboard",
            response=TEXT, content_type=ctype) for name, ctype in ASSETS.items()),
    Route("GET", "/telemetry", get_telemetry, "What this node saw recently: block intervals and finality, the "
          "model's accuracy per height, each round's decisions, peers' round trips and privacy, event-loop lag, "
          "resident memory and CPU.", "dashboard"),
)
