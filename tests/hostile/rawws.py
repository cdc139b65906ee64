"""WebSocket at the byte level (RFC 6455), for attackers that break the protocol below the session:
announce a frame they never finish, forward or inject whole frames in a TCP stream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass


async def upgrade(host: str, port: int, path: str = "/p2p"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """Open a TCP connection and ask for a WebSocket upgrade; returns the HTTP status too."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Version: 13\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, int(head.split(b" ", 2)[1])


def ws_frame(payload: bytes | None, *, length: int | None = None, opcode: int = 2,
             mask: bool = True) -> bytes:
    """A final WebSocket frame: header plus ``payload``; with ``payload=None`` only the header,
    announcing ``length`` bytes that the caller may send (or not). Masked with the zero key
    when ``mask`` (clients must mask; a zero key leaves the payload as it is)."""
    size = len(payload) if payload is not None else (length or 0)
    head = bytes([0x80 | opcode])
    flag = 0x80 if mask else 0
    if size < 126:
        head += bytes([flag | size])
    elif size < 1 << 16:
        head += bytes([flag | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([flag | 127]) + size.to_bytes(8, "big")
    if mask:
        head += b"\x00\x00\x00\x00"
    return head + (payload or b"")


@dataclass(frozen=True)
class Frame:
    raw: bytes
    opcode: int


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """Read one whole frame from a stream, as raw bytes (to forward it unchanged)."""
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    ext = b""
    if size == 126:
        ext = await reader.readexactly(2)
        size = int.from_bytes(ext, "big")
    elif size == 127:
        ext = await reader.readexactly(8)
        size = int.from_bytes(ext, "big")
    mask = await reader.readexactly(4) if head[1] & 0x80 else b""
    return Frame(head + ext + mask + await reader.readexactly(size), head[0] & 0x0F)


def payload(frame: Frame) -> bytes:
    """The (unmasked) payload of a frame read by :func:`read_frame`."""
    raw = frame.raw
    size, pos = raw[1] & 0x7F, 2
    pos += {126: 2, 127: 8}.get(size, 0)
    if not raw[1] & 0x80:
        return raw[pos:]
    mask, data = raw[pos:pos + 4], raw[pos + 4:]
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def accept_upgrade(request_head: bytes) -> bytes:
    """The 101 answer a WebSocket server gives to ``request_head`` (RFC 6455 section 4.2.2)."""
    key = next(line.split(b":", 1)[1].strip() for line in request_head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
