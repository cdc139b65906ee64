"""Building and signing this node's own proposals."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from consensus.app import BlockContext
from consensus.schedule import slot_start_ms
from consensus.types import EMPTY_HASH, Block, BlockHeader, merkle_root
from gossip.crypto import sha256

if TYPE_CHECKING:
    from consensus.engine import Engine

log = logging.getLogger("fedchain.consensus")


class BlockBuilder:
    """Assembles a proposal from the mempool, the evidence pool and the application."""

    def __init__(self, engine: "Engine") -> None:
        self.engine = engine

    async def propose(self, slot: int) -> Block | None:
        """Build, sign, gossip and take into account a block for ``slot``; None if we may not."""
        e = self.engine
        g = e.genesis
        tip = e.tip
        height = tip.height
        signed = e.store.last_signed("proposal")
        if signed and signed[0] == height and signed[1] == slot and not e.config.double_sign:
            return e.candidates.get(signed[2])  # already signed one for this slot (e.g. before a restart)
        start = slot_start_ms(slot, g.genesis_time_ms, g.slot_ms)
        timestamp = min(max(e.now_ms(), start), start + g.slot_ms - 1)
        trial = tip.state.copy()
        trial.begin_block(height, EMPTY_HASH, e.me, tip.missed(slot))
        evidence = [ev for ev in e.pending_evidence() if trial.apply_evidence(ev) is None]
        txs = []
        budget = g.max_block_bytes // 2
        for tx in e.mempool.reap(g.max_block_txs, budget):
            if trial.check_tx(tx, verify_signature=False) is None:
                trial.apply_tx(tx)
                txs.append(tx)
        retry = any(s < slot for s, _ in e._headers) or any(b.header.slot < slot for b in e.candidates.values())
        ctx = BlockContext(height, slot, e.me, tip.state.last_block_hash, timestamp, tip.state,
                           attempt=slot - tip.parent_slot - 1, retry=retry)
        payload = await e.app.prepare_payload(ctx)
        if e.height != height:
            return None  # the height was decided while the application worked
        header = BlockHeader(
            chain_id=g.chain_id, height=height, slot=slot, timestamp_ms=timestamp,
            parent_hash=tip.state.last_block_hash, producer=e.me,
            txs_hash=merkle_root([t.hash for t in txs]), payload_hash=sha256(payload),
            evidence_hash=merkle_root([ev.hash for ev in evidence]),
            last_commit_hash=e.last_commit.hash if e.last_commit is not None else EMPTY_HASH,
            state_root=tip.state.root(), app_hash=e.app.app_hash(),
        )
        block = self._sign(header, tuple(txs), payload, tuple(evidence))
        await e.consider_block(block, own=True)
        if block.hash not in e.candidates:
            log.error("own proposal at height %d failed validation", height)
            return None
        await e.network.publish("consensus/block", block.encode())
        e.metrics["proposals"] += 1
        if e.config.double_sign:
            log.warning("FAULT double_sign: signing a second block at height %d slot %d", height, slot)
            twin = self._sign(replace(header, timestamp_ms=timestamp + 1), tuple(txs), payload, tuple(evidence))
            await e.network.publish("consensus/block", twin.encode())
        return block

    def _sign(self, header: BlockHeader, txs: tuple, payload: bytes, evidence: tuple) -> Block:
        """Persist the signing record, then sign: a crash can never lead to two signed blocks."""
        e = self.engine
        e.store.record_signing("proposal", header.height, header.slot, header.hash)
        return Block(header, e.keypair.sign(header.signed_bytes()), txs, payload, evidence, e.last_commit)
