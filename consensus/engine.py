"""The live consensus protocol: slots, proposals, prevotes, precommits and finality.

One height is decided at a time, Tendermint-style, with rounds aligned to DPoS slots:

* In each slot, the scheduled delegate proposes a block extending the last final block (or
  re-broadcasts the block it is locked on, or the newest polka block it knows).
* A delegate prevotes, per slot, the block it is locked on, else the newest polka block, else the
  slot's fresh proposal once it has validated it.
* A quorum of prevotes for one block in one slot is a *polka*; a delegate that sees a polka for a
  valid block precommits it, and never precommits anything else at that height (persisted before
  signing). floor(2D/3)+1 precommits make the block final; the next block carries them.

Safety needs only the one-precommit-per-height rule and quorum intersection; the prevote round
is what keeps the chain live when a proposal reaches only some delegates in time. See
docs/consensus.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from consensus.app import Application
from consensus.blocks import BlockBuilder
from consensus.mempool import Mempool
from consensus.messages import MessageHandlers
from consensus.query import ChainQueries
from consensus.state import ChainState, quorum
from consensus.schedule import Schedule, slot_at, slot_start_ms
from consensus.sync import BlockFetcher, Syncer
from consensus.types import Block, Commit, Evidence, SignedHeader, Tx, Vote
from consensus.validation import Tip, validate_block
from consensus.votes import HeightVotes
from gossip import Verdict
from gossip.codec import pack
from gossip.crypto import KeyPair

log = logging.getLogger("fedchain.consensus")

TOPIC_BLOCK = "consensus/block"
TOPIC_VOTE = "consensus/vote"
TOPIC_TX = "consensus/tx"
TOPIC_EVIDENCE = "consensus/evidence"


class Network(Protocol):
    """What the engine needs from the gossip layer."""

    def subscribe(self, topic: str, validate: Callable[[Any], Awaitable[Verdict]],
                  deliver: Callable[[Any], Awaitable[None]]) -> None: ...

    async def publish(self, topic: str, body: bytes) -> bytes: ...

    def peers(self) -> list[Any]: ...


class TxRejected(ValueError):
    """A submitted transaction the mempool refused; the message says why."""


@dataclass
class EngineConfig:
    double_sign: bool = False  # test-only fault: sign two different blocks in each own slot
    sync_interval_s: float = 1.0
    max_message: int = 8 * 1024 * 1024
    future_buffer: int = 2048


class Engine(ChainQueries, MessageHandlers):
    def __init__(self, keypair: KeyPair, genesis: Any, store: Any, app: Application, network: Network,
                 fetcher: BlockFetcher, config: EngineConfig | None = None) -> None:
        self.keypair = keypair
        self.me = keypair.node_id
        self.genesis = genesis
        self.store = store
        self.app = app
        self.network = network
        self.config = config or EngineConfig()
        self.mempool = Mempool()
        self.metrics: Counter[str] = Counter()
        self._subscribers: set[asyncio.Queue] = set()
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task] = []
        self._future: deque[tuple[str, Any]] = deque(maxlen=self.config.future_buffer)
        self._evidence: dict[bytes, Evidence] = {}
        self._decoded: dict[bytes, Any] = {}
        self._finalized_at_ms = 0
        self._current_slot = -1

        state = store.load_state()
        if state is None:
            state = ChainState.from_genesis(genesis)
            app.init_chain(genesis.app, {})
        else:
            app.init_chain(genesis.app, store.app_records())
        self.state = state
        self.parent: Block | None = store.block(state.height) if state.height > 0 else None
        self.last_commit: Commit | None = store.commit(state.height) if state.height > 0 else None
        self.parent_voters: list[str] = store.voters(state.height) if state.height > 0 else []
        self.builder = BlockBuilder(self)
        self.syncer = Syncer(self, fetcher)
        self._new_height()

    # ----- height bookkeeping -------------------------------------------------------------
    def _new_height(self) -> None:
        """Reset per-height bookkeeping after the state advanced to a new final block."""
        h = self.state.height + 1
        self.voters = sorted(self.state.active_delegates(h))
        self.proposers = Schedule(self.voters, self._anchor_for)
        self.tip = Tip(self.genesis, self.state, self.app, self.proposers, self.parent, self.parent_voters,
                       quorum(len(self.parent_voters)) if self.parent_voters else 0,
                       self.mempool.is_verified)
        self.votes = HeightVotes(h, self.voters, quorum(len(self.voters)))
        self.candidates: dict[bytes, Block] = {}
        self.invalid: set[bytes] = set()
        self._validating: set[bytes] = set()
        self._headers: dict[tuple[int, str], SignedHeader] = {}
        signed = self.store.last_signed("precommit")
        self.locked: bytes | None = signed[2] if signed and signed[0] == h else None

    def _anchor_for(self, first_slot: int) -> bytes:
        """Hash of the newest final block whose slot is before ``first_slot`` (genesis if none)."""
        block = self.parent
        while block is not None and block.header.slot >= first_slot:
            block = self.store.block(block.height - 1) if block.height > 1 else None
        return block.hash if block is not None else self.genesis.hash

    @property
    def height(self) -> int:
        """The height being decided (one above the last final block)."""
        return self.state.height + 1

    @property
    def is_voter(self) -> bool:
        return self.me in self.votes.voters

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    # ----- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        n = self.network
        n.subscribe(TOPIC_BLOCK, self._validate_block_msg, self._deliver_block)
        n.subscribe(TOPIC_VOTE, self._validate_vote_msg, self._deliver_vote)
        n.subscribe(TOPIC_TX, self._validate_tx_msg, self._deliver_noop)
        n.subscribe(TOPIC_EVIDENCE, self._validate_evidence_msg, self._deliver_noop)
        self._tasks = [asyncio.create_task(self._slot_loop(), name="slots"),
                       asyncio.create_task(self.syncer.run(), name="sync")]
        log.info("engine started at height %d as %s (%s)", self.state.height, self.me[:12],
                 "delegate" if self.is_voter else "follower")

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _slot_loop(self) -> None:
        g = self.genesis
        while True:
            now = self.now_ms()
            slot = slot_at(now, g.genesis_time_ms, g.slot_ms)
            if now < g.genesis_time_ms:
                await asyncio.sleep((g.genesis_time_ms - now) / 1000)
                continue
            if slot != self._current_slot:
                self._current_slot = slot
                try:
                    await self._on_slot(slot)
                except Exception:  # a bug in one slot must not stop the chain
                    log.exception("slot %d failed", slot)
                    self.metrics["slot_errors"] += 1
            next_start = slot_start_ms(slot + 1, g.genesis_time_ms, g.slot_ms)
            await asyncio.sleep(max(0.0, (next_start - self.now_ms()) / 1000))

    async def _on_slot(self, slot: int) -> None:
        if not self.is_voter or self.syncer.busy:
            return
        if self.parent is not None and slot <= self.parent.header.slot:
            return  # one block per slot: the parent already used this one
        favoured = self._favoured_block()
        if self.proposers.proposer(slot) == self.me:
            if favoured is not None:
                await self.network.publish(TOPIC_BLOCK, favoured.encode())
                self.metrics["reproposals"] += 1
            else:
                block = await self.builder.propose(slot)
                if block is None:
                    return
                favoured = block
        if favoured is not None:
            await self._prevote(slot, favoured.hash)

    def _favoured_block(self) -> Block | None:
        """The block to stand behind this slot: our lock, else the newest polka we can vote for."""
        if self.locked is not None:
            return self.candidates.get(self.locked)
        polka = self.votes.best_polka
        if polka is not None:
            return self.candidates.get(polka.block_hash)
        return None

    # ----- voting -------------------------------------------------------------------------
    async def _prevote(self, slot: int, block_hash: bytes) -> None:
        if self.votes.prevoted(slot, self.me):
            return
        self.store.record_signing("prevote", self.height, slot, block_hash)
        vote = Vote("prevote", self.genesis.chain_id, self.height, slot, block_hash, self.me).signed(self.keypair)
        await self.network.publish(TOPIC_VOTE, pack(vote.to_wire()))
        self.metrics["prevotes_sent"] += 1
        await self._count_vote(vote)

    async def _precommit(self, block_hash: bytes, slot: int) -> None:
        if self.locked is not None:
            return
        self.store.record_signing("precommit", self.height, slot, block_hash)
        self.locked = block_hash
        vote = Vote("precommit", self.genesis.chain_id, self.height, slot, block_hash, self.me).signed(self.keypair)
        await self.network.publish(TOPIC_VOTE, pack(vote.to_wire()))
        self.metrics["precommits_sent"] += 1
        await self._count_vote(vote)

    async def _count_vote(self, vote: Vote) -> None:
        if vote.kind == "prevote":
            self.votes.add_prevote(vote)
        else:
            evidence = self.votes.add_precommit(vote)
            if evidence is not None:
                await self.add_evidence(evidence)
        await self._progress()

    async def _progress(self) -> None:
        """Precommit on a polka for a valid block; finalize on a quorum of precommits."""
        if self.is_voter and self.locked is None:
            for polka in self.votes.polkas():
                if polka.block_hash in self.candidates:
                    await self._precommit(polka.block_hash, polka.slot)
                    break
        for block_hash, block in list(self.candidates.items()):
            commit = self.votes.commit_for(block_hash)
            if commit is not None:
                await self.finalize(block, commit)
                return

    # ----- blocks -------------------------------------------------------------------------
    async def consider_block(self, block: Block, *, own: bool = False) -> None:
        """Validate a proposal for the current height and, if valid, take it into account."""
        key = block.hash
        if key in self.candidates or key in self.invalid or key in self._validating:
            return
        self._validating.add(key)
        height = self.height
        try:
            reason = await validate_block(block, self.tip, self.now_ms(), own=own)
        finally:
            self._validating.discard(key)
        if height != self.height:
            return  # the chain moved on while we validated
        if reason:
            self.invalid.add(key)
            self.metrics[f"invalid_block:{reason.split(':')[0]}"] += 1
            log.warning("block %s at height %d rejected: %s", key.hex()[:12], block.height, reason)
            return
        self.candidates[key] = block
        self._emit({"type": "proposal", "height": block.height, "slot": block.header.slot,
                    "hash": key.hex(), "producer": block.header.producer})
        if (self.is_voter and block.header.slot == self._current_slot and self._favoured_block() is None):
            await self._prevote(block.header.slot, key)
        await self._progress()

    async def finalize(self, block: Block, commit: Commit) -> None:
        """Apply a block with a valid commit to state and disk, then move to the next height."""
        async with self._lock:
            if block.height != self.height:
                return
            state = self.state.copy()
            h = block.header
            state.begin_block(h.height, block.hash, h.producer, self.tip.missed(h.slot))
            for ev in block.evidence:
                state.apply_evidence(ev)
            for tx in block.txs:
                state.apply_tx(tx)
            outcome = self.app.finalize_block(self.tip.context(block), block.payload)
            state.apply_stake_changes(outcome.stake_changes)
            elected = state.end_block()
            voters = list(self.voters)
            self.store.commit_block(block, commit, state, outcome.writes, voters=voters)
            self.state, self.parent, self.last_commit, self.parent_voters = state, block, commit, voters
            self._finalized_at_ms = self.now_ms()
            self.mempool.update(list(block.txs), state)
            for ev in block.evidence:
                self._evidence.pop(ev.hash, None)
            self.metrics["blocks_final"] += 1
            self._new_height()
        log.info("final %d %s by %s (%d txs)", block.height, block.hash.hex()[:12], h.producer[:12], len(block.txs))
        self._emit({"type": "final_block", "height": block.height, "hash": block.hash.hex(),
                    "producer": h.producer, "txs": len(block.txs), "time_ms": h.timestamp_ms,
                    "evidence": len(block.evidence), "events": outcome.events})
        if elected:
            self._emit({"type": "new_delegates", "height": block.height, "delegates": self.state.delegates})
        await self._replay_future()

    async def _replay_future(self) -> None:
        pending, self._future = list(self._future), deque(maxlen=self.config.future_buffer)
        for kind, obj in pending:
            if kind == "block":
                await self._take_block(obj)
            else:
                await self._take_vote(obj)

    async def _take_block(self, block: Block) -> None:
        if block.height == self.height:
            self._note_header(block)
            await self.consider_block(block)
        elif block.height == self.height + 1:
            self._future.append(("block", block))

    async def _take_vote(self, vote: Vote) -> None:
        if vote.height == self.height:
            await self._count_vote(vote)
        elif vote.height == self.height + 1:
            self._future.append(("vote", vote))

    def _note_header(self, block: Block) -> None:
        """Remember who signed which header per slot; two different ones are evidence."""
        key = (block.header.slot, block.header.producer)
        seen = self._headers.get(key)
        if seen is None:
            self._headers[key] = block.signed_header()
        elif seen.header.hash != block.hash:
            ev = Evidence("double_block", seen, block.signed_header())
            asyncio.get_running_loop().create_task(self.add_evidence(ev))

    # ----- evidence and transactions ------------------------------------------------------
    async def add_evidence(self, ev: Evidence, *, gossip: bool = True) -> bool:
        if ev.hash in self._evidence or ev.check(self.genesis.chain_id) is not None:
            return False
        if self.state.copy().apply_evidence(ev) is not None:
            return False
        self._evidence[ev.hash] = ev
        self.metrics["evidence_seen"] += 1
        log.warning("double sign by %s at height %d (%s)", ev.offender[:12], ev.height, ev.kind)
        self._emit({"type": "evidence", "kind": ev.kind, "offender": ev.offender, "height": ev.height})
        if gossip:
            await self.network.publish(TOPIC_EVIDENCE, pack(ev.to_wire()))
        return True

    def pending_evidence(self) -> list[Evidence]:
        return sorted(self._evidence.values(), key=lambda e: e.hash)

    async def submit_tx(self, tx: Tx) -> str:
        """Admit a transaction to the mempool and gossip it; raises :class:`TxRejected`."""
        reason = self.mempool.add(tx, self.state)
        if reason:
            self.metrics[f"tx_rejected:{reason.split(':')[0]}"] += 1
            raise TxRejected(reason)
        await self.network.publish(TOPIC_TX, pack(tx.to_wire()))
        return tx.hash.hex()

    # ----- read side for the HTTP API -----------------------------------------------------
    def subscribe(self) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue(maxsize=256)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def _emit(self, event: dict) -> None:
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()  # a slow subscriber loses its oldest event, never blocks the engine
            q.put_nowait(event)
