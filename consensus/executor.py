"""The one path by which a block becomes final: validate -> application -> persist.

As CometBFT's ``BlockExecutor`` (``state/execution.go``), this object alone owns the chain state
after the last final block and the application's view of it. Live consensus and catch-up sync
both hand it blocks: :meth:`BlockExecutor.validate` runs every rule (header, body, state, the
application's payload check) against the tip (for a block a quorum already committed,
:meth:`BlockExecutor.validate_final` reports the application's verdict instead of obeying it);
:meth:`BlockExecutor.apply` runs the block through the state machine and the application and
persists block, commit, state and application writes in one transaction on the store's writer
thread, then moves the tip.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from consensus.app import Application
from consensus.block import Block
from consensus.election import quorum
from consensus.messages import Commit
from consensus.schedule import Schedule
from consensus.state import ChainState
from consensus.validation import Tip, check_chain_rules, check_commit, check_payload, validate_block

log = logging.getLogger("fedchain.consensus")


@dataclass
class Applied:
    """What applying a final block did, for the engine's events and pools."""

    block: Block
    events: list[dict] = field(default_factory=list)
    new_delegates: bool = False


class BlockExecutor:
    def __init__(self, genesis: Any, store: Any, app: Application, *,
                 is_verified: Callable[[bytes], bool] = lambda tx_hash: False,
                 checkpoint: tuple[int, bytes] | None = None) -> None:
        self.genesis = genesis
        self.store = store
        self.app = app
        self.is_verified = is_verified  # the mempool's word that a tx's signature was checked
        self.checkpoint = checkpoint
        state = store.load_state()
        if state is None:
            state = ChainState.from_genesis(genesis)
            app.init_chain(genesis.app, {})
        else:
            app.init_chain(genesis.app, store.app_records())
        self.state: ChainState = state
        self.parent: Block | None = store.block(state.height) if state.height > 0 else None
        self.last_commit: Commit | None = store.commit(state.height) if state.height > 0 else None
        self.parent_voters: list[str] = store.voters(state.height) if state.height > 0 else []
        self._lock = asyncio.Lock()
        self._check_checkpoint_on_disk()
        self._refresh()

    def _check_checkpoint_on_disk(self) -> None:
        if self.checkpoint is None:
            return
        height, want = self.checkpoint
        if height <= self.state.height:
            block = self.store.block(height)
            if block is None or block.hash != want:
                raise RuntimeError(
                    f"the stored chain conflicts with the trusted checkpoint {height}:{want.hex()[:16]}... "
                    f"(stored: {block.hash.hex()[:16] if block else 'nothing'}...); move the data dir away and resync")

    def _refresh(self) -> None:
        """Recompute what the next block must satisfy after the tip moved."""
        h = self.state.height + 1
        self.voters = self.state.voters(h)
        self.schedule = Schedule(self.state.proposers(h), self._anchor_for)
        parent_quorum = quorum(len(self.parent_voters)) if self.parent_voters else 0
        self.tip = Tip(self.genesis, self.state, self.app, self.schedule, self.parent, self.parent_voters,
                       parent_quorum, self.is_verified)

    def _anchor_for(self, first_slot: int) -> bytes:
        """Hash of the newest final block whose slot is before ``first_slot`` (genesis if none).

        Only ever asked for the cycle of a slot past the parent's (validation checks the slot
        first), so the walk is at most one cycle long, whatever the chain length.
        """
        block = self.parent
        while block is not None and block.header.slot >= first_slot:
            block = self.store.block(block.height - 1) if block.height > 1 else None
        return block.hash if block is not None else self.state.genesis_hash

    @property
    def height(self) -> int:
        """The height being decided (one above the last final block)."""
        return self.state.height + 1

    @property
    def quorum(self) -> int:
        return quorum(len(self.voters))

    @property
    def parent_slot(self) -> int:
        return self.tip.parent_slot

    async def validate(self, block: Block, now_ms: int, *, own: bool = False) -> str | None:
        """None if ``block`` may become the next final block, else why not.

        Checks and applies take turns: a check that ran while :meth:`apply` waited for the disk
        saw the application already past the block being committed and the state not yet (a
        valid block was "rejected: app hash mismatch"), and a payload check that awaits (the
        FL application's) would see the application change under it."""
        if self._off_checkpoint(block):
            return "block conflicts with the trusted checkpoint"
        async with self._lock:
            return await validate_block(block, self.tip, now_ms, own=own)

    async def validate_final(self, block: Block, commit: Commit | None) -> tuple[str | None, str | None]:
        """For a block that ``commit`` says a quorum finalized (fetched in sync, or decided while
        this node's own check said no): (why it cannot be applied, the application's objection).

        The commit and the chain's rules are hard: a block that breaks them is not this chain's.
        What only this node judges is not: its clock (a clock running behind sees every block
        stamped from the future) and its application's verdict, which may need what this node
        lacks (an update nobody serves it, the proof of a fault it never saw). A quorum of the
        voters checked both before committing; refusing the block would halt this node. The
        application is still asked: one that can check computes its result here, off the event
        loop, and applying the block reuses it instead of re-running it."""
        reason = self.check_commit(block, commit)
        if reason is None and self._off_checkpoint(block):
            reason = "block conflicts with the trusted checkpoint"
        if reason is not None:
            return reason, None
        async with self._lock:
            reason = check_chain_rules(block, self.tip, None)
            return (reason, None) if reason is not None else (None, await check_payload(block, self.tip))

    def _off_checkpoint(self, block: Block) -> bool:
        return self.checkpoint is not None and block.height == self.checkpoint[0] and block.hash != self.checkpoint[1]

    def check_commit(self, block: Block, commit: Commit | None) -> str | None:
        """Whether ``commit`` finalizes ``block`` with the current voter set."""
        return check_commit(commit, block.hash, block.height, self.genesis.chain_id, self.voters, self.quorum)

    def check_commit_only(self, commit: Commit) -> str | None:
        """Whether ``commit`` is a quorum of the current voters' precommits for the height being
        decided (for whichever block it names)."""
        if commit.height != self.height:
            return f"commit for height {commit.height}, not {self.height}"
        return commit.verify(self.genesis.chain_id, self.voters, self.quorum)

    async def apply(self, block: Block, commit: Commit) -> Applied | None:
        """Apply a validated block with its commit; None if the tip already moved past it."""
        async with self._lock:
            if block.height != self.height:
                return None
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
            await self.store.commit_block_async(block, commit, state, outcome.writes, voters=voters)
            self.state, self.parent, self.last_commit, self.parent_voters = state, block, commit, voters
            self._refresh()
        log.info("final %d %s by %s (%d txs)", block.height, block.hash.hex()[:12], h.producer[:12], len(block.txs))
        return Applied(block, list(outcome.events), elected)
