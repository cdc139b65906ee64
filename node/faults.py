"""Deliberate misbehaviour of the chain layer for evaluation, chosen at wiring time from the
``[fault]`` config (the federated-learning faults are in :mod:`node.fl.faults`).

Each fault wraps a production part, or sits beside it using only what any client of the node
could use, so the production classes carry no fault flags and a node without faults configured
runs none of this code. Every fault announces itself with WARNING lines tagged ``FAULT``.

* ``double_sign``: :class:`DoubleSigningProposer` signs a second block for each of its slots.
* ``withhold_votes``: :class:`VoteWithholdingNetwork` is the engine's network with the node's
  own prevotes and precommits dropped (its engine still counts them, as a Byzantine delegate's
  would, so it keeps following the chain and proposing).
* ``lie_height``: :func:`height_lie_middleware` makes ``/status`` claim :data:`LIE_HEIGHT` and
  ``/blocks`` serve nothing, after :data:`LIE_DELAY_S` (the most a syncing peer's 10 s deadline
  lets it hold the peer).
* ``clock_offset_ms``: :class:`SkewedClock` is the wall clock of the engine and of gossip, that
  many milliseconds off (monotonic time is untouched, as on a device whose NTP failed).
* ``flood_mempool``: :class:`MempoolFlooder` keeps submitting valid fee-free transactions (a
  transfer of 1 to itself, which leaves every balance as it was) from the node's account, each
  as soon as the mempool takes it, and gossips them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from consensus.block import Block
from consensus.engine import TxRejected
from consensus.inbound import encode_proposal
from consensus.messages import Proposal, Vote
from consensus.network import TOPIC_PROPOSAL, TOPIC_VOTE, Network
from consensus.proposer import BlockProposer
from consensus.tx import Tx
from gossip.codec import DecodeError, unpack
from gossip.crypto import KeyPair

log = logging.getLogger("fedchain.fault")


class SkewedClock:
    """A wall clock ``offset_ms`` off the real one, for the engine (``now_ms``) and for gossip
    (``wall_ms``, ``monotonic``)."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms
        log.warning("FAULT clock_offset_ms: this node's wall clock is %+d ms off", offset_ms)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms

    wall_ms = now_ms

    def monotonic(self) -> float:
        return time.monotonic()

LIE_HEIGHT = 10**15
"""The final height a ``lie_height`` node claims."""
LIE_DELAY_S = 8.0
"""How long a ``lie_height`` node holds a ``/blocks`` request before answering it with nothing."""


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


class VoteWithholdingNetwork:
    """The engine's view of gossip for a delegate that never sends its prevotes or precommits
    (re-broadcasts included); proposals, evidence and transactions still go out, and everything
    from peers still comes in. Honest delegates must reach their quorum without it."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.withheld = 0

    def subscribe(self, topic: str, validate: Callable[[Any], Awaitable[Any]],
                  deliver: Callable[[Any], Awaitable[None]]) -> None:
        self.network.subscribe(topic, validate, deliver)

    def peers(self) -> list[Any]:
        return self.network.peers()

    async def publish(self, topic: str, body: bytes) -> bytes:
        if topic != TOPIC_VOTE:
            return await self.network.publish(topic, body)
        self.withheld += 1
        try:
            vote = Vote.from_wire(unpack(body, len(body)))
            what = f"{vote.kind} at height {vote.height} round {vote.round}"
        except DecodeError:
            what = "vote"
        log.warning("FAULT withhold_votes: not sending own %s (%d withheld so far)", what, self.withheld)
        return b""


def height_lie_middleware(delay_s: float = LIE_DELAY_S) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An API middleware (added innermost, after the limits) for a node whose ``/status`` claims
    a final height of :data:`LIE_HEIGHT` and whose ``/blocks`` routes answer with nothing, late:
    a page without blocks, or a 404 for one block, after ``delay_s``."""
    log.warning("FAULT lie_height: /status claims final height %d, /blocks serves nothing after %.0f s",
                LIE_HEIGHT, delay_s)

    @web.middleware
    async def lie(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
        path = request.path
        if path == "/status":
            resp = await handler(request)
            if not isinstance(resp, web.Response) or resp.status != 200 or resp.text is None:
                return resp
            return web.json_response({**json.loads(resp.text), "height": LIE_HEIGHT, "final_height": LIE_HEIGHT})
        if path == "/blocks" or path.startswith("/blocks/"):
            log.warning("FAULT lie_height: holding %s for %.0f s, then serving nothing", request.path_qs, delay_s)
            await asyncio.sleep(delay_s)
            if path == "/blocks":
                return web.json_response({"height": LIE_HEIGHT, "next": None, "blocks": []})
            return web.json_response({"error": {"code": 404, "message": "no such block"}}, status=404)
        return await handler(request)

    return lie


class MempoolFlooder:
    """Submits self-transfers of 1 from this node's account through the engine (mempool, then
    gossip), next nonce after next nonce, until the mempool refuses the sender's next one (its
    per-sender quota is full); then waits for the next final block to make room, and goes on."""

    def __init__(self, view: Any, keypair: KeyPair, chain_id: str, idle_s: float = 0.05) -> None:
        self.view = view  # consensus.views.ChainView: what the node's own API uses
        self.keypair = keypair
        self.chain_id = chain_id
        self.idle_s = idle_s
        self.submitted = 0
        self.refused = 0
        self._last: Tx | None = None

    def _next_nonce(self) -> int:
        """One past the newest of our transactions still pending, else past the account's nonce."""
        last = self._last
        if last is not None and last.hash in self.view.mempool:
            return last.nonce + 1
        account = self.view.state.account(self.keypair.node_id)
        return (account.nonce if account is not None else 0) + 1

    async def run(self) -> None:
        me = self.keypair.node_id
        log.warning("FAULT flood_mempool: submitting fee-free self-transfers from %s as fast as they are taken",
                    me[:12])
        events = self.view.subscribe()
        try:
            while True:
                tx = Tx("transfer", self.chain_id, me, self._next_nonce(), [me, 1]).signed(self.keypair)
                try:
                    await self.view.submit_tx(tx)
                except TxRejected as exc:
                    self.refused += 1
                    if str(exc).startswith("full"):
                        log.warning("FAULT flood_mempool: %d submitted, quota full (%s); waiting for a block",
                                    self.submitted, exc)
                        await self._next_final_block(events)
                    else:
                        await asyncio.sleep(self.idle_s)
                    continue
                self._last = tx
                self.submitted += 1
                await asyncio.sleep(0)  # let the event loop serve others between submissions
        finally:
            self.view.unsubscribe(events)

    async def _next_final_block(self, events: asyncio.Queue) -> None:
        while (await events.get()).get("type") != "final_block":
            pass
