import aiohttp
import pytest_asyncio

from gossip.crypto import KeyPair
from tests.apinode import chain_genesis, free_port, start_node


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def node(tmp_path_factory):
    """A one-node chain that has produced a few final blocks."""
    async with aiohttp.ClientSession() as session:
        keys = [KeyPair.generate()]
        n = await start_node(tmp_path_factory.mktemp("api"), chain_genesis(keys), keys, 0, [free_port()], session)
        try:
            await n.wait_height(4)
            yield n
        finally:
            await n.daemon.stop()
