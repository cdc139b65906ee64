"""A hand-rolled peer speaking the ``/p2p`` protocol from its description in docs/gossip.md.

It deliberately uses only the codec and crypto primitives, not gossip's own frame helpers, so the
tests check the wire format as documented; and it can break the protocol at will.
"""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp

from gossip.codec import pack, unpack
from gossip.crypto import KeyPair, signing_bytes


class RawPeer:
    def __init__(self, chain_id: str, keypair: KeyPair | None = None, listen_url: str = "") -> None:
        self.chain_id = chain_id
        self.keypair = keypair or KeyPair.generate()
        self.listen_url = listen_url
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.frames: list[list] = []
        """Frames received after the handshake (when :meth:`start_reading` runs)."""
        self._reader: asyncio.Task | None = None

    @property
    def node_id(self) -> str:
        return self.keypair.node_id

    async def connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url + "/p2p", max_msg_size=64 * 1024 * 1024)

    async def handshake(self, *, chain_id: str | None = None, signer: KeyPair | None = None) -> list:
        """Run our side of the handshake; returns the node's hello. ``chain_id`` and ``signer``
        let a test lie about the chain or prove with the wrong key."""
        assert self.ws is not None
        nonce = os.urandom(32)
        await self.ws.send_bytes(pack(["hello", 1, chain_id or self.chain_id, self.node_id,
                                       self.listen_url, nonce]))
        hello = unpack((await self.ws.receive()).data)
        proof = signing_bytes("fedchain/hello", chain_id or self.chain_id,
                              [hello[5], nonce, self.node_id, hello[3], self.listen_url])
        await self.ws.send_bytes(pack(["auth", (signer or self.keypair).sign(proof)]))
        reply = await self.ws.receive()
        assert reply.type is aiohttp.WSMsgType.BINARY, f"handshake refused: {reply}"
        assert unpack(reply.data)[0] == "auth"
        return hello

    async def connect_and_handshake(self, url: str) -> None:
        await self.connect(url)
        await self.handshake()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                self.frames.append(unpack(msg.data, 64 * 1024 * 1024))

    def msg_frames(self) -> list[list]:
        return [f for f in self.frames if f[0] == "msg"]

    def envelope(self, topic: str, body: bytes, *, seq: int | None = None,
                 publisher: KeyPair | None = None, signer: KeyPair | None = None) -> list:
        """A ``msg`` frame from ``publisher`` (default: us), signed by ``signer`` (default: the
        publisher, i.e. validly), with a fresh time-based seq."""
        publisher = publisher or self.keypair
        seq = time.time_ns() // 1_000 if seq is None else seq
        signed = signing_bytes("fedchain/gossip", self.chain_id, [topic, publisher.node_id, seq, body])
        return ["msg", topic, publisher.node_id, seq, body, (signer or publisher).sign(signed)]

    async def send(self, frame: list | bytes) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(frame if isinstance(frame, bytes) else pack(frame))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
