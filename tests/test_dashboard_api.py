"""The dashboard's routes and ``/telemetry`` on a real node (a counter chain: no FL sections).
The page itself is driven in a real browser by ``tests/integration/test_dashboard.py``."""

from __future__ import annotations

import re

import aiohttp
import pytest

from gossip.crypto import KeyPair
from node.api_dashboard import ASSETS, CSP
from node.daemon import Daemon
from node.home import load_home
from tests.apinode import Node, chain_genesis, free_port, start_node

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_root_redirects_to_the_dashboard(node: Node):
    async with node.session.get(node.url + "/", allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/dashboard"


async def test_the_page_and_every_asset_it_names_are_served_from_the_package(node: Node):
    async with node.session.get(node.url + "/dashboard") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"] == CSP
        html = await resp.text()
    linked = set(re.findall(r'(?:src|href)="/dashboard/([^"]+)"', html))
    assert linked == set(ASSETS), "the page links exactly the served assets"
    assert not re.search(r"(?:src|href)=\"https?://", html), "no CDN: the page works offline"
    for name, content_type in ASSETS.items():
        async with node.session.get(f"{node.url}/dashboard/{name}") as resp:
            assert resp.status == 200 and resp.content_type == content_type, name
            assert len(await resp.read()) > 100
    async with node.session.get(node.url + "/dashboard/LICENSE.uPlot.txt") as resp:
        assert "MIT License" in await resp.text()


async def test_an_unknown_asset_is_a_json_404(node: Node):
    async with node.session.get(node.url + "/dashboard/../node_key.json") as resp:
        assert resp.status == 404 and resp.content_type == "application/json"


async def test_telemetry_of_a_counter_chain(node: Node):
    await node.wait_height(6)
    t = await node.ok("/telemetry")
    assert t["node_id"] == node.home.keypair.node_id and t["fl"] is False
    heights = [b["height"] for b in t["blocks"]]
    assert heights == sorted(heights) and len(heights) >= 5 and heights[-1] >= 6
    live = [b for b in t["blocks"] if b["finality_s"] is not None]
    assert live and all(0 <= b["finality_s"] < 30 for b in live)
    assert all(b["interval_s"] is None if b["height"] == 1 else b["interval_s"] >= 0 for b in t["blocks"])
    assert t["process"]["rss_bytes"] > 10 * 2**20 and t["process"]["cpu_seconds"] > 0
    assert set(t["event_loop_lag_ms"]) == {"p50_ms", "p99_ms", "max_ms"}
    assert t["model"] == [] and t["rounds"] == [] and t["peers"] == []


async def test_a_restarted_node_reads_its_recent_blocks_back(tmp_path):
    """The dashboard of a node that just restarted is not empty: /telemetry reads the recent
    blocks back from the store (without a finality latency: this process did not see them)."""
    keys = [KeyPair.generate()]
    port = free_port()
    async with aiohttp.ClientSession() as session:
        first = await start_node(tmp_path, chain_genesis(keys), keys, 0, [port], session)
        try:
            height = await first.wait_height(5)
        finally:
            await first.daemon.stop()
        home = load_home(tmp_path / "node0")
        daemon = Daemon(home)
        await daemon.start()
        try:
            again = Node(home, daemon, session)
            blocks = (await again.ok("/telemetry"))["blocks"]
            old = [b for b in blocks if b["height"] <= height]
            assert [b["height"] for b in old] == list(range(1, height + 1))
            assert all(b["finality_s"] is None for b in old)
            assert old[0]["interval_s"] is None and all(b["interval_s"] >= 0 for b in old[1:])
        finally:
            await daemon.stop()
