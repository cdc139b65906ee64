"""Catching up with peers: fetch final blocks over HTTP and verify every one before applying it.

A peer's claimed height is only a hint about whom to ask: progress comes from blocks that
verify (each against the same rules a voting delegate applies, and against the commit that
finalized it: the next block's last commit, or the commit fetched for the newest one). A peer
that claims more than it serves, or serves something that does not verify, is backed off
exponentially, so a liar claiming height 10^15 costs one failed request now and then, never
the node's attention. Syncing never stops the node from taking part in consensus.

Two triggers besides the periodic round: :meth:`Syncer.poke` (a peer looks ahead) and
:meth:`Syncer.fetch_decided`, used when the live protocol saw a quorum of precommits, a proof
that a block this node lacks is final: that block is fetched by height and checked against the
proven hash.

Trust: a node starts from its own newest final block (or genesis). A chain can be rewritten by
keys whose stake has been unbonded (a long-range attack); such keys are harmless only within
the unbonding period. So a node whose trusted point is older than the *sync horizon* (the
unbonding period, ``unbonding_blocks x slot_ms``) refuses to follow peers until given a recent
trusted checkpoint (``HEIGHT:HASH``, from an operator it trusts): blocks up to the checkpoint
must lead to that hash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from consensus.block import Block
from consensus.messages import Commit
from gossip.codec import DecodeError, unpack

log = logging.getLogger("fedchain.sync")

PAGE = 100
MAX_SOURCES_PER_ROUND = 3
ASKED_PER_ROUND = 3
"""Peers whose height a round asks for: a few at random, so the cost of syncing stays flat as
the network grows (every peer asking every peer each second is O(n^2) requests)."""
MIN_GAP_S = 0.5
"""Rounds are at least this far apart, however often the syncer is poked."""
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 300.0


class BlockFetcher(Protocol):
    async def final_height(self, url: str) -> int: ...

    async def blocks(self, url: str, from_height: int, limit: int) -> list[bytes]: ...

    async def commit(self, url: str, height: int) -> bytes | None: ...


class SyncTarget(Protocol):
    """What the syncer needs of the chain: where it stands and a way to apply a verified block."""

    @property
    def height(self) -> int: ...  # the next height to decide

    def tip_time_ms(self) -> int: ...

    async def apply_synced(self, block: Block, commit: Commit | None) -> str | None: ...  # None = applied


class SyncError(Exception):
    """A peer served something that does not verify, or nothing at all."""


class Syncer:
    def __init__(self, fetcher: BlockFetcher, peers: Callable[[], list[str]], target: SyncTarget, *,
                 interval_s: float, max_message: int, horizon_ms: int,
                 checkpoint: tuple[int, bytes] | None = None, clock: Callable[[], float] = time.monotonic,
                 wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
                 metrics: Counter | None = None, rng: random.Random | None = None) -> None:
        self.fetcher = fetcher
        self.peers = peers
        self.target = target
        self.interval_s = interval_s
        self.max_message = max_message
        self.horizon_ms = horizon_ms
        self.checkpoint = checkpoint
        self._clock = clock
        self._wall_ms = wall_ms
        self._wake = asyncio.Event()
        self._failures: dict[str, tuple[int, float]] = {}  # url -> (failures in a row, retry after)
        self._decided: tuple[int, bytes, Commit] | None = None
        self.metrics: Counter = metrics if metrics is not None else Counter()
        self._rng = rng or random.Random()
        self.stale_trust = False  # the trusted point is older than the horizon: a checkpoint is needed
        self.active = False  # fetching from a peer right now

    def poke(self) -> None:
        """Ask for a sync round soon (a peer looks ahead); rounds stay ``MIN_GAP_S`` apart."""
        self._wake.set()

    def fetch_decided(self, height: int, block_hash: bytes, commit: Commit) -> None:
        """A verified quorum of precommits says ``block_hash`` is final at ``height``: fetch it."""
        self._decided = (height, block_hash, commit)
        self._wake.set()

    async def run(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for drops a cancellation that lands
            # together with the wake-up, and stop() then waits for this loop forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad round must not end syncing
                log.warning("sync round failed: %s", exc)
            await asyncio.sleep(MIN_GAP_S)

    # ----- peers and trust --------------------------------------------------------------------
    def _usable(self, url: str) -> bool:
        entry = self._failures.get(url)
        return entry is None or entry[1] <= self._clock()

    def _fail(self, url: str, why: str) -> None:
        count = self._failures.get(url, (0, 0.0))[0] + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (count - 1))
        self._failures[url] = (count, self._clock() + delay)
        self.metrics["sync_backoffs"] += 1
        log.info("sync source %s backed off for %.0fs: %s", url, delay, why)

    def trusted(self, height: int) -> bool:
        """Whether a block at ``height`` may be followed: below a checkpoint, or while the node's
        own trusted point is within the sync horizon."""
        if self.checkpoint is not None and height <= self.checkpoint[0]:
            return True
        fresh = self._wall_ms() - self.target.tip_time_ms() <= self.horizon_ms
        self.stale_trust = not fresh
        return fresh

    # ----- rounds -----------------------------------------------------------------------------
    async def sync_once(self) -> int:
        """Follow the peers that claim to be ahead, best claim first; returns blocks applied."""
        start = self.target.height
        if self._decided is not None:
            await self._fetch_decided()
        urls = [u for u in self.peers() if u and self._usable(u)]
        urls = self._rng.sample(urls, min(len(urls), ASKED_PER_ROUND))
        claims = await asyncio.gather(*(self._claim(u) for u in urls))
        ahead = sorted(((h, u) for h, u in claims if h >= self.target.height), reverse=True)
        for claimed, url in ahead[:MAX_SOURCES_PER_ROUND]:
            self.active = True
            try:
                got = await self._sync_from(url, claimed)
            except SyncError as exc:
                self.metrics["sync_refused"] += 1
                self._fail(url, str(exc))
                continue
            finally:
                self.active = False
            if got == 0 and self.target.height <= claimed:
                self._fail(url, f"claims height {claimed} but served nothing past {self.target.height - 1}")
                continue
            self._failures.pop(url, None)
            if self.target.height > claimed:
                break
        applied = self.target.height - start
        if applied:
            log.info("synced %d blocks, now at %d", applied, self.target.height - 1)
        return applied

    async def _claim(self, url: str) -> tuple[int, str]:
        try:
            return await self.fetcher.final_height(url), url
        except Exception as exc:  # an unreachable peer does not count this round
            self._fail(url, f"status unavailable: {exc}")
            return -1, url

    async def _sync_from(self, url: str, claimed: int) -> int:
        applied = 0
        while self.target.height <= claimed:
            if not self.trusted(self.target.height):
                raise SyncError("this node's newest block is older than the sync horizon (the unbonding "
                                "period); restart it with a recent trusted checkpoint (--checkpoint HEIGHT:HASH)")
            raws = await self._fetch(self.fetcher.blocks(url, self.target.height, PAGE), url)
            if not raws:
                return applied
            blocks = [self._decode(Block.from_wire, r, url) for r in raws]
            for i, block in enumerate(blocks):
                if block.height < self.target.height:
                    continue  # the live protocol got there first
                if block.height != self.target.height:
                    raise SyncError(f"sent height {block.height}, expected {self.target.height}")
                commit = blocks[i + 1].last_commit if i + 1 < len(blocks) else await self._commit(url, block.height)
                reason = await self.target.apply_synced(block, commit)
                if reason is not None:
                    raise SyncError(f"block {block.height}: {reason}")
                applied += 1
        return applied

    async def _fetch_decided(self) -> None:
        height, block_hash, commit = self._decided
        self._decided = None
        if height != self.target.height:
            return
        for url in self.peers():
            if not url or not self._usable(url):
                continue
            try:
                raws = await self._fetch(self.fetcher.blocks(url, height, 1), url)
                block = self._decode(Block.from_wire, raws[0], url) if raws else None
            except SyncError as exc:
                self._fail(url, str(exc))
                continue
            if block is None or block.hash != block_hash:
                continue  # this peer has not finalized it yet
            if await self.target.apply_synced(block, commit) is None:
                return

    async def _commit(self, url: str, height: int) -> Commit | None:
        raw = await self._fetch(self.fetcher.commit(url, height), url)
        return self._decode(Commit.from_wire, raw, url) if raw is not None else None

    @staticmethod
    async def _fetch(awaitable, url: str):
        try:
            return await awaitable
        except (SyncError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise SyncError(f"fetching from {url} failed: {exc}") from exc

    def _decode(self, parse, raw: bytes, url: str):
        try:
            return parse(unpack(raw, self.max_message))
        except DecodeError as exc:
            raise SyncError(f"malformed data from {url}: {exc}") from exc
