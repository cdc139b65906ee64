"""The Byzantine delegate behaviours of ``[fault]`` (``node/faults.py``) on real daemons: each one
misbehaves as it claims, and the honest delegates cope.

What a faulty node sends is watched from outside by observer peers built on the project's own
wire code (``tests.hostile.peer.HostilePeer``): every daemon floods every message to every
connected peer, and an envelope names its original publisher, so an observer connected to the
faulty node sees everything that node publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter

import pytest

from gossip.wire import MSG
from node.faults import LIE_DELAY_S, LIE_HEIGHT
from tests.hostile.peer import HostilePeer
from tests.integration.harness import Testnet, cli, get_json, wait_for
from tests.integration.test_hostile import metric

pytestmark = pytest.mark.integration


def node_log(net: Testnet, i: int) -> str:
    return (net.home(i) / "logs" / "node.log").read_text(errors="replace")


async def watch_gossip(urls: list[str], chain_id: str, seconds: float) -> Counter[tuple[str, str]]:
    """Envelopes seen by one observer peer per URL during ``seconds``, by (topic, publisher)."""
    seen: Counter[tuple[str, str]] = Counter()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def read(peer: HostilePeer) -> None:
        while (left := deadline - loop.time()) > 0:
            try:
                frame = await peer.receive(timeout=left)
            except TimeoutError:
                return
            if frame is None:
                return
            if frame[0] == MSG:
                seen[(frame[1], frame[2])] += 1

    async with contextlib.AsyncExitStack() as stack:
        peers = [await stack.enter_async_context(HostilePeer(chain_id)) for _ in urls]
        for peer, url in zip(peers, urls):
            await peer.connect(url)
        await asyncio.gather(*(read(p) for p in peers))
    return seen


def publishers(seen: Counter[tuple[str, str]], topic: str) -> set[str]:
    return {sender for (t, sender) in seen if t == topic}


@pytest.mark.timeout(150)
def test_a_vote_withholding_delegate_sends_no_vote_and_the_others_finalize_without_it(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    net.enable_faults(3, "withhold_votes")
    net.start_all()
    ids = [net.node_id(i) for i in range(4)]
    net.wait_height(2, timeout=60)
    chain_id = net.get(0, "/genesis")["chain_id"]
    start = max(net.heights())
    seen = asyncio.run(watch_gossip([net.url(3), net.url(0)], chain_id, 8.0))
    voters = publishers(seen, "consensus/vote")
    assert ids[3] not in voters, "the withholding delegate published a vote"
    assert set(ids[:3]) <= voters, voters  # the observers do see every honest delegate's votes
    # three honest delegates are exactly the quorum of four: they finalize, and the withholder follows
    net.wait_height(start + 5, timeout=40)
    assert "FAULT withhold_votes" in node_log(net, 3)
    # no honest vote is missing from what honest nodes decided with: every commit has all three
    for h in range(start + 1, start + 5):
        signers = {s["voter"] for s in net.get(0, f"/commit/{h}")["signatures"]}
        assert set(ids[:3]) <= signers, (h, signers)


@pytest.mark.timeout(180)
def test_a_delegate_lying_about_its_height_is_backed_off_and_a_restarted_node_still_catches_up(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    net.enable_faults(3, "lie_height")
    net.start_all()
    net.wait_height(2, nodes=[0, 1, 2], timeout=60)
    before = {d["id"]: d["missed_total"] for d in net.get(0, "/delegates")["delegates"]}
    # the lie: a huge final height, and a page of blocks that arrives late and holds nothing
    assert net.get(3, "/status")["final_height"] == LIE_HEIGHT
    t0 = time.monotonic()
    page = get_json(net.url(3) + "/blocks?from=1&raw=1", timeout=LIE_DELAY_S + 10)
    assert page["blocks"] == [] and time.monotonic() - t0 >= LIE_DELAY_S * 0.9
    assert "FAULT lie_height" in node_log(net, 3)
    # honest nodes asked the liar, got nothing, and backed it off
    wait_for(lambda: all(metric(net, i, "fedchain_consensus_events_total", event="sync_backoffs") >= 1
                         for i in range(3)), 30, "every honest node to back the liar off")
    # a node restarted after missing blocks catches up from honest peers although the liar claims more
    net.kill(1, signal.SIGKILL)
    h = max(net.heights([0, 2]))
    net.wait_height(h + 4, nodes=[0, 2], timeout=40)
    net.start(1)
    target = max(net.heights([0, 2]))
    net.wait_height(target, nodes=[1], timeout=60)
    assert net.get(1, f"/blocks/{target}")["hash"] == net.get(0, f"/blocks/{target}")["hash"]
    # nobody was jailed, and the liar cost the delegates that stayed up no slot
    after = net.get(0, "/delegates")["delegates"]
    assert not any(d["jailed"] for d in after)
    ids = {net.node_id(i) for i in (0, 2, 3)}
    assert all(d["missed_total"] - before[d["id"]] <= 2 for d in after if d["id"] in ids), (before, after)


@pytest.mark.timeout(150)
def test_a_mempool_flooding_delegate_fills_only_its_quota_and_honest_transactions_land(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    net.enable_faults(3, "flood_mempool")
    net.start_all()
    flooder = net.node_id(3)
    net.wait_height(2, timeout=60)

    def flood_txs_in_blocks() -> int:
        page = net.get(0, "/blocks?from=1&limit=100")
        return sum(tx["sender"] == flooder for b in page["blocks"] for tx in b["txs"])

    # the flood is real: the flooder's transactions fill its quota of every block
    included = wait_for(lambda: (n := flood_txs_in_blocks()) >= 48 and n, 40, "48 flood transactions in blocks")
    assert included >= 48
    assert "FAULT flood_mempool" in node_log(net, 3)
    # ... but no honest mempool holds more than its per-sender quota of them
    for i in range(3):
        assert len(net.get(i, f"/mempool?sender={flooder}")["txs"]) <= 16
    # and an honest transaction still lands, and every node keeps finalizing
    res = cli("tx", "transfer", net.node_id(2), "5", "--home", str(net.home(0)), "--node", net.url(0),
              "--wait", "--timeout", "30", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    h = max(net.heights())
    net.wait_height(h + 3, timeout=30)
    honest = {net.node_id(i) for i in range(4)}
    for i in range(3):
        assert not {b["node_id"] for b in net.get(i, "/net_info")["banned"]} & honest
