"""Full validation of a block against the final chain below it.

Two parts. The chain's rules (chain id, height, parent, slot and producer, timestamp bounds,
signature, body hashes, state and app hashes, the parent's commit, evidence, transactions applied
to a copy of the state) are computed identically by every correct node, so a block that breaks
them is refused whoever signed it. The application's verdict on the payload is this node's own
judgement (as is a stamp ahead of this node's clock): it may lack what checking needs (data
nobody serves it, a proof lost in a restart). It decides a vote, and for a block a quorum
already committed it is reported but never a veto (see ``BlockExecutor.validate_final``): as
CometBFT applies a committed block without ProcessProposal, the chain never halts a node over its
application.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from consensus.app import Application, BlockContext
from consensus.block import Block
from consensus.messages import Commit
from consensus.schedule import Schedule, slot_start_ms


@dataclass
class Tip:
    """What the next block must extend: the state after the last final block, and its context."""

    genesis: Any
    state: Any  # ChainState after the last final block
    app: Application
    schedule: Schedule  # the proposers of this height's slots
    parent: Block | None  # None before the first block
    parent_voters: list[str]  # who could sign the parent's commit
    parent_quorum: int
    is_verified: Callable[[bytes], bool] = lambda tx_hash: False  # signature already checked (mempool)

    @property
    def height(self) -> int:
        return self.state.height + 1

    @property
    def parent_slot(self) -> int:
        return self.parent.header.slot if self.parent is not None else -1

    def context(self, block: Block) -> BlockContext:
        h = block.header
        return BlockContext(h.height, h.slot, h.producer, h.parent_hash, h.timestamp_ms, self.state,
                            block.signed_header(), attempt=h.slot - self.parent_slot - 1)

    def missed(self, slot: int) -> list[str]:
        """Delegates whose turns passed between the parent's slot and ``slot`` with no block.

        Bounded to one cycle, so a chain that was halted for long does not jail everyone.
        """
        n = len(self.schedule.active)
        return [self.schedule.proposer(s) for s in range(max(self.parent_slot + 1, slot - n), slot)]


def check_header(block: Block, tip: Tip, now_ms: int | None) -> str | None:
    """Cheap checks that need no state copy: where, when, who. None if fine, else why not.

    ``now_ms`` None skips the one check made by this node's own clock (a block stamped ahead of
    it), for a block a quorum committed: their clocks accepted the stamp, and a clock that runs
    behind would otherwise refuse every block of the chain.

    Ordered by cost: field comparisons, then the timestamp bounds (which also bound the slot, so
    the proposer lookup below only ever looks at the current cycle or the next), then the
    proposer schedule, then the one signature check.
    """
    g = tip.genesis
    h = block.header
    if h.chain_id != g.chain_id:
        return "wrong chain id"
    if h.height != tip.height:
        return f"height {h.height} is not the next height {tip.height}"
    if h.parent_hash != tip.state.last_block_hash:
        return "parent hash is not the last final block"
    if h.slot <= tip.parent_slot:
        return "slot does not advance past the parent's"
    start = slot_start_ms(h.slot, g.genesis_time_ms, g.slot_ms)
    drift = g.max_clock_drift_ms
    if not (start - drift <= h.timestamp_ms < start + g.slot_ms + drift):
        return "timestamp outside its slot"
    if now_ms is not None and h.timestamp_ms > now_ms + drift:
        return "timestamp too far in the future"
    if tip.parent is not None and h.timestamp_ms <= tip.parent.header.timestamp_ms:
        return "timestamp not after the parent's"
    if h.producer != tip.schedule.proposer(h.slot):
        return f"{h.producer[:12]} is not the proposer of slot {h.slot}"
    if not block.verify_signature():
        return "bad producer signature"
    return None


def check_commit(commit: Commit | None, block_hash: bytes, height: int, chain_id: str,
                 voters: list[str], quorum: int) -> str | None:
    if commit is None:
        return f"missing commit for height {height}"
    if commit.height != height or commit.block_hash != block_hash:
        return "commit is for another block"
    return commit.verify(chain_id, voters, quorum)


async def validate_block(block: Block, tip: Tip, now_ms: int, *, own: bool = False) -> str | None:
    """None if ``block`` may become the next final block, else the reason it may not.

    ``own`` skips re-verifying the payload of a block this node built itself.
    """
    reason = check_chain_rules(block, tip, now_ms)
    if reason is not None or own:
        return reason
    return await check_payload(block, tip)


def check_chain_rules(block: Block, tip: Tip, now_ms: int | None) -> str | None:
    """Every rule but the application's payload check; None if ``block`` keeps them all
    (``now_ms`` as :func:`check_header` takes it)."""
    g = tip.genesis
    reason = check_header(block, tip, now_ms)
    if reason:
        return reason
    h = block.header
    if len(block.encode()) > g.max_block_bytes:
        return "block too large"
    if len(block.txs) > g.max_block_txs:
        return "too many transactions"
    reason = block.body_hashes_ok()
    if reason:
        return reason
    if h.state_root != tip.state.root():
        return "state root mismatch"
    if h.app_hash != tip.app.app_hash():
        return "app hash mismatch"
    if tip.parent is None:
        if block.last_commit is not None:
            return "first block carries a commit"
    else:
        reason = check_commit(block.last_commit, tip.parent.hash, tip.parent.height, g.chain_id,
                              tip.parent_voters, tip.parent_quorum)
        if reason:
            return f"last commit: {reason}"
    trial = tip.state.copy()
    trial.begin_block(h.height, block.hash, h.producer, tip.missed(h.slot))
    for ev in block.evidence:
        reason = trial.apply_evidence(ev)
        if reason:
            return f"evidence: {reason}"
    for tx in block.txs:
        reason = trial.check_tx(tx, verify_signature=not tip.is_verified(tx.hash))
        if reason:
            return f"tx {tx.hash.hex()[:12]}: {reason}"
        trial.apply_tx(tx)
    return None


async def check_payload(block: Block, tip: Tip) -> str | None:
    """The application's verdict on ``block``'s payload: None if it accepts it, else why not."""
    verdict = await tip.app.verify_payload(tip.context(block), block.payload)
    return None if verdict.ok else f"payload: {verdict.reason}"
