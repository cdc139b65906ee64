"""Catching up with peers: fetch final blocks over HTTP and verify every one before applying it.

A node that is behind (just restarted, or new) learns it from its peers' status or from consensus
messages for heights above its own. It then fetches blocks in pages from one peer and runs each
through the same validation a voting delegate runs, plus the commit that finalized it (carried
in the next block, or fetched for the newest one). A peer that serves an invalid block is
abandoned for this round; nothing it sent is applied.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from consensus.state import quorum
from consensus.types import Block, Commit
from consensus.validation import check_commit, validate_block
from gossip.codec import DecodeError, unpack

if TYPE_CHECKING:
    from consensus.engine import Engine

log = logging.getLogger("fedchain.sync")

PAGE = 100


class BlockFetcher(Protocol):
    async def final_height(self, url: str) -> int: ...

    async def blocks(self, url: str, from_height: int, limit: int) -> list[bytes]: ...

    async def commit(self, url: str, height: int) -> bytes | None: ...


class SyncError(Exception):
    """A peer served something that does not verify."""


class Syncer:
    def __init__(self, engine: "Engine", fetcher: BlockFetcher) -> None:
        self.engine = engine
        self.fetcher = fetcher
        self.busy = False
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Ask for a sync round now (a message from a height above ours arrived)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.engine.config.sync_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad peer or round must not end syncing
                log.warning("sync round failed: %s", exc)
                self.engine.metrics["sync_errors"] += 1

    async def sync_once(self) -> int:
        """Sync from the peer with the highest final height; returns how many blocks were applied."""
        e = self.engine
        heights = await asyncio.gather(*(self._peer_height(p.url) for p in e.network.peers() if p.url))
        best = max(heights, default=(0, ""))
        if best[0] <= e.state.height:
            return 0
        self.busy = True
        try:
            return await self._sync_from(best[1], best[0])
        finally:
            self.busy = False

    async def _peer_height(self, url: str) -> tuple[int, str]:
        try:
            return await self.fetcher.final_height(url), url
        except Exception:  # an unreachable peer simply does not count this round
            return 0, url

    async def _sync_from(self, url: str, target: int) -> int:
        e = self.engine
        applied = 0
        while e.state.height < target:
            raws = await self.fetcher.blocks(url, e.state.height + 1, PAGE)
            if not raws:
                break
            blocks = [self._decode_block(r) for r in raws]
            for i, block in enumerate(blocks):
                if block.height != e.state.height + 1:
                    if block.height <= e.state.height:
                        continue  # the live protocol got there first
                    raise SyncError(f"peer {url} sent height {block.height}, expected {e.state.height + 1}")
                if i + 1 < len(blocks):
                    commit = blocks[i + 1].last_commit
                else:
                    commit = await self._fetch_commit(url, block.height)
                await self._apply(block, commit, url)
                applied += 1
        if applied:
            log.info("synced %d blocks from %s, now at %d", applied, url, e.state.height)
            e.metrics["synced_blocks"] += applied
        return applied

    async def _apply(self, block: Block, commit: Commit | None, url: str) -> None:
        e = self.engine
        g = e.genesis
        reason = await validate_block(block, e.tip, e.now_ms())
        if reason is None:
            reason = check_commit(commit, block.hash, block.height, g.chain_id, e.voters, quorum(len(e.voters)))
        if reason:
            e.metrics["sync_rejected"] += 1
            raise SyncError(f"peer {url} block {block.height}: {reason}")
        assert commit is not None
        await e.finalize(block, commit)

    async def _fetch_commit(self, url: str, height: int) -> Commit | None:
        raw = await self.fetcher.commit(url, height)
        if raw is None:
            return None
        try:
            return Commit.from_wire(unpack(raw, self.engine.config.max_message))
        except DecodeError as exc:
            raise SyncError(f"peer {url} sent a malformed commit: {exc}") from exc

    def _decode_block(self, raw: bytes) -> Block:
        try:
            return Block.from_wire(unpack(raw, self.engine.config.max_message))
        except DecodeError as exc:
            raise SyncError(f"malformed block from peer: {exc}") from exc
