"""Attacks on the consensus layer from a hostile process against real daemons.

Each test runs the attacker in its own process (the project's own wire code, driven to lie) and
then checks the harness invariants: honest nodes keep finalizing, no honest peer is banned,
memory and responsiveness stay within the stated bounds; and that the attack cost the attacker.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web

from consensus.block import Block
from consensus.equivocation import Evidence
from consensus.header import EMPTY_HASH, BlockHeader, merkle_root
from consensus.inbound import encode_proposal
from consensus.messages import Proposal, Vote
from consensus.tx import Tx
from gossip.codec import pack
from gossip.crypto import KeyPair, sha256
from tests.hostile.harness import Bounds, run_hostile
from tests.hostile.peer import HostilePeer
from tests.integration.harness import cli
from tests.integration.test_hostile import metric

pytestmark = pytest.mark.integration


# ----- a peer that claims a huge height and serves nothing, slowly --------------------------------

async def lie_about_height(victims: list[str], chain_id: str, port: int, seconds: float) -> dict:
    hits = {"status": 0, "blocks": 0}

    async def status(request: web.Request) -> web.Response:
        hits["status"] += 1
        return web.json_response({"final_height": 10**15})

    async def blocks(request: web.Request) -> web.Response:
        hits["blocks"] += 1
        await asyncio.sleep(8)  # hold the syncer as long as its timeout allows
        return web.json_response({"blocks": []})

    app = web.Application()
    app.router.add_get("/status", status)
    app.router.add_get("/blocks", blocks)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    peers = [HostilePeer(chain_id, listen_url=f"http://127.0.0.1:{port}") for _ in victims]
    try:
        for peer, url in zip(peers, victims):
            await peer.__aenter__()
            await peer.connect(url)
        await asyncio.sleep(seconds)
    finally:
        for peer in peers:
            await peer.close()
        await runner.cleanup()
    return hits


@pytest.mark.timeout(180)
def test_a_peer_claiming_a_huge_height_is_backed_off_and_costs_no_slot(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    before = {d["id"]: d["missed_total"] for d in net.get(0, "/delegates")["delegates"]}
    port = net.base_port + net.n + 1
    seconds = 20.0
    with victims.monitor() as monitor:
        hits = run_hostile(lie_about_height, [net.url(i) for i in range(net.n)], chain_id, port, seconds,
                           timeout=seconds + 30)
        victims.check(monitor, Bounds(min_new_blocks=5))
    # each victim asked a few times, backing off exponentially, instead of once a second
    assert hits["status"] <= net.n * 6, hits
    assert all(metric(net, i, "fedchain_consensus_events_total", event="sync_backoffs") >= 1 for i in range(net.n))
    # no honest delegate was kept from its slots by the liar: nobody jailed, few slots missed
    after = net.get(0, "/delegates")["delegates"]
    assert not any(d["jailed"] for d in after)
    assert all(d["missed_total"] - before[d["id"]] <= 2 for d in after), (before, after)


# ----- a flood of fee-free transactions from one funded account ------------------------------------

async def flood_mempool(url: str, chain_id: str, seed: bytes, count: int) -> int:
    sender = KeyPair.from_seed(seed)
    async with HostilePeer(chain_id) as peer:
        await peer.connect(url)
        for nonce in range(1, count + 1):
            tx = Tx("vote", chain_id, sender.node_id, nonce, [[sender.node_id]]).signed(sender)
            await peer.publish("consensus/tx", pack(tx.to_wire()))
        await asyncio.sleep(1.0)
        return 0 if peer.closed else 1


@pytest.mark.timeout(180)
def test_one_account_flooding_the_mempool_fills_only_its_quota(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    seed = b"\x42" * 32
    attacker = KeyPair.from_seed(seed)
    res = cli("tx", "transfer", attacker.node_id, "50", "--home", str(net.home(0)), "--node", net.url(0),
              "--wait", "--timeout", "30", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    with victims.monitor() as monitor:
        run_hostile(flood_mempool, net.url(1), chain_id, seed, 5000, timeout=120)
        mempool = net.get(1, "/mempool")
        assert sum(t["sender"] == attacker.node_id for t in mempool["txs"]) <= 16
        # an honest transaction relayed by honest peers still lands, and nobody is banned for relaying
        res = cli("tx", "transfer", net.node_id(2), "5", "--home", str(net.home(3)), "--node", net.url(3),
                  "--wait", "--timeout", "30", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        victims.check(monitor, Bounds())
    refused = sum(metric(net, 1, "fedchain_tx_rejected_total", reason=r) for r in ("full", "stale"))
    assert refused >= 1, "the flood never reached the mempool"


# ----- junk for the next height, and evidence nobody can be punished for ----------------------------

async def junk_for_the_next_height(url: str, chain_id: str, count: int) -> tuple[bool, str]:
    async with HostilePeer(chain_id) as peer:
        await peer.connect(url)
        try:
            return await _send_junk(peer, url, chain_id, count), peer.node_id
        except ConnectionError:  # the victim hung up on us mid-flood
            return True, peer.node_id


async def _send_junk(peer: HostilePeer, url: str, chain_id: str, count: int) -> bool:
    """Votes by fresh keys for the height after the victim's, and now and then evidence against
    such a key; True when the victim cut us off."""
    for i in range(count):
        if i % 64 == 0:  # follow the chain, so the junk is always for the height after the victim's
            async with peer.session.get(url + "/status") as resp:
                height = (await resp.json())["height"] + 1
        stranger = KeyPair.generate()
        vote = Vote("prevote", chain_id, height + 1, i, EMPTY_HASH, stranger.node_id).signed(stranger)
        await peer.publish("consensus/vote", pack(vote.to_wire()))
        if i % 64 == 0:
            a = Vote("precommit", chain_id, height, 1, b"\x01" * 32, stranger.node_id).signed(stranger)
            b = Vote("precommit", chain_id, height, 1, b"\x02" * 32, stranger.node_id).signed(stranger)
            await peer.publish("consensus/evidence", pack(Evidence("double_precommit", a, b).to_wire()))
        if peer.closed:
            return True
    return await peer.cut_off()


@pytest.mark.timeout(180)
def test_strangers_votes_for_the_next_height_and_their_evidence_get_the_sender_cut_off(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    with victims.monitor() as monitor:
        cut_off, attacker = run_hostile(junk_for_the_next_height, net.url(0), chain_id, 2048, timeout=120)
        victims.check(monitor, Bounds())
    assert cut_off and attacker in victims.banned(0)
    assert metric(net, 0, "fedchain_consensus_rejected_total", reason="not_a_candidate") >= 1
    for i in range(1, net.n):  # nothing of it was forwarded
        assert metric(net, i, "fedchain_consensus_rejected_total", reason="not_a_candidate") == 0


# ----- forged slots, oversized far-future blocks, and a delegate voting in every round ---------------

def _block_for(chain_id: str, status: dict, signer: KeyPair, height: int, slot: int, payload: bytes) -> Block:
    header = BlockHeader(chain_id, height, slot, 0, bytes.fromhex(status["latest_block_hash"]), signer.node_id,
                         merkle_root([]), sha256(payload), merkle_root([]), EMPTY_HASH, EMPTY_HASH, b"")
    return Block(header, signer.sign(header.signed_bytes()), (), payload)


async def forged_blocks(url: str, chain_id: str, count: int, payload_kib: int) -> tuple[bool, str]:
    """Proposals signed by a fresh key: slot 0 at the victim's height (once a walk over the whole
    chain), and oversized ones for heights far ahead (once kept in a cache bounded by count).

    The attacker follows the chain: a proposal for a height the victim has already finalized is
    ignored at no cost to its sender (an honest relay can deliver one late), so junk aimed at a
    stale height would test nothing."""
    async with HostilePeer(chain_id) as peer:
        await peer.connect(url)
        payload = b"\x00" * (payload_kib * 1024)
        try:
            for i in range(count):
                if i % 16 == 0:
                    async with peer.session.get(url + "/status") as resp:
                        status = await resp.json()
                height = status["height"] + (1 if i % 2 == 0 else 5 + i)
                slot = 0 if i % 2 == 0 else status["current_slot"] + 1
                block = _block_for(chain_id, status, peer.keypair, height, slot, payload if i % 2 else b"")
                proposal = Proposal(chain_id, height, slot, block.hash, -1, peer.node_id).signed(peer.keypair)
                await peer.publish("consensus/proposal", encode_proposal(proposal, block, []))
                if peer.closed:
                    return True, peer.node_id
        except ConnectionError:
            return True, peer.node_id
        return await peer.cut_off(), peer.node_id


@pytest.mark.timeout(180)
def test_forged_slots_and_oversized_far_future_blocks_cost_little_and_cut_the_sender_off(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    with victims.monitor() as monitor:
        cut_off, attacker = run_hostile(forged_blocks, net.url(0), chain_id, 400, 512, timeout=120)
        victims.check(monitor, Bounds(rss_growth_mb=100))
    assert cut_off and attacker in victims.banned(0)
    assert metric(net, 0, "fedchain_consensus_rejected_total", reason="round_before_parent") >= 1


async def vote_in_every_round(url: str, chain_id: str, seed: bytes, rounds: int) -> int:
    """A real delegate's key voting nil in round after round (past, present and far ahead)."""
    delegate = KeyPair.from_seed(seed)
    async with HostilePeer(chain_id) as peer:
        await peer.connect(url)
        sent = 0
        for r in range(rounds):
            if r % 500 == 0:
                async with peer.session.get(url + "/status") as resp:
                    status = await resp.json()
            rnd = (status["current_slot"] + 2 + r) if r % 2 else r // 2  # far ahead, or long past
            vote = Vote("prevote", chain_id, status["height"] + 1, rnd, EMPTY_HASH, delegate.node_id).signed(delegate)
            try:
                await peer.publish("consensus/vote", pack(vote.to_wire()))
            except ConnectionError:
                break
            sent += 1
            if peer.closed:
                break
        return sent


@pytest.mark.timeout(180)
def test_a_delegate_voting_in_every_round_costs_a_bounded_amount(victims):
    net = victims.net
    chain_id = net.get(0, "/genesis")["chain_id"]
    seed = bytes.fromhex(json.loads((net.home(3) / "node_key.json").read_text())["seed"])
    with victims.monitor() as monitor:
        sent = run_hostile(vote_in_every_round, net.url(0), chain_id, seed, 20_000, timeout=120)
        victims.check(monitor, Bounds())
    assert sent > 0
    refused = (metric(net, 0, "fedchain_consensus_rejected_total", reason="round_before_parent")
               + metric(net, 0, "fedchain_consensus_events_total", event="ignored:round_ahead"))
    assert refused >= 1
