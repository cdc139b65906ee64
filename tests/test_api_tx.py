"""POST /txs against a real node: both body formats, inclusion, and each kind of refusal."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from consensus.tx import Tx
from gossip.codec import pack
from gossip.crypto import KeyPair
from tests.apinode import Node, chain_genesis, expect_error, free_port, start_node

pytestmark = pytest.mark.asyncio(loop_scope="module")

MSGPACK = {"Content-Type": "application/msgpack"}


async def next_nonce(node: Node) -> int:
    return (await node.ok(f"/accounts/{node.home.keypair.node_id}"))["nonce"] + 1


def stake_tx(node: Node, nonce: int, amount: int = 1, chain_id: str = "api-test",
             key: KeyPair | None = None) -> Tx:
    key = key or node.home.keypair
    return Tx("stake", chain_id, key.node_id, nonce, [amount]).signed(key)


async def post(node: Node, body: bytes, headers: dict) -> tuple[int, dict]:
    async with node.session.post(node.url + "/txs", data=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def wait_committed(node: Node, tx_hash: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, found = await node.get(f"/txs/{tx_hash}")
        if status == 200 and found["status"] == "committed":
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"tx {tx_hash} not committed in {timeout} s")


async def test_msgpack_tx_is_included(node: Node):
    before = await node.ok(f"/accounts/{node.home.keypair.node_id}")
    tx = stake_tx(node, await next_nonce(node), amount=7)
    status, answer = await post(node, pack(tx.to_wire()), MSGPACK)
    assert status == 200 and answer == {"hash": tx.hash.hex()}
    found = await wait_committed(node, tx.hash.hex())
    assert found["tx"]["kind"] == "stake" and found["height"] >= 1
    block = await node.ok(f"/blocks/{found['height']}")
    assert tx.hash.hex() in [t["hash"] for t in block["txs"]]
    after = await node.ok(f"/accounts/{node.home.keypair.node_id}")
    assert after["nonce"] == before["nonce"] + 1 and after["stake"] >= before["stake"] + 7


async def test_json_hex_tx_is_accepted(node: Node):
    tx = stake_tx(node, await next_nonce(node))
    status, answer = await post(node, json.dumps({"tx": pack(tx.to_wire()).hex()}).encode(),
                                {"Content-Type": "application/json"})
    assert status == 200 and answer["hash"] == tx.hash.hex()
    await wait_committed(node, tx.hash.hex())


async def test_replayed_tx_is_422(node: Node):
    tx = stake_tx(node, await next_nonce(node))
    assert (await post(node, pack(tx.to_wire()), MSGPACK))[0] == 200
    await wait_committed(node, tx.hash.hex())
    await expect_error(node, "POST", "/txs", 422, "rejected", data=pack(tx.to_wire()), headers=MSGPACK)


async def test_bad_signature_is_422(node: Node):
    tx = stake_tx(node, await next_nonce(node))
    forged = Tx(tx.kind, tx.chain_id, tx.sender, tx.nonce, [10**6], tx.signature)
    await expect_error(node, "POST", "/txs", 422, "rejected", data=pack(forged.to_wire()), headers=MSGPACK)


async def test_other_chain_is_422(node: Node):
    tx = stake_tx(node, await next_nonce(node), chain_id="another-chain")
    await expect_error(node, "POST", "/txs", 422, "rejected", data=pack(tx.to_wire()), headers=MSGPACK)


async def test_unknown_sender_is_422(node: Node):
    tx = stake_tx(node, 1, key=KeyPair.generate())
    await expect_error(node, "POST", "/txs", 422, "rejected", data=pack(tx.to_wire()), headers=MSGPACK)


@pytest.mark.parametrize("body, headers, status, fragment", [
    (b"\xc1", MSGPACK, 400, "malformed"),
    (pack(["stake", "api-test"]), MSGPACK, 400, "6-element"),
    (pack(["mint", "api-test", "ab" * 32, 1, [1], b""]), MSGPACK, 400, "unknown tx kind"),
    (b"", MSGPACK, 400, "empty"),
    (b"{nope", {"Content-Type": "application/json"}, 400, "not valid JSON"),
    (b'{"tx": "zz"}', {"Content-Type": "application/json"}, 400, "not valid hex"),
    (b'{"tx": 5}', {"Content-Type": "application/json"}, 400, "must be"),
    (b'{"tx": "00", "x": 1}', {"Content-Type": "application/json"}, 400, "must be"),
    (b"stake 5", {"Content-Type": "text/plain"}, 415, "content type"),
    (b"x" * (2 * 1024 * 1024), MSGPACK, 413, "limit"),
])
async def test_bad_bodies(node: Node, body: bytes, headers: dict, status: int, fragment: str):
    await expect_error(node, "POST", "/txs", status, fragment, data=body, headers=headers)


async def test_chunked_oversized_body_is_413(node: Node):
    async def chunks():
        for _ in range(40):
            yield b"\x00" * 64 * 1024

    await expect_error(node, "POST", "/txs", 413, "limit", data=chunks(), headers=MSGPACK)



async def test_a_stopping_node_says_goodbye_to_its_subscribers(tmp_path):
    """An open /subscribe WebSocket once held a stopping node for most of a minute: the server's
    graceful shutdown waited for the long-lived handler. The node now closes it (1001)."""
    async with aiohttp.ClientSession() as session:
        keys = [KeyPair.generate()]
        n = await start_node(tmp_path, chain_genesis(keys), keys, 0, [free_port()], session)
        await n.wait_height(2)
        ws = await session.ws_connect(n.url + "/subscribe")
        await ws.receive(timeout=10)  # an event: the subscription is live
        await asyncio.wait_for(n.daemon.stop(), timeout=30)
        msg = await ws.receive(timeout=5)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == aiohttp.WSCloseCode.GOING_AWAY
