"""What travels on the ``/p2p`` WebSocket: handshake payloads, frames, and close codes.

``docs/gossip.md`` describes the protocol; this module is its only encoder and decoder, so the
two cannot drift apart. Handshake payloads and frames are canonical msgpack arrays, decoded with
:func:`gossip.codec.unpack_flat` (arrays of scalars, one level of nesting at most), so no input
can make us build more objects than a valid frame holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from gossip.codec import DecodeError, pack, unpack_flat
from gossip.config import normalize_url
from gossip.crypto import SIGNATURE_SIZE, is_node_id, signing_bytes
from gossip.envelope import MAX_TOPIC_LENGTH, Announcement, Envelope
from gossip.noise import MAX_MESSAGE, TAGLEN

PROTOCOL_VERSION = 5
"""3: gossipsub control frames (sub, graft, prune, ihave, iwant) and announce-then-pull frames
(ann, want, body) besides msg and peers; 5: choke and unchoke (4 was a batching of frames, since
withdrawn). An older node would take the new frames for malformed ones."""
PROLOGUE = b"fedchain/p2p"
"""Noise prologue: both sides must use it, or the handshake fails."""
STATIC_KEY_DOMAIN = "fedchain/p2p-static-key"
"""Domain of the signature that binds a node id to its Noise static key."""

HANDSHAKE_MAX = 1024
"""Largest handshake message accepted, in bytes; the real ones are 40 to 700."""
WS_MAX_MESSAGE = MAX_MESSAGE + 1
"""The WebSocket's own message limit (aiohttp refuses sizes >= it while reading the header, before
buffering anything): every WebSocket message is one Noise message of at most 65535 bytes."""
CHUNK_DATA = MAX_MESSAGE - TAGLEN - 1
"""Frame bytes per transport message: a frame is sealed as one or more of them."""
MORE = 1
LAST = 0

MSG = "msg"       # [msg, topic, sender, seq, body, signature]
PEERS = "peers"   # [peers, [url, ...]]
ANN = "ann"       # [ann, topic, sender, seq, body_id, size, signature]: a body to pull
WANT = "want"     # [want, body_id]: send me that body
BODY = "body"     # [body, body_id, bytes]: the answer to a want
SUB = "sub"       # [sub, [topic, ...]]: every topic the sender subscribes to
GRAFT = "graft"   # [graft, topic]: add me to your mesh of topic
PRUNE = "prune"   # [prune, topic, backoff_s]: you left my mesh; no graft before backoff_s
IHAVE = "ihave"   # [ihave, topic, [msg_id, ...]]: ids of messages I hold
IWANT = "iwant"   # [iwant, [msg_id, ...]]: send me those messages
CHOKE = "choke"   # [choke, topic]: in our mesh of topic, send me ihave instead of messages
UNCHOKE = "unchoke"  # [unchoke, topic]: send me messages again
CONTROL = frozenset({SUB, GRAFT, PRUNE, IHAVE, IWANT, CHOKE, UNCHOKE})
"""Frames of the dissemination policy (see :mod:`gossip.mesh`)."""
MSG_ID_SIZE = 32
_PAYLOAD_ITEMS = 8


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
    BAD_FRAME = 4010
    TOO_BIG = 1009   # RFC 6455 "message too big"
    SHUTDOWN = 1001  # RFC 6455 "going away"


@dataclass(frozen=True)
class Hello:
    """What a peer told and proved about itself in its handshake identity payload."""

    version: int
    chain_id: str
    node_id: str
    signature: bytes
    """Ed25519 signature by ``node_id`` over :func:`static_key_bytes` of its Noise static key."""
    listen_url: str
    """Normalised advertised base URL, or "" for a node that does not listen."""


def static_key_bytes(chain_id: str, static_public: bytes) -> bytes:
    """What a node signs to bind its id to the Noise static key it uses on this chain."""
    return signing_bytes(STATIC_KEY_DOMAIN, chain_id, [static_public])


def opening_payload(chain_id: str) -> bytes:
    """Payload of the first handshake message (sent in clear, covered by the transcript)."""
    return pack([PROTOCOL_VERSION, chain_id])


def identity_payload(chain_id: str, node_id: str, signature: bytes, listen_url: str) -> bytes:
    """Payload of the second and third handshake messages (encrypted)."""
    return pack([PROTOCOL_VERSION, chain_id, node_id, signature, listen_url])


def _flat(payload: bytes, what: str) -> list:
    items = unpack_flat(payload, HANDSHAKE_MAX, _PAYLOAD_ITEMS)
    if not (items and type(items[0]) is int):
        raise DecodeError(f"{what} must start with the protocol version")
    return items


def parse_opening(payload: bytes) -> tuple[int, str | None]:
    """``(version, chain_id)``; the chain id is None when the version is not ours (its layout
    may differ), so the caller can report the version mismatch."""
    items = _flat(payload, "opening payload")
    if items[0] != PROTOCOL_VERSION:
        return items[0], None
    if not (len(items) == 2 and isinstance(items[1], str) and 0 < len(items[1]) <= 128):
        raise DecodeError("expected [version, chain_id]")
    return items[0], items[1]


def parse_identity(payload: bytes) -> Hello:
    items = _flat(payload, "identity payload")
    if len(items) != 5:
        raise DecodeError("expected [version, chain_id, node_id, signature, listen_url]")
    version, chain_id, node_id, signature, listen_url = items
    if not (isinstance(chain_id, str) and 0 < len(chain_id) <= 128):
        raise DecodeError("chain_id must be a short string")
    if not is_node_id(node_id):
        raise DecodeError("node_id must be 64 lowercase hex chars")
    if not (isinstance(signature, bytes) and len(signature) == SIGNATURE_SIZE):
        raise DecodeError("signature must be 64 bytes")
    if not isinstance(listen_url, str):
        raise DecodeError("listen_url must be a string")
    if listen_url:
        try:
            listen_url = normalize_url(listen_url)
        except ValueError as exc:
            raise DecodeError(str(exc)) from exc
    return Hello(version, chain_id, node_id, signature, listen_url)


def msg_frame(envelope: Envelope) -> bytes:
    return pack([MSG, *envelope.to_wire()])


def peers_frame(urls: list[str]) -> bytes:
    return pack([PEERS, urls])


def ann_frame(ann: Announcement) -> bytes:
    return pack([ANN, *ann.to_wire()])


def want_frame(body_id: bytes) -> bytes:
    return pack([WANT, body_id])


def body_frame(body_id: bytes, body: bytes) -> bytes:
    return pack([BODY, body_id, body])


def sub_frame(topics: list[str]) -> bytes:
    return pack([SUB, topics])


def topic_frame(kind: str, topic: str) -> bytes:
    """A control frame that names one topic: graft, choke or unchoke."""
    return pack([kind, topic])


def prune_frame(topic: str, backoff_s: int) -> bytes:
    return pack([PRUNE, topic, backoff_s])


def ihave_frame(topic: str, msg_ids: list[bytes]) -> bytes:
    return pack([IHAVE, topic, msg_ids])


def iwant_frame(msg_ids: list[bytes]) -> bytes:
    return pack([IWANT, msg_ids])


def decode_frame(data: bytes, max_size: int, max_items: int) -> list:
    """Decode one frame to ``[type, ...]`` or raise DecodeError (never anything else).

    ``max_items`` bounds the longest list a frame may carry (peer URLs, topics, message ids)."""
    frame = unpack_flat(data, max_size, max_items + 3)
    if not (frame and isinstance(frame[0], str)):
        raise DecodeError("frame must be an array starting with its type")
    return frame


def _topic(value: object) -> str:
    if not (isinstance(value, str) and 0 < len(value) <= MAX_TOPIC_LENGTH):
        raise DecodeError("topic must be a non-empty short string")
    return value


def _body_id(value: object) -> bytes:
    if not (isinstance(value, bytes) and len(value) == MSG_ID_SIZE):
        raise DecodeError("a body or message id is 32 bytes")
    return value


def parse_want(frame: list) -> bytes:
    if len(frame) != 2:
        raise DecodeError("expected [want, body_id]")
    return _body_id(frame[1])


def parse_body(frame: list) -> tuple[bytes, bytes]:
    if not (len(frame) == 3 and isinstance(frame[2], bytes)):
        raise DecodeError("expected [body, body_id, bytes]")
    return _body_id(frame[1]), frame[2]


def parse_sub(frame: list, max_topics: int) -> list[str]:
    if not (len(frame) == 2 and isinstance(frame[1], list) and len(frame[1]) <= max_topics):
        raise DecodeError(f"expected [sub, [topic, ...]] with at most {max_topics} topics")
    return [_topic(t) for t in frame[1]]


def parse_topic_frame(frame: list) -> str:
    """The topic of a graft, choke or unchoke frame."""
    if len(frame) != 2:
        raise DecodeError(f"expected [{frame[0][:16]}, topic]")
    return _topic(frame[1])


def parse_prune(frame: list) -> tuple[str, int]:
    if not (len(frame) == 3 and type(frame[2]) is int and 0 <= frame[2] <= 3600):
        raise DecodeError("expected [prune, topic, backoff seconds in 0..3600]")
    return _topic(frame[1]), frame[2]


def parse_ihave(frame: list, max_ids: int) -> tuple[str, list[bytes]]:
    if not (len(frame) == 3 and isinstance(frame[2], list) and len(frame[2]) <= max_ids):
        raise DecodeError(f"expected [ihave, topic, [msg_id, ...]] with at most {max_ids} ids")
    return _topic(frame[1]), [_body_id(i) for i in frame[2]]


def parse_iwant(frame: list, max_ids: int) -> list[bytes]:
    if not (len(frame) == 2 and isinstance(frame[1], list) and len(frame[1]) <= max_ids):
        raise DecodeError(f"expected [iwant, [msg_id, ...]] with at most {max_ids} ids")
    return [_body_id(i) for i in frame[1]]


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
