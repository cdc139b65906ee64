"""node/api_limits.py: who a client is, and the token buckets its requests are counted in."""

from __future__ import annotations

import pytest

from node.api_limits import TokenBucket, client_key


@pytest.mark.parametrize("remote, key", [
    ("127.0.0.2", "127.0.0.2"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one subscriber's /64 is one client
    ("::ffff:192.0.2.7", "192.0.2.7"),
    (None, "unknown"),
])
def test_client_key(remote, key):
    assert client_key(remote) == key


def test_bucket_refills_up_to_its_burst_and_says_how_long_to_wait():
    bucket = TokenBucket(rate=2, burst=3, tokens=3, stamp=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == 2  # never more than the burst


def test_a_charge_puts_the_bucket_in_debt_until_repaid():
    bucket = TokenBucket(rate=100, burst=100, tokens=100, stamp=0.0)
    bucket.charge(350, 0.0)
    assert bucket.debt(0.0) == pytest.approx(2.51)
    assert bucket.debt(2.0) > 0 and bucket.debt(2.6) == 0.0


async def test_a_client_gone_before_its_answer_is_no_error(caplog):
    """A client that hangs up while its request is handled (a timeout on its side, a phone that
    lost signal) used to leave an ERROR and a traceback in the node's log for every such request;
    it is routine, not a fault of the node."""
    import asyncio
    import logging
    import socket
    import struct

    from aiohttp import web

    from node.api_base import Route
    from node.api_limits import Limiter
    from node.config_api import ApiConfig
    from tests.localserve import serve

    gate, entered = asyncio.Event(), asyncio.Event()
    held: list[web.Request] = []

    async def slow(request: web.Request) -> web.Response:
        held.append(request)
        entered.set()
        await gate.wait()
        return web.json_response({"ok": True})

    limiter = Limiter(ApiConfig(), (Route("GET", "/slow", slow, "slow", "test"),))
    app = web.Application(middlewares=[limiter.middleware])
    app.router.add_get("/slow", slow)
    runner, port = await serve(app)
    try:
        with caplog.at_level(logging.DEBUG):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: node\r\n\r\n")
            await asyncio.wait_for(entered.wait(), 5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # a reset: the answer has nowhere to go
            async with asyncio.timeout(5):
                while held[0].transport is not None and not held[0].transport.is_closing():
                    await asyncio.sleep(0.01)
                gate.set()
                while limiter.inflight:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0)  # aiohttp finishes the request after the middleware
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, [r.getMessage() for r in errors]
    finally:
        await runner.cleanup()
