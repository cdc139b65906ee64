"""Gossip validators and handlers of the consensus topics.

A validator decides quickly and cheaply whether a message may be forwarded (shape, chain id,
signature, height window, sender's role); the full work (validating a block against the state,
counting a vote) happens on delivery. Malformed or forged messages are REJECTed (they cost the
forwarding peer score); stale or early ones are IGNOREd. Every refusal is counted by reason.
Mixed into :class:`consensus.engine.Engine`.
"""

from __future__ import annotations

from typing import Any, Callable

from consensus.types import Block, Evidence, Tx, Vote
from gossip import Verdict
from gossip.codec import DecodeError, unpack
from gossip.crypto import sha256


class MessageHandlers:
    """Requires the engine's state, mempool, votes, proposers, syncer, metrics and config."""

    def _decode(self, env: Any, parse: Callable[[Any], Any]) -> Any:
        obj = parse(unpack(env.body, self.config.max_message))
        self._decoded[sha256(env.body)] = obj
        if len(self._decoded) > 4096:
            self._decoded.pop(next(iter(self._decoded)))
        return obj

    def _take_decoded(self, env: Any) -> Any:
        return self._decoded.pop(sha256(env.body), None)

    async def _validate_block_msg(self, env: Any) -> Verdict:
        try:
            block = self._decode(env, Block.from_wire)
        except DecodeError:
            self.metrics["rejected:block_malformed"] += 1
            return Verdict.REJECT
        if block.header.chain_id != self.genesis.chain_id:
            self.metrics["rejected:wrong_chain"] += 1
            return Verdict.REJECT
        if not block.verify_signature():
            self.metrics["rejected:bad_signature"] += 1
            return Verdict.REJECT
        if block.height > self.height + 1:
            self.syncer.poke()
            return Verdict.IGNORE
        if block.height < self.height:
            return Verdict.IGNORE
        if block.height == self.height and block.header.producer != self.proposers.proposer(block.header.slot):
            self.metrics["rejected:wrong_producer"] += 1
            return Verdict.REJECT
        if block.header.timestamp_ms > self.now_ms() + self.genesis.max_clock_drift_ms:
            self.metrics["rejected:future_timestamp"] += 1
            return Verdict.REJECT
        return Verdict.ACCEPT

    async def _deliver_block(self, env: Any) -> None:
        block = self._take_decoded(env)
        if block is not None:
            await self._take_block(block)

    async def _validate_vote_msg(self, env: Any) -> Verdict:
        try:
            vote = self._decode(env, Vote.from_wire)
        except DecodeError:
            self.metrics["rejected:vote_malformed"] += 1
            return Verdict.REJECT
        if vote.chain_id != self.genesis.chain_id or not vote.verify_signature():
            self.metrics["rejected:vote_bad_signature"] += 1
            return Verdict.REJECT
        if vote.height > self.height + 1:
            self.syncer.poke()
            return Verdict.IGNORE
        if vote.height < self.height:
            return Verdict.IGNORE
        if vote.height == self.height and vote.voter not in self.votes.voters:
            self.metrics["rejected:vote_not_delegate"] += 1
            return Verdict.REJECT
        return Verdict.ACCEPT

    async def _deliver_vote(self, env: Any) -> None:
        vote = self._take_decoded(env)
        if vote is not None:
            await self._take_vote(vote)

    async def _validate_tx_msg(self, env: Any) -> Verdict:
        try:
            tx = Tx.from_wire(unpack(env.body, self.genesis.max_tx_bytes))
        except DecodeError:
            self.metrics["rejected:tx_malformed"] += 1
            return Verdict.REJECT
        reason = self.mempool.add(tx, self.state)
        if reason is None:
            return Verdict.ACCEPT
        self.metrics[f"tx_rejected:{reason.split(':')[0]}"] += 1
        # a forger or a malformed tx costs the forwarding peer; a tx merely stale for our state does not
        return Verdict.IGNORE if self.mempool.is_verified(tx.hash) else Verdict.REJECT

    async def _validate_evidence_msg(self, env: Any) -> Verdict:
        try:
            ev = Evidence.from_wire(unpack(env.body, self.config.max_message))
        except DecodeError:
            self.metrics["rejected:evidence_malformed"] += 1
            return Verdict.REJECT
        if ev.check(self.genesis.chain_id) is not None:
            self.metrics["rejected:evidence_invalid"] += 1
            return Verdict.REJECT
        return Verdict.ACCEPT if await self.add_evidence(ev, gossip=False) else Verdict.IGNORE

    async def _deliver_noop(self, env: Any) -> None:
        """Transactions and evidence are taken into the pools during validation."""
