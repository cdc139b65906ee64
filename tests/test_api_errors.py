"""Every API failure is JSON ``{"error": {"code", "message"}}`` with the right status, never a traceback."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from node.api_base import ApiError, Param, Route, bind, error_middleware
from tests.apinode import Node, expect_error

pytestmark = pytest.mark.asyncio(loop_scope="module")




async def test_unknown_route(node: Node):
    await expect_error(node, "GET", "/no/such/thing", 404, "no such endpoint")


async def test_wrong_method(node: Node):
    async with node.session.post(node.url + "/status") as resp:
        assert resp.status == 405 and "GET" in resp.headers["Allow"]
    await expect_error(node, "DELETE", "/blocks/1", 405, "not allowed")


@pytest.mark.parametrize("path, fragment", [
    ("/blocks/abc", "height must be a non-negative integer"),
    ("/blocks/-1", "non-negative integer"),
    ("/blocks/1.5", "non-negative integer"),
    ("/blocks/0", "at least 1"),
    ("/blocks/99999999999999999999999", "non-negative integer"),
    ("/blocks?limit=101", "at most 100"),
    ("/blocks?limit=0", "at least 1"),
    ("/blocks?limit=ten", "limit must be"),
    ("/blocks?from=x", "from must be"),
    ("/blocks?raw=maybe", "raw must be 1 or 0"),
    ("/blocks?limit=1&limit=2", "more than once"),
    ("/blocks?color=red", "unknown query parameter"),
    ("/commit/abc", "height must be"),
    ("/schedule?count=0", "at least 1"),
    ("/schedule?count=1000", "at most 100"),
    ("/accounts/xyz", "node id"),
    ("/accounts/" + "ab" * 31, "node id"),
    ("/accounts/" + "zz" * 32, "node id"),
    ("/txs/abc", "64 hex"),
    ("/txs/" + "ab" * 33, "64 hex"),
])
async def test_bad_parameters_are_400(node: Node, path: str, fragment: str):
    await expect_error(node, "GET", path, 400, fragment)


@pytest.mark.parametrize("path, fragment", [
    ("/blocks/99999999", "no final block at height 99999999"),
    ("/commit/99999999", "no commit"),
    ("/accounts/" + "ab" * 32, "no account"),
    ("/txs/" + "cd" * 32, "no transaction"),
])
async def test_unknown_objects_are_404(node: Node, path: str, fragment: str):
    await expect_error(node, "GET", path, 404, fragment)


async def test_subscribe_needs_websocket(node: Node):
    await expect_error(node, "GET", "/subscribe", 400, "websocket")


async def test_internal_errors_do_not_leak(caplog):
    """The middleware's 500 path (no real engine fault is reachable on purpose, so a raising route)."""

    async def broken(ctx, request):
        raise RuntimeError("secret detail /etc/key")

    async def refused(ctx, request, *, n):
        raise ApiError(409, f"refused {n}")

    app = web.Application(middlewares=[error_middleware])
    for route in (Route("GET", "/broken", broken, "", "t"),
                  Route("GET", "/refused", refused, "", "t", (Param("n", "query", "uint", "", default=0),))):
        app.router.add_route(route.method, route.path, bind(route, None))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        with caplog.at_level(logging.ERROR, logger="fedchain.api"):
            resp = await client.get("/broken")
            assert resp.status == 500
            assert await resp.json() == {"error": {"code": 500, "message": "internal error"}}
        assert "secret detail" in caplog.text  # logged for the operator, not sent to the client
        resp = await client.get("/refused?n=7")
        assert resp.status == 409 and (await resp.json())["error"]["message"] == "refused 7"
