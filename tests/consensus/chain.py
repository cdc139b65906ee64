"""A real chain of signed CounterApp blocks, grown in process the way the engine grows it.

Validation tests build the genuine next block and variants that each break one rule; engine
tests write the chain into a real store and start an engine on top of it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from consensus.app import BlockContext, CounterApp
from consensus.block import Block
from consensus.election import quorum
from consensus.equivocation import Evidence
from consensus.header import EMPTY_HASH, BlockHeader, merkle_root
from consensus.messages import Commit
from consensus.schedule import Schedule, slot_start_ms
from consensus.state import ChainState
from consensus.validation import Tip, validate_block
from gossip.crypto import sha256
from tests.consensus.helpers import KEYS, commit_for, genesis

KEY_OF = {k.node_id: k for k in KEYS}
SAME: Any = object()
"""Marker: carry the chain's own last commit."""


class Chain:
    """A chain of genuine final blocks, grown the way the engine grows it."""

    def __init__(self, **genesis_overrides: Any) -> None:
        self.overrides = genesis_overrides
        self.genesis = genesis(4, **genesis_overrides)
        self.state = ChainState.from_genesis(self.genesis)
        self.app = CounterApp()
        self.app.init_chain(self.genesis.app, {})
        self.blocks: list[Block] = []
        self.commit: Commit | None = None
        self.voters: list[str] = []

    def _anchor(self, first_slot: int) -> bytes:
        return next((b.hash for b in reversed(self.blocks) if b.header.slot < first_slot), self.genesis.hash)

    def tip(self) -> Tip:
        proposers = self.state.proposers(self.state.height + 1)
        return Tip(self.genesis, self.state, self.app, Schedule(proposers, self._anchor),
                   self.blocks[-1] if self.blocks else None, self.voters,
                   quorum(len(self.voters)) if self.voters else 0)

    def start(self, slot: int) -> int:
        return slot_start_ms(slot, self.genesis.genesis_time_ms, self.genesis.slot_ms)

    def proposer(self, slot: int) -> str:
        return self.tip().schedule.proposer(slot)

    async def propose(self, slot: int, *, producer: str | None = None, timestamp: int | None = None,
                      txs: tuple = (), evidence: tuple[Evidence, ...] = (), payload: bytes | None = None,
                      last_commit: Commit | None = SAME, key: Any = None, **fields: Any) -> Block:
        """A signed block for ``slot``; ``fields`` override header fields before signing."""
        producer = producer or self.proposer(slot)
        ts = self.start(slot) + 10 if timestamp is None else timestamp
        if payload is None:
            ctx = BlockContext(self.state.height + 1, slot, producer, self.state.last_block_hash, ts, self.state)
            payload = await self.app.prepare_payload(ctx)
        lc = self.commit if last_commit is SAME else last_commit
        header = BlockHeader(
            chain_id=self.genesis.chain_id, height=self.state.height + 1, slot=slot, timestamp_ms=ts,
            parent_hash=self.state.last_block_hash, producer=producer,
            txs_hash=merkle_root([t.hash for t in txs]), payload_hash=sha256(payload),
            evidence_hash=merkle_root([e.hash for e in evidence]),
            last_commit_hash=lc.hash if lc is not None else EMPTY_HASH,
            state_root=self.state.root(), app_hash=self.app.app_hash())
        header = replace(header, **fields)
        signer = key or KEY_OF[header.producer]
        return Block(header, signer.sign(header.signed_bytes()), tuple(txs), payload, tuple(evidence), lc)

    async def validate(self, block: Block, now_ms: int | None = None, **kw: Any) -> str | None:
        now = block.header.timestamp_ms if now_ms is None else now_ms
        return await validate_block(block, self.tip(), now, **kw)

    def finalize(self, block: Block) -> list:
        """Apply ``block`` as final and sign its commit with a quorum of the voters; returns the
        application's writes."""
        tip = self.tip()
        h = block.header
        st = self.state.copy()
        st.begin_block(h.height, block.hash, h.producer, tip.missed(h.slot))
        for ev in block.evidence:
            assert st.apply_evidence(ev) is None
        for t in block.txs:
            st.apply_tx(t)
        outcome = self.app.finalize_block(tip.context(block), block.payload)
        st.apply_stake_changes(outcome.stake_changes)
        st.end_block()
        self.voters = self.state.voters(self.state.height + 1)
        self.commit = commit_for(block, [KEY_OF[v] for v in self.voters[:quorum(len(self.voters))]])
        self.state = st
        self.blocks.append(block)
        return list(outcome.writes)

    def store_into(self, store: Any) -> None:
        """Write every final block, its commit, the resulting states and the application's
        records into ``store``."""
        replay = Chain(**self.overrides)
        for block in self.blocks:
            voters = replay.state.voters(replay.state.height + 1)
            writes = replay.finalize(block)
            store.commit_block(block, replay.commit, replay.state, writes, voters=voters)

    async def grow(self, count: int) -> None:
        """Append ``count`` final blocks, one per slot."""
        for _ in range(count):
            slot = self.blocks[-1].header.slot + 1 if self.blocks else 0
            block = await self.propose(slot)
            assert await self.validate(block) is None
            self.finalize(block)
