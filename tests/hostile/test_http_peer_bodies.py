"""A malicious peer answers the victim's HTTP requests with huge bodies.

The attacker joins the victim's gossip with a real handshake, advertising the URL of an HTTP
server of its own. The victim's block sync then asks that server for ``/status`` every second
(and for ``/blocks`` once the peer claims to be far ahead); the server answers with 96 MiB
bodies, half of them chunked with no length, the others with an honest but huge
``Content-Length``. A victim must read no more of a peer's answer than what it asked for can
need, so its memory and event loop stay unaffected.

The same holds for the model-update fetch of a federated-learning node, tested against the same
kind of hostile server with the node's real fetch path.
"""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
from functools import partial

import aiohttp
import pytest
from aiohttp import web

from cli.testnet import create_testnet
from gossip import Gossip
from gossip.crypto import sha256
from node.home import load_home
from tests.apinode import free_port
from tests.hostile.harness import Bounds, run_hostile
from tests.hostile.peer import HostilePeer
from tests.hostile.webattack import describe, start_victims
from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration

BODY = 96 * 1024 * 1024
CUT_BELOW = 24 * 1024 * 1024  # what loopback socket buffers can absorb after the victim stopped reading
BOUNDS = Bounds(rss_growth_mb=48, health_p99_ms=250, health_max_ms=1500)


async def _huge(request: web.Request, sent: list[int], *, prefix: bytes, declared: bool) -> web.StreamResponse:
    """Stream ``prefix`` then padding up to BODY bytes; record how much the client took."""
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    if declared:
        resp.content_length = BODY
    written = 0
    try:
        await resp.prepare(request)
        await resp.write(prefix)
        written = len(prefix)
        chunk = b"x" * (1 << 16)
        while written < BODY - 2:
            await resp.write(chunk[:BODY - 2 - written])
            written += min(len(chunk), BODY - 2 - written)
        await resp.write(b'"}')
        written += 2
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        sent.append(written)
    return resp


async def hostile_http_peer(victim_url: str, chain_id: str, port: int, duration: float) -> dict:
    """Serve huge answers on 127.0.0.1:port while connected to the victim as a gossip peer."""
    served: dict[str, list[int]] = {"status": [], "blocks": [], "update": []}
    count = {"status": 0}

    async def status(request: web.Request) -> web.StreamResponse:
        count["status"] += 1
        if count["status"] % 2 == 0:  # claim to be far ahead, so the victim asks for blocks
            return web.json_response({"final_height": 10**9})
        return await _huge(request, served["status"], prefix=b'{"final_height": 1, "pad": "', declared=False)

    async def blocks(request: web.Request) -> web.StreamResponse:
        return await _huge(request, served["blocks"], prefix=b'{"blocks": [], "pad": "', declared=True)

    async def update(request: web.Request) -> web.StreamResponse:
        return await _huge(request, served["update"], prefix=b'{"raw": "', declared=False)

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/blocks", blocks)
    app.router.add_get("/fl/updates/{id}", update)
    await stay_connected(app, port, victim_url, chain_id, duration)
    return served


async def stay_connected(app: web.Application, port: int, victim_url: str, chain_id: str, duration: float) -> None:
    """Serve ``app`` on 127.0.0.1:port and stay the victim's gossip peer, advertising it, for ``duration`` s."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with HostilePeer(chain_id, listen_url=f"http://127.0.0.1:{port}") as peer:
            await peer.connect(victim_url)
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline and not peer.closed:
                try:
                    await peer.receive(timeout=max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    pass
    finally:
        await runner.cleanup()


async def update_servers(victim_url: str, chain_id: str, ports: list[int], payload_hex: str, duration: float
                         ) -> list[int]:
    """Two peers of the victim: on ports[0] a liar (a huge answer for one id, bytes of another
    update for every other id), on ports[1] an honest peer holding the update ``payload``."""
    payload_id = sha256(bytes.fromhex(payload_hex)).hex()
    sent: list[int] = []

    async def liar(request: web.Request) -> web.StreamResponse:
        if request.match_info["id"] == "ff" * 32:
            return await _huge(request, sent, prefix=b'{"id": "", "raw": "', declared=False)
        return web.json_response({"id": request.match_info["id"], "raw": "00" * 64})

    async def honest(request: web.Request) -> web.Response:
        if request.match_info["id"] != payload_id:
            raise web.HTTPNotFound()
        return web.json_response({"id": payload_id, "raw": payload_hex})

    apps = [web.Application(), web.Application()]
    apps[0].router.add_get("/fl/updates/{id}", liar)
    apps[1].router.add_get("/fl/updates/{id}", honest)
    await asyncio.gather(*(stay_connected(app, port, victim_url, chain_id, duration) for app, port in zip(apps, ports)))
    return sent


@pytest.mark.timeout(180)
def test_huge_answers_from_a_peer_are_cut_at_what_the_request_can_need(make_testnet):
    victims = start_victims(make_testnet(4, slot_ms=1000))
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    with victims.monitor() as monitor:
        served = run_hostile(partial(hostile_http_peer, net.url(0), chain_id, free_port(), 20.0), timeout=90)
        print(f"\nbytes taken per answer: {served}\n{describe(monitor)}")
        victims.check(monitor, BOUNDS)
    # the victim asks the liar again and again, backing off (2 s, 4 s, ...) as it keeps failing
    assert len(served["status"]) >= 2 and served["blocks"], f"the victim did not ask the attacker: {served}"
    assert max(served["status"] + served["blocks"]) < CUT_BELOW, served


@pytest.mark.timeout(120)
async def test_update_fetch_takes_at_most_one_update_and_skips_a_lying_peer(tmp_path):
    """The FL node's own fetch path (``FLService.fetch_update``) against peers met over real gossip."""
    from node.fl.service import FLService  # torch: only for this test

    port = free_port()
    home = load_home(create_testnet(tmp_path, 1, base_port=port, app="fl")[0].paths.root)
    gossip = Gossip(home.keypair, home.config.network.gossip_config(home.genesis.chain_id))
    app = web.Application()
    gossip.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await gossip.start()
    fl = FLService(home, gossip)
    ports, payload = [free_port(), free_port()], os.urandom(2000)
    attack = asyncio.create_task(asyncio.to_thread(run_hostile, partial(
        update_servers, home.config.network.url, home.genesis.chain_id, ports, payload.hex(), 20.0), timeout=60))
    try:
        urls = {f"http://127.0.0.1:{p}" for p in ports}
        await asyncio.to_thread(wait_for, lambda: urls <= {p.url for p in gossip.peers()}, 30, "both peers")
        liar = next(p.node_id for p in gossip.peers() if p.url.endswith(str(ports[0])))
        async with aiohttp.ClientSession() as session:
            fl.session = session
            tracemalloc.start()
            try:
                huge = await fl.fetch_update(b"\xff" * 32, liar)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            served = await fl.fetch_update(sha256(payload), liar)
    finally:
        await gossip.stop()
        await runner.cleanup()
        await fl.stop()
    sent = await attack
    cap = 2 * fl.settings.max_update_bytes
    print(f"\nupdate fetch: peak {peak / 2**20:.1f} MiB allocated, liar wrote {sent} bytes")
    assert huge is None and peak < cap + 4 * 2**20, f"{peak / 2**20:.0f} MiB allocated for one update"
    assert sent and max(sent) < CUT_BELOW, sent
    assert served == payload, "the lying proposer's bytes were taken, or the honest peer was never asked"
