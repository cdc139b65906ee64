"""A hand-rolled peer speaking the ``/p2p`` protocol from its description in docs/gossip.md.

It deliberately uses only the primitives (the Noise XX state machine, codec and crypto), not
gossip's own session or frame helpers, so the tests check the wire format as documented; and it
can break the protocol at will.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from gossip.codec import pack, unpack
from gossip.crypto import KeyPair, signing_bytes
from gossip.noise import CipherState, XXHandshake, generate_private, public_key

VERSION = 5
PROLOGUE = b"fedchain/p2p"
CHUNK = 65535 - 16 - 1


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
        self._send: CipherState | None = None
        self._recv: CipherState | None = None

    @property
    def node_id(self) -> str:
        return self.keypair.node_id

    async def connect(self, url: str) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(url + "/p2p", max_msg_size=65536)

    async def handshake(self, *, chain_id: str | None = None, signer: KeyPair | None = None) -> list:
        """Run our side (the initiator's) of the handshake; returns the node's identity payload.
        ``chain_id`` and ``signer`` let a test lie about the chain or prove with the wrong key."""
        assert self.ws is not None
        chain = chain_id or self.chain_id
        static = generate_private()
        noise = XXHandshake(True, static, PROLOGUE)
        await self.ws.send_bytes(noise.write_message(pack([VERSION, chain])))
        reply = await self.ws.receive()
        assert reply.type is aiohttp.WSMsgType.BINARY, f"handshake refused: {reply}"
        theirs = unpack(noise.read_message(reply.data))
        proof = (signer or self.keypair).sign(
            signing_bytes("fedchain/p2p-static-key", chain, [public_key(static)]))
        await self.ws.send_bytes(noise.write_message(
            pack([VERSION, chain, self.node_id, proof, self.listen_url])))
        self._send, self._recv = noise.split()
        return theirs

    async def connect_and_handshake(self, url: str) -> None:
        await self.connect(url)
        await self.handshake()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None and self._recv is not None
        parts: list[bytes] = []
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.BINARY:
                plain = self._recv.decrypt(b"", msg.data)
                parts.append(plain[1:])
                if plain[0] == 0:
                    self.frames.append(unpack(b"".join(parts), 64 * 1024 * 1024))
                    parts = []

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

    def seal(self, frame: bytes, *, flags: bytes | None = None) -> list[bytes]:
        """``frame`` as transport messages: each a flag byte (1 more, 0 last) and a chunk.
        ``flags`` overrides the flag of every message (to break the protocol)."""
        assert self._send is not None
        chunks = [frame[i:i + CHUNK] for i in range(0, max(len(frame), 1), CHUNK)]
        return [self._send.encrypt(b"", (flags or (b"\x00" if i == len(chunks) - 1 else b"\x01")) + chunk)
                for i, chunk in enumerate(chunks)]

    async def send(self, frame: list | bytes) -> None:
        """Send a frame sealed in the session."""
        assert self.ws is not None
        for message in self.seal(frame if isinstance(frame, bytes) else pack(frame)):
            await self.ws.send_bytes(message)

    async def send_unsealed(self, data: bytes) -> None:
        """Put ``data`` on the WebSocket as it is, outside the session (as a relay could)."""
        assert self.ws is not None
        await self.ws.send_bytes(data)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
