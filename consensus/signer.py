"""This node's consensus signatures, never two conflicting ones, across crashes and restarts.

Before it signs a block header, a proposal or a vote, the signer durably records what it is
about to sign (kind, height, round, hash) in the chain store, and it refuses anything that would
contradict the record: another block for the same height and slot, another vote of a kind in the
same round, anything for an earlier height or round. A request for a round already signed gets
the recorded statement signed again (Ed25519 signatures are deterministic: same bytes), so a
restarted delegate re-broadcasts what it said instead of equivocating. The lock of the current
height (Tendermint's lockedValue/lockedRound) is recorded the same way, since forgetting it after
a crash could let a delegate prevote against its own precommit.
"""

from __future__ import annotations

from consensus.header import EMPTY_HASH, BlockHeader
from consensus.messages import Proposal, Vote
from gossip.crypto import KeyPair


class Signer:
    def __init__(self, keypair: KeyPair, chain_id: str, store) -> None:
        self.keypair = keypair
        self.node_id = keypair.node_id
        self.chain_id = chain_id
        self.store = store

    def _may_sign(self, kind: str, height: int, rnd: int, block_hash: bytes) -> bytes | None:
        """The hash to sign for (kind, height, round): the requested one if nothing conflicts,
        the recorded one for a round already signed, None for an earlier height or round."""
        prior = self.store.last_signed(kind)
        if prior is None or (height, rnd) > (prior[0], prior[1]):
            return block_hash
        if (height, rnd) == (prior[0], prior[1]):
            return prior[2]
        return None

    async def header(self, header: BlockHeader) -> bytes | None:
        """Signature over a fresh block header, or None if another block was signed for its slot."""
        chosen = self._may_sign("block", header.height, header.slot, header.hash)
        if chosen != header.hash:
            return None
        await self.store.record_signing_async("block", header.height, header.slot, header.hash)
        return self.keypair.sign(header.signed_bytes())

    async def proposal(self, height: int, rnd: int, block_hash: bytes, pol_round: int) -> Proposal | None:
        """Our proposal of ``block_hash`` in round ``rnd``, or None if we proposed another."""
        if self._may_sign("proposal", height, rnd, block_hash) != block_hash:
            return None
        await self.store.record_signing_async("proposal", height, rnd, block_hash)
        return Proposal(self.chain_id, height, rnd, block_hash, pol_round, self.node_id).signed(self.keypair)

    async def vote(self, kind: str, height: int, rnd: int, block_hash: bytes) -> Vote | None:
        """Our vote; for a round already voted, the vote recorded then (whatever was asked).

        A precommit for a block is also our lock on it (Tendermint's lockedValue): the lock is
        recorded first, so that no crash can leave a precommit signed and the lock forgotten.
        """
        chosen = self._may_sign(kind, height, rnd, block_hash)
        if chosen is None:
            return None
        if chosen == block_hash:
            if kind == "precommit" and block_hash != EMPTY_HASH:
                await self.store.record_signing_async("lock", height, rnd, block_hash)
            await self.store.record_signing_async(kind, height, rnd, block_hash)
        return Vote(kind, self.chain_id, height, rnd, chosen, self.node_id).signed(self.keypair)

    def lock(self, height: int) -> tuple[int, bytes] | None:
        """(round, block hash) this node locked on at ``height`` before a restart, if any."""
        prior = self.store.last_signed("lock")
        return (prior[1], prior[2]) if prior is not None and prior[0] == height else None

