"""The HTTP API against a real node: a one-delegate chain run in-process by the real daemon wiring.

One node per module (it produces a block every slot on its own), queried over real HTTP on
127.0.0.1 with aiohttp's client; the ``node`` fixture is in ``tests/conftest.py``.
"""

from __future__ import annotations

import time

import aiohttp
import pytest

from consensus.block import Block
from consensus.messages import Commit
from gossip.codec import unpack
from gossip.crypto import KeyPair
from node.api import ROUTES
from tests.apinode import Node, chain_genesis, free_port, start_node

pytestmark = pytest.mark.asyncio(loop_scope="module")




async def test_health_and_status(node: Node):
    assert await node.ok("/health") == {"ok": True}
    status = await node.ok("/status")
    assert status["node_id"] == node.home.keypair.node_id
    assert status["chain_id"] == "api-test"
    assert status["genesis_hash"] == node.home.genesis.hash.hex()
    assert status["final_height"] >= 4 and status["is_delegate"] is True
    assert status["url"] == node.url and status["peers"] == 0


async def test_genesis_is_the_file(node: Node):
    async with node.session.get(node.url + "/genesis") as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.read() == node.home.paths.genesis.read_bytes()


async def test_block_pages(node: Node):
    page = await node.ok("/blocks", **{"from": "1", "limit": "3"})
    assert [b["height"] for b in page["blocks"]] == [1, 2, 3]
    for prev, block in zip(page["blocks"], page["blocks"][1:]):
        assert block["parent_hash"] == prev["hash"]
        assert block["last_commit"]["block_hash"] == prev["hash"]
    newest = await node.ok("/blocks", limit="2")
    heights = [b["height"] for b in newest["blocks"]]
    assert heights == [heights[0], heights[0] + 1] and heights[-1] <= newest["height"]
    assert (await node.ok("/blocks", **{"from": "999999"}))["blocks"] == []


async def test_block_pages_end_with_the_block_that_reaches_the_byte_budget(node: Node):
    one = await node.ok("/blocks", **{"from": "1", "limit": "10", "max_bytes": "1"})
    assert [b["height"] for b in one["blocks"]] == [1] and one["next"] == 2
    page = await node.ok("/blocks", **{"from": "1", "limit": "3", "raw": "1"})  # the chain is at 4 or more
    assert [b["height"] for b in page["blocks"]] == [1, 2, 3] and page["next"] == 4
    size = len((await node.ok("/blocks/2", raw="1"))["raw"])
    two = await node.ok("/blocks", **{"from": "2", "limit": "10", "raw": "1", "max_bytes": str(size + 30)})
    assert [b["height"] for b in two["blocks"]] == [2, 3]  # the second block crossed the budget: the last one
    newest = await node.ok("/blocks")
    assert newest["next"] is None and newest["blocks"][-1]["height"] == newest["height"]


async def test_raw_blocks_verify(node: Node):
    page = await node.ok("/blocks", **{"from": "1", "limit": "4", "raw": "1"})
    decoded = await node.ok("/blocks", **{"from": "1", "limit": "4"})
    assert [set(item) for item in page["blocks"]] == [{"height", "raw"}] * 4
    for item, full in zip(page["blocks"], decoded["blocks"]):
        block = Block.from_wire(unpack(bytes.fromhex(item["raw"])))
        assert block.height == item["height"] == full["height"]
        assert block.hash.hex() == full["hash"] and item["raw"] == full["raw"]
        assert block.verify_signature() and block.body_hashes_ok() is None


async def test_single_block_and_latest(node: Node):
    two = await node.ok("/blocks/2")
    assert two["height"] == 2 and two["producer"] == node.home.keypair.node_id
    raw = await node.ok("/blocks/2", raw="1")
    assert Block.from_wire(unpack(bytes.fromhex(raw["raw"]))).hash.hex() == two["hash"]
    latest = await node.ok("/blocks/latest")
    again = await node.ok(f"/blocks/{latest['height']}")
    assert again["hash"] == latest["hash"]


async def test_commit(node: Node):
    block = await node.ok("/blocks/2")
    commit = await node.ok("/commit/2")
    assert commit["height"] == 2 and commit["block_hash"] == block["hash"]
    raw = await node.ok("/commit/2", raw="1")
    parsed = Commit.from_wire(unpack(bytes.fromhex(raw["raw"])))
    assert parsed.verify("api-test", [node.home.keypair.node_id], 1) is None
    latest = (await node.ok("/status"))["final_height"]
    assert (await node.ok(f"/commit/{latest}"))["height"] == latest


async def test_delegates_and_schedule(node: Node):
    delegates = await node.ok("/delegates")
    assert [d["id"] for d in delegates["delegates"]] == [node.home.keypair.node_id]
    assert delegates["quorum"] == 1
    schedule = await node.ok("/schedule", count="5")
    assert len(schedule["slots"]) == 5
    assert {s["proposer"] for s in schedule["slots"]} == {node.home.keypair.node_id}
    assert len((await node.ok("/schedule"))["slots"]) == 10


async def test_account_and_mempool(node: Node):
    me = node.home.keypair.node_id
    account = await node.ok(f"/accounts/{me}")
    assert account["nonce"] == 0 and account["stake"] >= node.home.genesis.accounts[0]["stake"]  # plus rewards
    assert (await node.ok(f"/accounts/{me.upper()}"))["nonce"] == 0
    pool = await node.ok("/mempool")
    assert pool == {"size": 0, "truncated": False, "txs": []}


async def test_metrics(node: Node):
    async with node.session.get(node.url + "/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await resp.text()
    samples = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples["fedchain_final_height"] >= 4
    assert samples["fedchain_peers"] == 0 and samples["fedchain_mempool_transactions"] == 0
    assert 'fedchain_gossip_dropped_total{reason="bad_signature"}' in samples
    assert "# TYPE fedchain_gossip_messages_total counter" in text


async def test_openapi_describes_every_route(node: Node):
    doc = await node.ok("/openapi.json")
    assert doc["openapi"].startswith("3.")
    served = {(r.method.lower(), r.resource.canonical) for r in node.daemon.web.router.routes()
              if r.resource is not None and r.resource.canonical != "/p2p"}
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == documented
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert [p["name"] for p in op.get("parameters", [])] == [p.name for p in route.params]
    limit = next(p for p in doc["paths"]["/blocks"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 100


async def test_subscribe_streams_new_blocks(node: Node):
    async with node.session.ws_connect(node.url + "/subscribe") as ws:
        seen = []
        deadline = time.monotonic() + 10
        while len(seen) < 2 and time.monotonic() < deadline:
            msg = await ws.receive_json(timeout=5)
            seen.append(msg)
    assert len(seen) == 2
    assert all(isinstance(e, dict) and e.get("type") for e in seen)


async def test_net_info_lists_peers(tmp_path):
    """Two delegates in one loop: each lists the other as a peer."""
    keys = [KeyPair.generate() for _ in range(2)]
    ports = [free_port(), free_port()]
    async with aiohttp.ClientSession() as session:
        nodes = []
        genesis = chain_genesis(keys)
        try:
            for i in range(2):
                nodes.append(await start_node(tmp_path, genesis, keys, i, ports, session))
            await nodes[0].wait_height(2)
            info = await nodes[0].ok("/net_info")
            assert info["n_peers"] == 1
            peer = info["peers"][0]
            assert peer["node_id"] == keys[1].node_id and peer["url"] == nodes[1].url
            assert peer["direction"] in ("in", "out")
            assert (await nodes[0].ok("/status"))["peers"] == 1
        finally:
            for n in nodes:
                await n.daemon.stop()
