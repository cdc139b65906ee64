"""Building this node's fresh blocks.

The proposer needs only its collaborators: the tip to extend, the mempool and the evidence pool
to fill the block from, the application for the payload, and the signer (which refuses to sign a
second block for a slot). Whether and when to propose is the consensus machine's decision.
"""

from __future__ import annotations

import logging
from typing import Any

from consensus.app import Application, BlockContext
from consensus.block import Block
from consensus.evidence import EvidencePool
from consensus.header import EMPTY_HASH, BlockHeader, merkle_root
from consensus.mempool import Mempool
from consensus.messages import Commit
from consensus.schedule import slot_start_ms
from consensus.signer import Signer
from consensus.validation import Tip
from gossip.crypto import sha256

log = logging.getLogger("fedchain.consensus")


class BlockProposer:
    def __init__(self, genesis: Any, signer: Signer, mempool: Mempool, evidence: EvidencePool,
                 app: Application) -> None:
        self.genesis = genesis
        self.signer = signer
        self.mempool = mempool
        self.evidence = evidence
        self.app = app

    async def build(self, tip: Tip, last_commit: Commit | None, slot: int, now_ms: int,
                    retry: bool = False) -> Block | None:
        """A signed block for ``slot`` extending ``tip``, or None if the signer already signed
        another block for this slot (e.g. before a restart)."""
        g = self.genesis
        height = tip.height
        start = slot_start_ms(slot, g.genesis_time_ms, g.slot_ms)
        timestamp = min(max(now_ms, start), start + g.slot_ms - 1)
        if tip.parent is not None:
            timestamp = max(timestamp, tip.parent.header.timestamp_ms + 1)
        me = self.signer.node_id
        trial = tip.state.copy()
        trial.begin_block(height, EMPTY_HASH, me, tip.missed(slot))
        evidence = [ev for ev in self.evidence.pending() if trial.apply_evidence(ev) is None]
        txs = []
        for tx in self.mempool.reap(g.max_block_txs, g.max_block_bytes // 2):
            if trial.check_tx(tx, verify_signature=False) is None:
                trial.apply_tx(tx)
                txs.append(tx)
        ctx = BlockContext(height, slot, me, tip.state.last_block_hash, timestamp, tip.state,
                           attempt=slot - tip.parent_slot - 1, retry=retry)
        payload = await self.app.prepare_payload(ctx)
        header = BlockHeader(
            chain_id=g.chain_id, height=height, slot=slot, timestamp_ms=timestamp,
            parent_hash=tip.state.last_block_hash, producer=me,
            txs_hash=merkle_root([t.hash for t in txs]), payload_hash=sha256(payload),
            evidence_hash=merkle_root([ev.hash for ev in evidence]),
            last_commit_hash=last_commit.hash if last_commit is not None else EMPTY_HASH,
            state_root=tip.state.root(), app_hash=self.app.app_hash(),
        )
        signature = await self.signer.header(header)
        if signature is None:
            log.warning("already signed another block for height %d slot %d: not proposing a new one", height, slot)
            return None
        return Block(header, signature, tuple(txs), payload, tuple(evidence), last_commit)
