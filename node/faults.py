"""Deliberate misbehaviour of the chain layer for evaluation, chosen at wiring time from the
``[fault]`` config (the federated-learning faults are in :mod:`node.fl.faults`).

Each fault wraps a production part, so the production classes carry no fault flags and a node
without faults configured runs none of this code.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from consensus.engine import TOPIC_PROPOSAL
from consensus.inbound import encode_proposal
from consensus.proposer import BlockProposer
from consensus.types import Block, Proposal
from gossip.crypto import KeyPair

log = logging.getLogger("fedchain.fault")


class DoubleSigningProposer(BlockProposer):
    """A Byzantine proposer: for each block it proposes, it signs and gossips a second, different
    block for the same slot (bypassing the signer's records), which honest nodes must turn into
    evidence and a slash."""

    def __init__(self, keypair: KeyPair, network: Any, *args: Any) -> None:
        super().__init__(*args)
        self.keypair = keypair
        self.network = network

    async def build(self, tip: Any, last_commit: Any, slot: int, now_ms: int, retry: bool = False) -> Block | None:
        block = await super().build(tip, last_commit, slot, now_ms, retry)
        if block is not None:
            log.warning("FAULT double_sign: signing a second block at height %d slot %d", block.height, slot)
            header = replace(block.header, timestamp_ms=block.header.timestamp_ms + 1)
            twin = Block(header, self.keypair.sign(header.signed_bytes()), block.txs, block.payload,
                         block.evidence, block.last_commit)
            proposal = Proposal(header.chain_id, header.height, slot, twin.hash, -1, self.keypair.node_id)
            await self.network.publish(TOPIC_PROPOSAL, encode_proposal(proposal.signed(self.keypair), twin, []))
        return block
