"""Frames on the ``/p2p`` WebSocket and the close codes a connection ends with.

Every frame is one binary WebSocket message holding one canonical msgpack array whose first item
names its type. ``docs/gossip.md`` describes the protocol; this module is its only encoder and
decoder, so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.codec import DecodeError, pack, unpack
from gossip.config import normalize_url
from gossip.crypto import SIGNATURE_SIZE, is_node_id, signing_bytes
from gossip.envelope import Envelope

PROTOCOL_VERSION = 1
HELLO_DOMAIN = "fedchain/hello"
NONCE_SIZE = 32

HELLO = "hello"   # [hello, version, chain_id, node_id, listen_url, nonce]
AUTH = "auth"     # [auth, signature]
MSG = "msg"       # [msg, topic, sender, seq, body, signature]
PEERS = "peers"   # [peers, [url, ...]]


class Close:
    """WebSocket close codes (4000-4999 is the application range) and their reasons."""

    WRONG_CHAIN = 4001
    VERSION = 4002
    BAD_HELLO = 4003
    BAD_AUTH = 4004
    SELF = 4005
    BANNED = 4006
    DUPLICATE = 4007
    TIMEOUT = 4008
    TOO_MANY_PEERS = 4009
    SHUTDOWN = 1001  # RFC 6455 "going away"


@dataclass(frozen=True)
class Hello:
    """The first frame each side sends: who it claims to be, and a nonce for the other to sign."""

    version: int
    chain_id: str
    node_id: str
    listen_url: str
    """Normalised advertised base URL, or "" for a node that does not listen."""
    nonce: bytes


def hello_frame(chain_id: str, node_id: str, listen_url: str, nonce: bytes) -> bytes:
    return pack([HELLO, PROTOCOL_VERSION, chain_id, node_id, listen_url, nonce])


def auth_bytes(chain_id: str, verifier_nonce: bytes, prover_nonce: bytes, prover: str,
               verifier: str, prover_url: str) -> bytes:
    """What the prover signs: the verifier's fresh nonce binds the proof to this connection,
    the chain id to this chain, and the prover's advertised URL is covered so it cannot be
    altered on the way."""
    return signing_bytes(HELLO_DOMAIN, chain_id,
                         [verifier_nonce, prover_nonce, prover, verifier, prover_url])


def auth_frame(signature: bytes) -> bytes:
    return pack([AUTH, signature])


def msg_frame(envelope: Envelope) -> bytes:
    return pack([MSG, *envelope.to_wire()])


def peers_frame(urls: list[str]) -> bytes:
    return pack([PEERS, urls])


def decode_frame(data: bytes, max_size: int) -> list:
    """Decode one frame to ``[type, ...]`` or raise DecodeError (never anything else)."""
    frame = unpack(data, max_size)
    if not (isinstance(frame, list) and frame and isinstance(frame[0], str)):
        raise DecodeError("frame must be an array starting with its type")
    return frame


def parse_hello(frame: list) -> Hello:
    if not (len(frame) == 6 and frame[0] == HELLO):
        raise DecodeError("expected [hello, version, chain_id, node_id, listen_url, nonce]")
    _, version, chain_id, node_id, listen_url, nonce = frame
    if type(version) is not int:
        raise DecodeError("hello version must be an int")
    if not (isinstance(chain_id, str) and 0 < len(chain_id) <= 128):
        raise DecodeError("hello chain_id must be a short string")
    if not is_node_id(node_id):
        raise DecodeError("hello node_id must be 64 lowercase hex chars")
    if not (isinstance(nonce, bytes) and len(nonce) == NONCE_SIZE):
        raise DecodeError(f"hello nonce must be {NONCE_SIZE} bytes")
    if not isinstance(listen_url, str):
        raise DecodeError("hello listen_url must be a string")
    if listen_url:
        try:
            listen_url = normalize_url(listen_url)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc
    return Hello(version, chain_id, node_id, listen_url, nonce)


def parse_auth(frame: list) -> bytes:
    if not (len(frame) == 2 and frame[0] == AUTH and isinstance(frame[1], bytes)
            and len(frame[1]) == SIGNATURE_SIZE):
        raise DecodeError("expected [auth, 64-byte signature]")
    return frame[1]


def parse_peers(frame: list, max_urls: int) -> list[str]:
    """URLs of a peer-exchange frame, normalised; unusable entries are skipped, not fatal."""
    if not (len(frame) == 2 and isinstance(frame[1], list) and len(frame[1]) <= max_urls):
        raise DecodeError(f"expected [peers, [url, ...]] with at most {max_urls} urls")
    urls = []
    for url in frame[1]:
        try:
            urls.append(normalize_url(url))
        except ValueError:
            continue
    return urls
