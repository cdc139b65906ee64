"""Hostile input against real daemons: each message is dropped and counted, nothing else breaks."""

import asyncio
import json
import re
import time
import urllib.request

import pytest

from consensus.block import Block
from consensus.header import EMPTY_HASH, BlockHeader, merkle_root
from consensus.inbound import encode_proposal
from consensus.messages import Proposal, Vote
from consensus.tx import Tx
from gossip.codec import pack
from gossip.crypto import KeyPair, sha256
from tests.gossip.rawpeer import RawPeer
from tests.integration.harness import cli, http_status, wait_for

pytestmark = pytest.mark.integration


def metric(net, i, name, **labels) -> float:
    text = urllib.request.urlopen(net.url(i) + "/metrics", timeout=3).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and (m.group(2) or "") == want:
            return float(m.group(3))
    return 0.0


def next_slot_block(net, chain_id: str, keys: dict[str, KeyPair], ahead_ms: int = 0) -> tuple[Block, KeyPair]:
    """A block signed by the real scheduled proposer of the next slot, dated ``ahead_ms`` into it."""
    schedule = net.get(0, "/schedule")
    status = net.get(0, "/status")
    slot = next(s for s in schedule["slots"] if s["slot"] >= status["current_slot"] + 1)
    kp = keys[slot["proposer"]]
    header = BlockHeader(chain_id, status["height"] + 1, slot["slot"], slot["start_ms"] + ahead_ms,
                         bytes.fromhex(status["latest_block_hash"]), kp.node_id, merkle_root([]), sha256(b""),
                         merkle_root([]), EMPTY_HASH, EMPTY_HASH, b"")
    return Block(header, kp.sign(header.signed_bytes())), kp


def proposal_msg(block: Block, kp: KeyPair, chain_id: str | None = None) -> bytes:
    """The ``consensus/proposal`` body for a fresh ``block`` proposed by ``kp`` in its own slot."""
    h = block.header
    proposal = Proposal(chain_id or h.chain_id, h.height, h.slot, block.hash, -1, kp.node_id).signed(kp)
    return encode_proposal(proposal, block, [])


@pytest.mark.timeout(120)
def test_hostile_messages_are_dropped_counted_and_harmless(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    net.start_all()
    net.wait_height(2, timeout=30)
    chain_id = net.get(0, "/genesis")["chain_id"]
    keys = {}
    for i in range(4):
        kp = KeyPair.load(net.home(i) / "node_key.json")
        keys[kp.node_id] = kp

    async def attack() -> None:
        peer = RawPeer(chain_id)
        await peer.connect_and_handshake(net.url(0))
        try:
            await peer.send(b"\xc1\xff not msgpack")                                     # malformed frame
            await peer.send(peer.envelope("consensus/proposal", b"\x93\x01"))             # malformed body
            await peer.send(peer.envelope("no/such/topic", b"x"))                         # unknown topic
            good = peer.envelope("consensus/vote", b"x")
            good[-1] = bytes(64)
            await peer.send(good)                                                          # bad envelope signature
            block, kp = next_slot_block(net, chain_id, keys, ahead_ms=10)
            forged = Block(block.header, bytes(64))
            await peer.send(peer.envelope("consensus/proposal", proposal_msg(forged, kp)))  # bad block signature
            late, kp = next_slot_block(net, chain_id, keys, ahead_ms=60_000)
            await peer.send(peer.envelope("consensus/proposal", proposal_msg(late, kp)))    # future timestamp
            other = BlockHeader("other-chain", *block.header.to_wire()[1:])
            wrong = Block(other, kp.sign(other.signed_bytes()))
            await peer.send(peer.envelope("consensus/proposal", proposal_msg(wrong, kp, "other-chain")))
            stranger_vote = Vote("prevote", chain_id, net.get(0, "/status")["height"] + 1, 0, EMPTY_HASH,
                                 peer.node_id).signed(peer.keypair)
            await peer.send(peer.envelope("consensus/vote", pack(stranger_vote.to_wire())))  # not a delegate
            replay = peer.envelope("consensus/vote", pack(stranger_vote.to_wire()), seq=int(time.time() * 1e6) - 600_000_000)
            await peer.send(replay)                                                        # stale seq
            await asyncio.sleep(1.0)
        finally:
            await peer.close()

    asyncio.run(attack())

    def counted() -> bool:
        return (metric(net, 0, "fedchain_gossip_dropped_total", reason="malformed") >= 1
                and metric(net, 0, "fedchain_gossip_dropped_total", reason="unknown_topic") >= 1
                and metric(net, 0, "fedchain_gossip_dropped_total", reason="bad_signature") >= 1
                and metric(net, 0, "fedchain_gossip_dropped_total", reason="stale") >= 1
                and metric(net, 0, "fedchain_consensus_rejected_total", reason="block_malformed") >= 1
                and metric(net, 0, "fedchain_consensus_rejected_total", reason="bad_signature") >= 1
                and metric(net, 0, "fedchain_consensus_events_total", event="ignored:future_timestamp") >= 1
                and metric(net, 0, "fedchain_consensus_rejected_total", reason="wrong_chain") >= 1
                and metric(net, 0, "fedchain_consensus_rejected_total", reason="vote_not_delegate") >= 1)

    wait_for(counted, 10, "every hostile message to be counted by reason")

    # nothing lost: the chain goes on, and a valid transaction still lands; its replay is refused
    h = max(net.heights())
    net.wait_height(h + 2, timeout=20)
    res = cli("tx", "transfer", net.node_id(1), "5", "--home", str(net.home(0)), "--node", net.url(0),
              "--wait", "--timeout", "20", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    tx_hash = json.loads(res.stdout)["hash"]
    committed = net.get(1, f"/txs/{tx_hash}")
    assert committed["status"] == "committed"
    sender = KeyPair.load(net.home(0) / "node_key.json")
    nonce = net.get(0, f"/accounts/{sender.node_id}")["nonce"]
    replayed = Tx("transfer", chain_id, sender.node_id, nonce, [net.node_id(1), 5]).signed(sender)
    status, body = http_status(net.url(0) + "/txs", pack(replayed.to_wire()), {"Content-Type": "application/msgpack"})
    assert status == 422 and "nonce" in body["error"]["message"]
    wrong_chain = Tx("transfer", "other-chain", sender.node_id, nonce + 1, [net.node_id(1), 5]).signed(sender)
    status, body = http_status(net.url(0) + "/txs", pack(wrong_chain.to_wire()), {"Content-Type": "application/msgpack"})
    assert status == 422 and "chain" in body["error"]["message"]


@pytest.mark.timeout(60)
def test_bad_http_requests_get_4xx_json(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    net.start_all()
    net.wait_height(1, timeout=30)
    base = net.url(0)
    cases = [
        ("/blocks/abc", 400), ("/blocks/-1", 400), ("/blocks/999999", 404), ("/blocks?from=1&limit=1000", 400),
        ("/blocks?from=x", 400), ("/commit/zz", 400), ("/accounts/nothex", 400), ("/accounts/" + "ab" * 32, 404),
        ("/txs/1234", 400), ("/txs/" + "00" * 32, 404), ("/no/such/route", 404),
    ]
    for path, code in cases:
        status, body = http_status(base + path)
        assert status == code, (path, status, body)
        assert body["error"]["code"] == code and body["error"]["message"], path
    status, body = http_status(base + "/txs", b"\xc1garbage", {"Content-Type": "application/msgpack"})
    assert 400 <= status < 500 and body["error"]["message"]
    status, body = http_status(base + "/txs", b"{}", {"Content-Type": "text/plain"})
    assert status == 415
    assert net.get(0, "/health")
