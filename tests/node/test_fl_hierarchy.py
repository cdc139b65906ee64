"""A hierarchical round in a block: the payload lists each cluster's partial, a verifier re-runs the
clusters it is assigned and takes the others by hash, and a proposer that lies about one cluster's
partial is caught by the delegates assigned that cluster."""

from __future__ import annotations

from dataclasses import replace

import pytest

from learning.hierarchy import verifier_clusters
from node.fl.app import FLApp
from node.fl.faults import LyingPartialApp
from node.fl.round import Payload
from tests.consensus.helpers import IDS, KEYS
from tests.node.helpers import SETTINGS, STATE, admit_all, ctx, round_updates, signed_header

TIERED = replace(SETTINGS, hierarchy={"threshold": 4, "cluster_size": 2, "verify": 1})
"""Four updates in two clusters of two; each verifier re-runs one cluster."""


def decode(payload: bytes) -> Payload:
    return Payload.decode(payload, 1 << 20)


def verifier_of(cluster: int, assigned: bool) -> str:
    """A delegate that the assignment of height 1 does (or does not) give ``cluster`` to re-run."""
    return next(v for v in STATE.delegates if v != IDS[0]
                and (cluster in verifier_clusters(1, v, 2, 1, STATE.delegates)) is assigned)


def serving(app: FLApp):
    """``fetch_model`` of a verifier whose peer is ``app``: its model blobs by hash."""
    async def fetch(digest: bytes) -> bytes | None:
        return app.blobs.get(digest, "model")
    return fetch


async def test_a_hierarchical_payload_lists_the_partials_and_an_assigned_verifier_accepts_it(new_app) -> None:
    proposer = new_app(0, settings=TIERED, node_id=IDS[0])
    verifier = new_app(1, settings=TIERED, node_id=verifier_of(0, True), fetch_model=serving(proposer))
    admit_all([proposer, verifier], round_updates(proposer))
    payload = await proposer.prepare_payload(ctx())
    p = decode(payload)
    assert [r.cluster for r in p.partials] == [0, 1] and sorted(m for r in p.partials for m in r.members) == [0, 1, 2, 3]
    assert all(proposer.blobs.get(r.hash, "model") is not None for r in p.partials if r.hash)
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)
    assert verdict.ok, verdict.reason
    assert verifier.metrics["clusters_rerun"] == verifier.metrics["partials_fetched"] == 1   # the other by hash
    assert verifier.finalize_block(ctx(), payload).app_hash == p.new_hash
    assert "clusters" in p.to_json() and decode(p.encode()) == p


async def test_cluster_checks_weigh_senders_by_the_chains_standing(new_app) -> None:
    """A hierarchical round's weights carry each sender's standing too: a verifier holding the
    chain's record accepts, one holding another record does not agree (its cheap weight check)."""
    from learning.standing import FLOOR

    on = replace(TIERED, standing=True)
    proposer = new_app(0, settings=on, node_id=IDS[0])
    verifier = new_app(1, settings=on, node_id=verifier_of(0, True), fetch_model=serving(proposer))
    other = new_app(2, settings=on, node_id=verifier_of(0, True), fetch_model=serving(proposer))
    updates = round_updates(proposer, flipped=False)
    record = {updates[1].sender: ((0, 0.5), (0, 0.3))}
    proposer.window.standing = verifier.window.standing = record
    admit_all([proposer, verifier, other], updates)
    payload = await proposer.prepare_payload(ctx())
    assert [c.weight for c in decode(payload).considered] == [u.num_samples * (FLOOR if i == 1 else 1.0)
                                                                for i, u in enumerate(updates)]
    header = signed_header(KEYS[0], payload)
    verdict = await verifier.verify_payload(ctx(header=header), payload)
    assert verdict.ok, verdict.reason
    verdict = await other.verify_payload(ctx(header=header), payload)
    assert not verdict.ok and "not agreed" in verdict.reason


async def test_a_verifier_that_cannot_fetch_a_partial_re_runs_its_cluster(new_app) -> None:
    proposer = new_app(0, settings=TIERED, node_id=IDS[0])
    verifier = new_app(1, settings=TIERED, node_id=IDS[1])        # no peer serves the partials
    admit_all([proposer, verifier], round_updates(proposer))
    payload = await proposer.prepare_payload(ctx())
    assert (await verifier.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)).ok
    assert verifier.metrics["clusters_rerun"] == 2 and verifier.metrics["partials_fetched"] == 0


@pytest.mark.parametrize("cluster", [0, 1])
async def test_a_lying_cluster_head_is_caught_by_the_verifier_that_re_runs_its_cluster(new_app, cluster: int) -> None:
    liar = new_app(0, settings=TIERED, node_id=IDS[0], cls=LyingPartialApp)
    liar.lie_cluster = cluster
    watching = new_app(1, settings=TIERED, node_id=verifier_of(cluster, True), fetch_model=serving(liar))
    elsewhere = new_app(2, settings=TIERED, node_id=verifier_of(cluster, False), fetch_model=serving(liar))
    admit_all([liar, watching, elsewhere], round_updates(liar))
    payload = await liar.prepare_payload(ctx())
    header = signed_header(KEYS[0], payload)
    verdict = await watching.verify_payload(ctx(header=header), payload)
    assert not verdict.ok and f"the partial aggregate of cluster {cluster} is wrong" in verdict.reason, verdict.reason
    assert watching.metrics["bad_payloads"] == 1
    # the lie is consistent everywhere else: a delegate that takes that partial by hash cannot tell
    assert (await elsewhere.verify_payload(ctx(header=header), payload)).ok
    # the catching delegate carries the fault, and the block deciding the height punishes the liar
    carrying = await watching.prepare_payload(ctx(producer=1, attempt=1))
    assert decode(carrying).faults == ((header.to_wire(), payload),)
    outcome = elsewhere.finalize_block(ctx(producer=1, attempt=1), carrying)
    assert (IDS[0], -SETTINGS.penalty_bad_block, "proposed a wrong model") in outcome.stake_changes


BAD_RECORDS = {
    "clusters reordered": (lambda p: replace(p, partials=p.partials[::-1]), "not the assignment of height 1"),
    "weight inflated": (lambda p: replace(p, partials=(replace(p.partials[0], weight=p.partials[0].weight * 2),)
                                          + p.partials[1:]), "the weight of cluster 0 is not the weight"),
    "evaluations invented": (lambda p: replace(p, partials=(replace(p.partials[0], evaluations=len(p.evals) + 1),)
                                               + p.partials[1:]), "claim more evaluations than the payload records"),
    "set aside but accepted": (lambda p: replace(p, partials=(replace(p.partials[0], kept=False),) + p.partials[1:]),
                               "accepts a member of cluster 0, whose partial was set aside"),
}


@pytest.mark.parametrize("name", list(BAD_RECORDS))
async def test_cluster_records_every_verifier_checks(new_app, name: str) -> None:
    """What any verifier checks of every cluster, whether or not it re-runs it."""
    proposer = new_app(0, settings=TIERED, node_id=IDS[0])
    verifier = new_app(1, settings=TIERED, node_id=IDS[1], fetch_model=serving(proposer))
    admit_all([proposer, verifier], round_updates(proposer))
    mutate, reason = BAD_RECORDS[name]
    bad = mutate(decode(await proposer.prepare_payload(ctx()))).encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)
    assert not verdict.ok and reason in verdict.reason, verdict.reason
    assert verifier.metrics["bad_payloads"] == 1


async def test_a_flat_payload_may_not_carry_partials(new_app) -> None:
    proposer, verifier = new_app(0), new_app(1)
    admit_all([proposer, verifier], round_updates(proposer))
    tiered = new_app(2, settings=TIERED, node_id=IDS[2])
    admit_all([tiered], round_updates(tiered))
    forged = replace(decode(await proposer.prepare_payload(ctx())),
                     partials=decode(await tiered.prepare_payload(ctx())).partials).encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], forged)), forged)
    assert not verdict.ok and "other cluster partials" in verdict.reason, verdict.reason


@pytest.mark.parametrize("tail, problem", [
    ([[]], "fl payload partials malformed"),                       # a flat payload has no tenth field
    ([[[0, [0, 1], b"", 1, 0, True]]], "fl payload partial malformed"),   # an int weight
    ([[[0, [-1], b"", 1.0, 0, True]]], "fl payload partial malformed"),
])
def test_malformed_cluster_records_do_not_decode(tail: list, problem: str) -> None:
    from gossip.codec import DecodeError, pack

    fields = ["fl/2", "clustering", b"a", b"b", [], [], [], [], ""]
    assert decode(pack(fields)).partials == ()
    with pytest.raises(DecodeError, match=problem):
        decode(pack(fields + tail))
