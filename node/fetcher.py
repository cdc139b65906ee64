"""Fetching from peers over their HTTP API: final blocks and commits for consensus sync, model
updates for the FL application.

A peer's answer is read while it streams and dropped as soon as it passes what the request can
need: a status is a few hundred bytes, a commit at most 1024 signatures, a page of blocks the
budget this node asks for (``max_bytes``) plus the one block that crosses it, as hex, an update
``max_update_bytes`` (hex in JSON: twice that). ``Content-Length`` is checked first but
never trusted, since it can lie or be absent. Every request has a deadline.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from gossip.codec import DEFAULT_MAX_MESSAGE
from gossip.crypto import sha256

STATUS_MAX = 64 * 1024
COMMIT_MAX = 1024 * 1024  # 1024 signatures of ~135 bytes, as hex, with room
JSON_ROOM = 64 * 1024  # field names, heights and punctuation around the hex of a page or an update
PAGE_BYTES = 1024 * 1024  # the page budget this node asks peers for (a page may pass it by one block)
MAX_BLOCK_BYTES = DEFAULT_MAX_MESSAGE  # no genesis allows a block larger than one gossip message
TIMEOUT = aiohttp.ClientTimeout(total=10, sock_connect=5, sock_read=5)


class FetchError(Exception):
    """A peer did not answer usefully."""


async def read_capped(resp: aiohttp.ClientResponse, limit: int, url: str) -> bytes:
    """The body of ``resp``, or :class:`FetchError` as soon as it passes ``limit`` bytes."""
    if resp.content_length is not None and resp.content_length > limit:
        raise FetchError(f"{url}: answer of {resp.content_length} bytes is larger than the {limit} "
                         "this request can need")
    body = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        if len(body) + len(chunk) > limit:
            raise FetchError(f"{url}: answer is larger than the {limit} bytes this request can need")
        body += chunk
    return bytes(body)


async def get_bytes(session: aiohttp.ClientSession, url: str, limit: int, params: dict | None = None,
                    timeout: aiohttp.ClientTimeout = TIMEOUT) -> bytes | None:
    """The body of ``GET url`` read under ``limit`` bytes; None for a 404."""
    try:
        async with session.get(url, params=params, timeout=timeout) as resp:
            if resp.status == 404:
                return None
            if resp.status != 200:
                raise FetchError(f"{url}: HTTP {resp.status}")
            return await read_capped(resp, limit, url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise FetchError(f"{url}: {exc}") from exc


async def get_json(session: aiohttp.ClientSession, url: str, limit: int, params: dict | None = None,
                   timeout: aiohttp.ClientTimeout = TIMEOUT) -> Any:
    """The JSON answer of ``GET url`` read under ``limit`` bytes; None for a 404."""
    body = await get_bytes(session, url, limit, params, timeout)
    try:
        return json.loads(body) if body is not None else None
    except ValueError as exc:
        raise FetchError(f"{url}: {exc}") from exc


async def fetch_update(session: aiohttp.ClientSession, base_url: str, update_id: bytes,
                       max_update_bytes: int) -> bytes | None:
    """The raw update ``update_id`` from the peer at ``base_url``, None if it has none.

    The bytes must hash to ``update_id`` (a cheap check, before anyone decodes them), so a peer
    cannot substitute another update or garbage.
    """
    url = f"{base_url}/fl/updates/{update_id.hex()}"
    body = await get_json(session, url, 2 * max_update_bytes + JSON_ROOM, {"raw": "1"})
    if body is None:
        return None
    try:
        raw = bytes.fromhex(body["raw"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FetchError(f"{url}: malformed answer: {exc}") from exc
    if sha256(raw) != update_id:
        raise FetchError(f"{url}: served bytes that are not update {update_id.hex()[:12]}")
    return raw


class HttpBlockFetcher:
    """Implements :class:`consensus.sync.BlockFetcher` with one shared aiohttp session.

    ``page_bytes`` is the budget asked of a peer for one page of blocks; ``max_block_bytes`` the
    largest block the chain allows (the genesis ``max_block_bytes``; by default the largest any
    genesis allows), since a page ends with the block that reaches the budget.
    """

    def __init__(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout = TIMEOUT,
                 page_bytes: int = PAGE_BYTES, max_block_bytes: int = MAX_BLOCK_BYTES) -> None:
        self._session = session
        self._timeout = timeout
        self._page_bytes = page_bytes
        self._page_limit = page_bytes + 2 * max_block_bytes + JSON_ROOM

    async def _json(self, url: str, limit: int, params: dict | None = None) -> dict:
        body = await get_json(self._session, url, limit, params, self._timeout)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise FetchError(f"{url}: answer is not a JSON object")
        return body

    async def final_height(self, url: str) -> int:
        body = await self._json(f"{url}/status", STATUS_MAX)
        height = body.get("final_height")
        if not isinstance(height, int):
            raise FetchError(f"{url}/status has no final_height")
        return height

    async def blocks(self, url: str, from_height: int, limit: int) -> list[bytes]:
        params = {"from": str(from_height), "limit": str(limit), "raw": "1", "max_bytes": str(self._page_bytes)}
        body = await self._json(f"{url}/blocks", self._page_limit, params)
        try:
            items = body.get("blocks", [])
            if len(items) > limit:
                raise ValueError(f"{len(items)} blocks, more than the {limit} asked for")
            return [bytes.fromhex(item["raw"]) for item in items]
        except (KeyError, TypeError, ValueError) as exc:
            raise FetchError(f"{url}/blocks: malformed page: {exc}") from exc

    async def commit(self, url: str, height: int) -> bytes | None:
        body = await self._json(f"{url}/commit/{height}", COMMIT_MAX, {"raw": "1"})
        raw = body.get("raw")
        if raw is None:
            return None
        try:
            return bytes.fromhex(raw)
        except (TypeError, ValueError) as exc:
            raise FetchError(f"{url}/commit/{height}: malformed: {exc}") from exc
