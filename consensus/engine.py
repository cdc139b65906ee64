"""The live consensus driver: clock, gossip and validation results in; votes, proposals and final
blocks out.

The protocol itself is the pure per-height state machine of :mod:`consensus.machine`
(Tendermint with rounds as DPoS slots). This driver owns its inputs and carries out its actions:

* a ticker (:mod:`consensus.ticker`) starts each round when the clock reaches its slot, fires
  the machine's timeouts, and re-broadcasts this node's votes of the round once mid-slot (gossip
  is best effort; a vote lost once must not stall a height);
* gossip messages enter through :mod:`consensus.inbound` (cheap checks first) and become machine
  inputs; each new block is validated once, in the background, by the
  :class:`~consensus.executor.BlockExecutor`, and only the first block of each (producer, slot)
  is ever validated: a second one is evidence of a double sign, not more work;
* the machine's actions run in order on one worker task (votes are signed by the
  :class:`~consensus.signer.Signer`, which persists before it signs), except building a fresh
  proposal, which may take long (the application prepares its payload) and runs apart;
* a decision is applied by the executor, then the next height starts; what happened is told to
  the subscribers of :mod:`consensus.events`.

Nothing slow runs on the event loop: disk writes go to the store's writer thread, payload
verification and preparation are the application's to move off the loop.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from consensus.app import Application
from consensus.block import Block
from consensus.clockcheck import ClockCheck
from consensus.equivocation import Evidence
from consensus.events import EventBus
from consensus.evidence import EvidencePool
from consensus.executor import BlockExecutor
from consensus.header import SignedHeader
from consensus.inbound import Inbound, encode_proposal
from consensus.machine import (
    Action,
    ArmTimeout,
    CastVote,
    Decide,
    Equivocation,
    FetchDecided,
    HeightMachine,
    Propose,
    Timeouts,
)
from consensus.mempool import Mempool
from consensus.messages import Commit, Proposal, Vote
from consensus.network import TOPIC_EVIDENCE, TOPIC_PROPOSAL, TOPIC_TX, TOPIC_VOTE, Network
from consensus.proposer import BlockProposer
from consensus.schedule import slot_at
from consensus.signer import Signer
from consensus.sync import BlockFetcher, Syncer
from consensus.ticker import Clock, SystemClock, Ticker
from consensus.tx import Tx
from consensus.views import ChainView
from gossip.codec import pack
from gossip.crypto import KeyPair

log = logging.getLogger("fedchain.consensus")

REGOSSIP_TXS = 64
"""Pending transactions gossiped again per final block, at most (see Mempool.due_for_gossip)."""


class TxRejected(ValueError):
    """A submitted transaction the mempool refused; the message says why."""


@dataclass
class EngineConfig:
    sync_interval_s: float = 1.0
    max_message: int = 8 * 1024 * 1024
    checkpoint: tuple[int, bytes] | None = None  # trusted (height, block hash), see consensus.sync


class Engine:
    def __init__(self, keypair: KeyPair, genesis: Any, store: Any, app: Application, network: Network,
                 fetcher: BlockFetcher, config: EngineConfig | None = None, *, clock: Clock | None = None,
                 proposer: Callable[..., BlockProposer] = BlockProposer,
                 rng: random.Random | None = None) -> None:  # rng: the peers sync asks (seeded in netsim)
        self.config = config or EngineConfig()
        self.me = keypair.node_id
        self.genesis = genesis
        self.store = store
        self.network = network
        self.clock = clock or SystemClock()
        self.metrics: Counter[str] = Counter()
        self.mempool = Mempool()
        self.evidence = EvidencePool(genesis.chain_id)
        self.signer = Signer(keypair, genesis.chain_id, store)
        self.executor = BlockExecutor(genesis, store, app, is_verified=self.mempool.is_verified,
                                      checkpoint=self.config.checkpoint)
        self.proposer = proposer(genesis, self.signer, self.mempool, self.evidence, app)
        self.syncer = Syncer(fetcher, self._peer_urls, self, interval_s=self.config.sync_interval_s,
                             max_message=self.config.max_message,
                             horizon_ms=genesis.unbonding_blocks * genesis.slot_ms,
                             checkpoint=self.config.checkpoint, clock=lambda: self.now_ms() / 1000,
                             wall_ms=self.now_ms, metrics=self.metrics, rng=rng)
        self.inbound = Inbound(self)
        self.view = ChainView(self)
        self.clock_check = ClockCheck(genesis.max_clock_drift_ms)
        self.timeouts = Timeouts.for_slot(genesis.slot_ms)
        self.events = EventBus()
        self.ticker = Ticker(self)
        self._tasks: list[asyncio.Task] = []
        self._actions: asyncio.Queue[tuple[int, Action]] = asyncio.Queue()
        self._background: set[asyncio.Task] = set()
        self._new_height()

    # ----- per-height bookkeeping ---------------------------------------------------------------
    def _new_height(self) -> None:
        ex = self.executor
        self.machine = HeightMachine(ex.height, ex.voters, ex.quorum, ex.schedule.proposer, self.me,
                                     self.timeouts, lock=self.signer.lock(ex.height))
        self.blocks: dict[bytes, Block] = {}
        self.proposals: dict[int, Proposal] = {}
        self._first_header: dict[tuple[int, str], SignedHeader] = {}
        self._own_votes: dict[str, Vote] = {}
        self.ticker.new_height(ex.height)

    @property
    def height(self) -> int:
        return self.executor.height

    @property
    def is_voter(self) -> bool:
        return self.me in self.executor.voters

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def current_slot(self) -> int:
        g = self.genesis
        return slot_at(self.now_ms(), g.genesis_time_ms, g.slot_ms)

    def tip_time_ms(self) -> int:
        parent = self.executor.parent
        return parent.header.timestamp_ms if parent is not None else self.genesis.genesis_time_ms

    def _peer_urls(self) -> list[str]:
        return [p.url for p in self.network.peers() if p.url]

    # ----- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        n, i = self.network, self.inbound
        n.subscribe(TOPIC_PROPOSAL, i.validate_proposal, i.deliver_proposal)
        n.subscribe(TOPIC_VOTE, i.validate_vote, i.deliver_vote)
        n.subscribe(TOPIC_TX, i.validate_tx, i.deliver_noop)
        n.subscribe(TOPIC_EVIDENCE, i.validate_evidence, i.deliver_noop)
        self._tasks = [asyncio.create_task(self.ticker.run(), name="consensus-ticker"),
                       asyncio.create_task(self._worker(), name="consensus-actions"),
                       asyncio.create_task(self.syncer.run(), name="sync")]
        log.info("engine started at height %d as %s (%s)", self.executor.state.height, self.me[:12],
                 "delegate" if self.is_voter else "follower")

    async def stop(self) -> None:
        for t in [*self._tasks, *self._background]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._background, return_exceptions=True)
        self._tasks = []

    def spawn(self, coro: Awaitable[Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(self._report)

    def _report(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.metrics["task_errors"] += 1
            log.error("consensus task %s failed", task.get_name(), exc_info=task.exception())

    # ----- re-broadcast (the ticker calls it once mid-slot) -------------------------------------
    async def rebroadcast(self, rnd: int) -> None:
        """Send this round's own proposal and votes again: cheap, and it heals a lost message."""
        proposal = self.proposals.get(rnd)
        if proposal is not None and proposal.proposer == self.me and proposal.block_hash in self.blocks:
            await self._publish_proposal(proposal, self.blocks[proposal.block_hash])
        for vote in list(self._own_votes.values()):
            if vote.round == rnd and vote.height == self.height:
                await self.network.publish(TOPIC_VOTE, pack(vote.to_wire()))
                self.metrics["votes_rebroadcast"] += 1

    # ----- machine inputs -------------------------------------------------------------------------
    def enqueue(self, actions: list[Action]) -> None:
        height = self.height
        for action in actions:
            self._actions.put_nowait((height, action))

    def has_proposal(self, proposal: Proposal) -> bool:
        known = self.proposals.get(proposal.round)
        return known is not None and known.signed_bytes() == proposal.signed_bytes()

    def behind(self) -> None:
        """A voter's message from a height ahead: worth a sync round (it proves nothing by itself)."""
        self.syncer.poke()

    def take_commit(self, commit: Commit) -> None:
        """A verified commit for the height being decided (carried by a next-height proposal)."""
        if commit.height == self.height:
            self.enqueue(self.machine.on_commit(commit, self.now_ms()))

    async def take_proposal(self, proposal: Proposal, block: Block, proof: list[Vote] | tuple = ()) -> None:
        """A proposal whose signatures and proposer were checked (gossip validator, or our own);
        ``proof`` holds the verified prevotes of a re-proposal's polka round."""
        if proposal.height != self.height:
            return
        known = self.proposals.get(proposal.round)
        if known is not None:
            if known.signed_bytes() != proposal.signed_bytes():
                await self.add_evidence(Evidence("double_proposal", known, proposal))
            return
        if not self._first_of_slot(block):
            return
        self.proposals[proposal.round] = proposal
        if block.hash not in self.blocks:
            self.blocks[block.hash] = block
            self.spawn(self._validate(block), f"validate-{block.height}")
        self.events.emit({"type": "proposal", "height": block.height, "round": proposal.round,
                    "slot": block.header.slot, "hash": block.hash.hex(), "producer": block.header.producer})
        self.enqueue(self.machine.on_proposal(proposal.round, block.hash, proposal.pol_round, self.now_ms(), proof))

    def _first_of_slot(self, block: Block) -> bool:
        """Only the first block a producer signed for a slot is ever validated; a second one is
        evidence of a double sign (and costs us nothing more than that)."""
        key = (block.header.slot, block.header.producer)
        first = self._first_header.get(key)
        if first is None:
            self._first_header[key] = block.signed_header()
            return True
        if first.header.hash == block.hash:
            return True
        self.spawn(self.add_evidence(Evidence("double_block", first, block.signed_header())), "evidence")
        self.metrics["rejected:double_block"] += 1
        return False

    async def _validate(self, block: Block) -> None:
        height = self.height
        reason = await self.executor.validate(block, self.now_ms())
        if height != self.height:
            return  # the chain moved on while we validated
        if reason:
            self.metrics[f"invalid_block:{reason.split(':')[0]}"] += 1
            log.warning("block %s at height %d rejected: %s", block.hash.hex()[:12], block.height, reason)
        self.enqueue(self.machine.on_validity(block.hash, reason is None, self.now_ms()))

    async def take_vote(self, vote: Vote) -> None:
        if vote.height == self.height:
            self.enqueue(self.machine.on_vote(vote, self.now_ms()))

    # ----- carrying out actions -------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            height, action = await self._actions.get()
            if height != self.height:
                continue  # decided meanwhile: actions of a finished height are void
            try:
                await self._carry_out(action)
            except Exception:
                log.exception("consensus action %r failed", action)
                self.metrics["action_errors"] += 1

    async def _carry_out(self, action: Action) -> None:
        if isinstance(action, CastVote):
            await self._cast(action)
        elif isinstance(action, ArmTimeout):
            self.ticker.arm(action.at_ms, self.height, action.kind, action.round)
        elif isinstance(action, Propose):
            self.spawn(self._propose(action), f"propose-{self.height}-{action.round}")
        elif isinstance(action, Decide):
            block = self.blocks.get(action.block_hash)
            if block is not None:
                await self.finalize(block, action.commit)
        elif isinstance(action, FetchDecided):
            held = self.blocks.get(action.block_hash)
            if held is not None:
                self.spawn(self.apply_synced(held, action.commit), f"apply-decided-{self.height}")
            else:
                self.syncer.fetch_decided(self.height, action.block_hash, action.commit)
        elif isinstance(action, Equivocation):
            await self.add_evidence(action.evidence)

    async def _cast(self, action: CastVote) -> None:
        vote = await self.signer.vote(action.kind, self.height, action.round, action.block_hash)
        if vote is None:
            log.warning("refused to sign a %s for an earlier round", action.kind)
            return
        self._own_votes[vote.kind] = vote
        await self.network.publish(TOPIC_VOTE, pack(vote.to_wire()))
        self.metrics[f"{vote.kind}s_sent"] += 1
        self.enqueue(self.machine.on_vote(vote, self.now_ms()))

    async def _propose(self, action: Propose) -> None:
        height = self.height
        if action.block_hash is None:
            retry = any(r < action.round for r in self.proposals)
            block = await self.proposer.build(self.executor.tip, self.executor.last_commit, action.round,
                                              self.now_ms(), retry)
            if block is None or height != self.height:
                return
            reason = await self.executor.validate(block, self.now_ms(), own=True)
            if reason:
                log.error("own proposal at height %d failed validation: %s", height, reason)
                return
            pol_round = -1
        else:
            block, pol_round = self.blocks[action.block_hash], action.pol_round
            self.metrics["reproposals"] += 1
        proposal = await self.signer.proposal(height, action.round, block.hash, pol_round)
        if proposal is None or height != self.height:
            return
        self.metrics["proposals"] += 1
        if action.block_hash is None:
            self.blocks[block.hash] = block
            self.enqueue(self.machine.on_validity(block.hash, True, self.now_ms()))
        await self._publish_proposal(proposal, block)
        await self.take_proposal(proposal, block)

    async def _publish_proposal(self, proposal: Proposal, block: Block) -> None:
        """Gossip a proposal with its block, and for a re-proposal the prevotes of its polka."""
        proof = self.machine.votes.for_block("prevote", proposal.pol_round, block.hash) if proposal.pol_round >= 0 \
            else []
        await self.network.publish(TOPIC_PROPOSAL, encode_proposal(proposal, block, proof))

    # ----- decisions ------------------------------------------------------------------------------
    async def finalize(self, block: Block, commit: Commit) -> bool:
        """Apply a block with its commit, then move to the next height. False if already past it."""
        applied = await self.executor.apply(block, commit)
        if applied is None:
            return False
        state = self.executor.state
        self.mempool.update(list(block.txs), state)
        if again := self.mempool.due_for_gossip(state.height, REGOSSIP_TXS, self.genesis.max_block_bytes):
            self.spawn(self._gossip_txs(again), "tx-regossip")
        self.evidence.update(block.evidence, state)
        self.metrics["blocks_final"] += 1
        self._new_height()
        h = block.header
        self.events.emit({"type": "final_block", "height": block.height, "hash": block.hash.hex(), "round": commit.round,
                    "producer": h.producer, "txs": len(block.txs), "time_ms": h.timestamp_ms,
                    "evidence": len(block.evidence), "events": applied.events})
        if applied.new_delegates:
            self.events.emit({"type": "new_delegates", "height": block.height, "delegates": state.delegates})
        self.ticker.wake()
        for kind, item in self.inbound.replay():
            if kind == "proposal":
                await self.take_proposal(*item)
            else:
                await self.take_vote(item)
        return True

    async def apply_synced(self, block: Block, commit: Commit | None) -> str | None:
        """Validate a block with the commit that finalized it (fetched from a peer, or held here
        and decided over this node's own objection), and apply it."""
        if block.height != self.height:
            return None if block.height < self.height else f"height {block.height} is not {self.height}"
        reason, objection = await self.executor.validate_final(block, commit)
        if reason:
            self.metrics["sync_rejected"] += 1
            return reason
        if objection:
            self.metrics["final_despite_objection"] += 1
            log.warning("block %s at height %d is final (a quorum committed it) though this node's check said: %s",
                        block.hash.hex()[:12], block.height, objection)
        assert commit is not None
        await self.finalize(block, commit)
        self.metrics["synced_blocks"] += 1
        return None

    # ----- evidence and transactions --------------------------------------------------------------
    async def add_evidence(self, ev: Evidence) -> bool:
        """Take evidence into the pool and gossip it; False if not new or not punishable."""
        if self.evidence.add(ev, self.executor.state) is not None:
            return False
        self.evidence_seen(ev)
        await self.network.publish(TOPIC_EVIDENCE, pack(ev.to_wire()))
        return True

    def evidence_seen(self, ev: Evidence) -> None:
        self.metrics["evidence_seen"] += 1
        log.warning("equivocation by %s at height %d (%s)", ev.offender[:12], ev.height, ev.kind)
        self.events.emit({"type": "evidence", "kind": ev.kind, "offender": ev.offender, "height": ev.height})

    async def _gossip_txs(self, txs: list[Tx]) -> None:
        for tx in txs:
            await self.network.publish(TOPIC_TX, pack(tx.to_wire()))
            self.metrics["txs_regossiped"] += 1

    async def submit_tx(self, tx: Tx) -> str:
        """Admit a transaction to the mempool and gossip it; raises :class:`TxRejected`."""
        reason = self.mempool.add(tx, self.executor.state)
        if reason:
            self.metrics[f"tx_rejected:{reason.split(':')[0]}"] += 1
            raise TxRejected(reason)
        await self.network.publish(TOPIC_TX, pack(tx.to_wire()))
        return tx.hash.hex()
