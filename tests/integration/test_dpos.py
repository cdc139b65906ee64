"""DPoS behaviour of real daemons: elections driven by transactions, and double-sign slashing."""

import json

import pytest

from tests.integration.harness import cli, wait_for

pytestmark = pytest.mark.integration


def delegate_ids(net, i=0):
    return {d["id"] for d in net.get(i, "/delegates")["delegates"]}


@pytest.mark.timeout(150)
def test_stake_and_vote_change_the_delegates_at_the_next_epoch(make_testnet):
    net = make_testnet(5, slot_ms=1000, genesis={"max_delegates": 4, "epoch_length": 6})
    net.start_all()
    ids = [net.node_id(i) for i in range(5)]
    outsider = max(ids)  # equal stakes: ties broken by id, so the largest id starts outside
    leaver = sorted(set(ids) - {outsider})[0]
    net.wait_height(1, timeout=30)
    assert delegate_ids(net) == set(ids) - {outsider}
    o, lv = ids.index(outsider), ids.index(leaver)
    heights = []
    for args, i in ((["stake", "50"], o), (["vote", outsider], lv)):
        res = cli("tx", *args, "--home", str(net.home(i)), "--node", net.url(i), "--wait", "--timeout", "30",
                  "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        heights.append(net.get(0, f"/txs/{json.loads(res.stdout)['hash']}")["height"])
    # the set changes only at epoch boundaries (the election at a boundary block counts that
    # block's transactions): not before the first boundary at or after the stake landed ...
    first = -(-heights[0] // 6) * 6
    assert delegate_ids(net) == set(ids) - {outsider} or net.heights()[0] >= first
    # ... and after the boundary that follows both, to the same set everywhere
    boundary = -(-max(heights) // 6) * 6
    net.wait_height(boundary, timeout=40)
    wait_for(lambda: all(delegate_ids(net, i) == set(ids) - {leaver} for i in range(5)), 20,
             "the new delegate set on every node")
    # and the chain keeps finalizing with the new set
    h = max(net.heights())
    net.wait_height(h + 3, timeout=30)
    assert net.get(o, "/status")["is_delegate"] is True
    assert net.get(lv, "/status")["is_delegate"] is False


@pytest.mark.timeout(150)
def test_double_signing_delegate_is_slashed_and_jailed(make_testnet):
    net = make_testnet(4, slot_ms=1000)
    cfg = net.home(3) / "config.toml"
    cfg.write_text(cfg.read_text().replace("double_sign = false", "double_sign = true"))
    net.start_all()
    offender = net.node_id(3)
    net.wait_height(1, timeout=30)

    def evidence_block():
        height = net.heights([0])[0]
        for page_start in range(1, height + 1, 100):
            for b in net.get(0, f"/blocks?from={page_start}&limit=100")["blocks"]:
                if any(ev["offender"] == offender for ev in b["evidence"]):
                    return b
        return None

    block = wait_for(evidence_block, 60, "evidence against the double signer in a block")
    assert block["evidence"][0]["kind"] in ("double_block", "double_proposal")
    wait_for(lambda: net.get(0, f"/accounts/{offender}")["jailed"], 10, "the double signer to be jailed")
    # the other three keep finalizing without the jailed delegate, and it proposes no more
    h = max(net.heights([0, 1, 2]))
    net.wait_height(h + 3, nodes=[0, 1, 2], timeout=30)
    # it may have equivocated at more than one height before its jail began (here: proposing in
    # two slots in a row): each height's evidence slashes 10% of what stake is left
    def settled():
        """The offender's account and the evidence in node 0's blocks, once they agree (a piece of
        evidence may still be on its way into a block)."""
        top = net.heights([0])[0]
        punished = {ev["height"] for page_start in range(1, top + 1, 100)
                    for b in net.get(0, f"/blocks?from={page_start}&limit=100")["blocks"]
                    for ev in b["evidence"] if ev["offender"] == offender}
        after = net.get(0, f"/accounts/{offender}")
        stake, slashed = after["stake"] + after["slashed_total"], 0
        for _ in punished:
            slashed, stake = slashed + stake // 10, stake - stake // 10
        # a block reward earned between two slashes moves the second by at most one
        return punished and abs(after["slashed_total"] - slashed) <= len(punished) - 1 and after["jailed"] and after

    after = wait_for(settled, 20, "each piece of evidence to slash 10% of the stake left")
    assert all(net.get(i, f"/accounts/{offender}")["slashed_total"] == after["slashed_total"] for i in range(3))
