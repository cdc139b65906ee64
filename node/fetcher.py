"""Fetching final blocks and commits from peers over their HTTP API (used by consensus sync)."""

from __future__ import annotations

import aiohttp


class FetchError(Exception):
    """A peer did not answer usefully."""


class HttpBlockFetcher:
    """Implements :class:`consensus.sync.BlockFetcher` with one shared aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float = 10.0) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def _json(self, url: str, params: dict | None = None) -> dict:
        try:
            async with self._session.get(url, params=params, timeout=self._timeout) as resp:
                if resp.status == 404:
                    return {}
                if resp.status != 200:
                    raise FetchError(f"{url}: HTTP {resp.status}")
                return await resp.json()
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FetchError(f"{url}: {exc}") from exc

    async def final_height(self, url: str) -> int:
        body = await self._json(f"{url}/status")
        height = body.get("final_height")
        if not isinstance(height, int):
            raise FetchError(f"{url}/status has no final_height")
        return height

    async def blocks(self, url: str, from_height: int, limit: int) -> list[bytes]:
        body = await self._json(f"{url}/blocks", {"from": str(from_height), "limit": str(limit), "raw": "1"})
        try:
            return [bytes.fromhex(item["raw"]) for item in body.get("blocks", [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise FetchError(f"{url}/blocks: malformed page: {exc}") from exc

    async def commit(self, url: str, height: int) -> bytes | None:
        body = await self._json(f"{url}/commit/{height}", {"raw": "1"})
        raw = body.get("raw")
        if raw is None:
            return None
        try:
            return bytes.fromhex(raw)
        except (TypeError, ValueError) as exc:
            raise FetchError(f"{url}/commit/{height}: malformed: {exc}") from exc
