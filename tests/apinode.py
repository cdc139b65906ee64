"""A real single-process node for API tests: a daemon on 127.0.0.1 and an HTTP session to it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp

from consensus.genesis import Genesis, make_genesis
from gossip.crypto import KeyPair
from node.daemon import Daemon
from node.home import Home, init_home, load_home
from tests.integration.harness import free_port_block

SLOT_MS = 100


def free_port() -> int:
    """A free port outside the range outgoing connections take theirs from."""
    return free_port_block(1)


class Node:
    """A started daemon and an HTTP session to its API."""

    def __init__(self, home: Home, daemon: Daemon, session: aiohttp.ClientSession) -> None:
        self.home = home
        self.daemon = daemon
        self.session = session
        self.url = home.config.network.url

    async def get(self, path: str, **params: Any) -> tuple[int, Any]:
        async with self.session.get(self.url + path, params=params or None) as resp:
            body = await resp.json(content_type=None) if resp.content_type == "application/json" else await resp.text()
            return resp.status, body

    async def ok(self, path: str, **params: Any) -> Any:
        status, body = await self.get(path, **params)
        assert status == 200, (path, body)
        return body

    async def wait_height(self, height: int, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            final = (await self.ok("/status"))["final_height"]
            if final >= height:
                return final
            await asyncio.sleep(0.05)
        raise AssertionError(f"node did not reach height {height} in {timeout} s")


def chain_genesis(keys: list[KeyPair]) -> Genesis:
    return make_genesis("api-test", [k.node_id for k in keys], slot_ms=SLOT_MS,
                        genesis_time_ms=int(time.time() * 1000))


async def start_node(folder: Path, genesis: Genesis, keys: list[KeyPair], index: int, ports: list[int],
                     session: aiohttp.ClientSession) -> Node:
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    init_home(folder / f"node{index}", genesis, port=ports[index], keypair=keys[index],
              bootstrap=[u for i, u in enumerate(urls) if i != index])
    home = load_home(folder / f"node{index}")
    daemon = Daemon(home)
    await daemon.start()
    return Node(home, daemon, session)


async def expect_error(node: Node, method: str, path: str, status: int, fragment: str = "", **kwargs) -> dict:
    async with node.session.request(method, node.url + path, **kwargs) as resp:
        assert resp.status == status, (path, await resp.text())
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    assert fragment.lower() in body["error"]["message"].lower(), body
    assert "Traceback" not in body["error"]["message"]
    return body
