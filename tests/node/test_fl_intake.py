"""Updates coming in: the admission rules (with the sample and norm bounds), the gossip validator,
and equivocation, which becomes evidence against its author instead of a penalty for its relays."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from consensus.state import ChainState
from gossip import Verdict
from gossip.codec import DecodeError, pack
from gossip.crypto import KeyPair, sha256
from learning.bounds import sparse_norm
from node.fl.app import FLApp
from node.fl.round import Equivocation, Payload
from node.fl.settings import FLSettings
from node.fl.update import ModelUpdate
from tests.consensus.helpers import IDS, KEYS, OUTSIDER, genesis, tx
from tests.node.helpers import (
    SETTINGS,
    STATE,
    admit_all,
    advance_empty,
    ctx,
    make_update,
    round_updates,
    screen,
    signed_header,
)


def _fresh(app: FLApp, key: KeyPair = KEYS[1], **kw: Any) -> ModelUpdate:
    """A small admissible update of ``key`` on the app's current model."""
    kw = {"base_hash": app.model_hash, "base_height": app.model_height, "topk": 0.01, **kw}
    return make_update(key, np.full(app.dim, 0.1, np.float32), **kw)


@pytest.mark.parametrize("change, reason", [
    (lambda app, u: u, None),
    (lambda app, u: replace(u, chain_id="other").signed(KEYS[1]), "wrong_chain"),
    (lambda app, u: make_update(KEYS[1], np.ones(app.dim - 1), base_hash=app.model_hash), "wrong_shape"),
    (lambda app, u: make_update(OUTSIDER, np.ones(app.dim), base_hash=app.model_hash), "unregistered"),
    (lambda app, u: replace(u, base_height=app.model_height + 1).signed(KEYS[1]), "unknown_base"),
    (lambda app, u: replace(u, base_hash=sha256(b"fork")).signed(KEYS[1]), "unknown_base"),
    (lambda app, u: replace(u, base_height=0).signed(KEYS[1]), "stale_base"),
    (lambda app, u: replace(u, num_samples=SETTINGS.max_samples + 1).signed(KEYS[1]), "too_many_samples"),
    (lambda app, u: replace(u, num_samples=SETTINGS.max_samples).signed(KEYS[1]), None),
    (lambda app, u: _fresh(app, base_height=app.model_height - 1, topk=1.0), "norm_bound"),
    (lambda app, u: replace(u, seq=99), "bad_signature"),
])
async def test_check_update_admission_rules(new_app, change, reason: str | None) -> None:
    app = new_app(0)
    await advance_empty(app, range(1, SETTINGS.max_staleness + 3))
    update = _fresh(app, base_height=app.model_height - 1, base_hash=app.window.recent[app.model_height - 1])
    assert app.check_update(change(app, update), STATE) == reason


async def test_a_self_reported_sample_count_cannot_decide_the_aggregate(new_app) -> None:
    """The sample count is the averaging weight: a member may claim no more than it declared at
    registration (capped by the genesis max_samples; genesis members declare the cap)."""
    app = new_app(0)
    app.state_view = lambda: STATE
    greedy = replace(round_updates(app, flipped=False)[3], num_samples=2**64 - 1).signed(KEYS[3])
    assert app.check_update(greedy, STATE) == "too_many_samples"
    assert await screen(app, greedy) is Verdict.REJECT and app.metrics["update_rejected:too_many_samples"] == 1
    # a member registered with a declaration is held to it
    state = STATE.copy()
    state.apply_tx(tx(KEYS[0], "register", [OUTSIDER.node_id, 40]))
    assert app.sample_bound(state, OUTSIDER.node_id) == 40 and app.sample_bound(state, IDS[1]) == SETTINGS.max_samples
    assert app.check_update(_fresh(app, OUTSIDER, samples=41), state) == "too_many_samples"
    assert app.check_update(_fresh(app, OUTSIDER, samples=40), state) is None


async def test_values_at_the_float32_limit_are_refused_and_cannot_halt_the_chain(new_app) -> None:
    """Huge values gossiped by a member: refused at admission, or fedavg would move the model to the
    float32 limit and the next such update would make every proposal raise."""
    app = new_app(0, settings=FLSettings(rule="fedavg"))
    app.state_view = lambda: STATE
    for h, key in ((1, KEYS[1]), (2, KEYS[2])):
        huge = make_update(key, np.full(app.dim, 3.0e38, np.float32), base_hash=app.model_hash,
                           base_height=app.model_height, topk=1.0)
        assert await screen(app, huge) is Verdict.REJECT
        app.finalize_block(ctx(h), await app.prepare_payload(ctx(h)))
    assert app.metrics["update_rejected:norm_bound"] == 2
    assert np.isfinite(app.model).all() and float(np.abs(app.model).max()) < 1e3


def test_the_norm_bound_admits_what_an_honest_trainer_sends(new_app) -> None:
    """Norms are exactly rounded (math.fsum), so proposer and verifiers agree on every CPU."""
    app = new_app(0)
    honest = round_updates(app, flipped=False)
    assert all(app.check_update(u, STATE) is None and sparse_norm(u.sparse) < app.norm_bound for u in honest)
    assert 2 < app.norm_bound < 2.01  # clip 1, no update noise, float16 rounding, slack 2


def test_decode_update_limits_and_parses(new_app) -> None:
    app = new_app(0)
    update = _fresh(app)
    assert app.decode_update(update.encode()).id == update.id
    with pytest.raises(DecodeError, match="exceeds"):
        app.decode_update(b"\x00" * (SETTINGS.max_update_bytes + 1))
    with pytest.raises(DecodeError, match="dim must be"):
        app.decode_update(make_update(KEYS[1], np.ones(app.dim + 1), topk=0.01).encode())


def _with_loss(update: ModelUpdate, loss: float) -> bytes:
    wire = update.to_wire()
    wire[6] = loss
    return pack(wire)


@pytest.mark.parametrize("body, verdict, metric", [
    (lambda app: _fresh(app).encode(), Verdict.ACCEPT, "updates_received"),
    (lambda app: b"\xc1", Verdict.REJECT, "update_rejected:malformed"),
    (lambda app: b"\x00" * (SETTINGS.max_update_bytes + 1), Verdict.REJECT, "update_rejected:oversized"),
    (lambda app: _with_loss(_fresh(app), float("nan")), Verdict.REJECT, "update_rejected:non_finite"),
    (lambda app: _fresh(app, OUTSIDER).encode(), Verdict.REJECT, "update_rejected:unregistered"),
    (lambda app: _fresh(app, chain_id="other").encode(), Verdict.REJECT, "update_rejected:wrong_chain"),
    (lambda app: _fresh(app, topk=1.0).encode(), Verdict.REJECT, "update_rejected:norm_bound"),
    (lambda app: replace(_fresh(app), base_height=3).signed(KEYS[1]).encode(), Verdict.IGNORE, None),  # we lag
])
async def test_gossiped_updates_are_screened(new_app, body, verdict: Verdict, metric: str | None) -> None:
    app = new_app(0)
    app.state_view = lambda: STATE
    assert await screen(app, body(app)) == verdict
    assert dict(app.metrics) == ({metric: 1} if metric else {})
    assert len(app.pool) == (1 if verdict is Verdict.ACCEPT else 0)


async def test_gossip_screening_of_repeats_and_stale_updates(new_app) -> None:
    app = new_app(0)
    app.state_view = lambda: STATE
    first = _fresh(app)
    assert await screen(app, first) is Verdict.ACCEPT and app.blobs.has(first.id, "update")
    assert await screen(app, first) is Verdict.IGNORE  # already have it
    await advance_empty(app, range(1, SETTINGS.max_staleness + 3))
    assert await screen(app, _fresh(app, KEYS[2], seq=3)) is Verdict.ACCEPT
    assert await screen(app, replace(first, seq=4).signed(KEYS[1])) is Verdict.IGNORE  # too old: not a fault
    assert app.metrics["update_rejected:stale_base"] == 1


async def test_an_equivocation_is_evidence_against_its_author_never_a_cost_to_relays(new_app) -> None:
    """Member 3 sends one update to half of the network and another to the other half. Every honest
    node forwards the first conflicting copy it sees (so the evidence spreads), ignores later ones,
    rejects no relay; the next payload carries the evidence, and the author alone pays."""
    proposer, verifier = new_app(0), new_app(1)
    for app in (proposer, verifier):
        app.state_view = lambda: STATE
    honest = round_updates(proposer, flipped=False)
    one, other = honest[3], replace(honest[3], seq=99).signed(KEYS[3])
    third = replace(honest[3], seq=100).signed(KEYS[3])
    for app, (seen_first, seen_second) in ((proposer, (one, other)), (verifier, (other, one))):
        for u in honest[:3]:
            assert await screen(app, u) is Verdict.ACCEPT
        assert await screen(app, seen_first) is Verdict.ACCEPT
        assert await screen(app, seen_second) is Verdict.ACCEPT      # the evidence is forwarded once
        assert await screen(app, seen_second) is Verdict.IGNORE
        assert await screen(app, third) is Verdict.IGNORE            # further copies are not
        assert app.metrics["update_rejected:equivocation"] == 1
    payload = await proposer.prepare_payload(ctx())
    p = Payload.decode(payload, 1 << 20)
    assert p.equivocations == (Equivocation(IDS[3], 0, one.id, other.id),)
    assert [c.sender for c in p.considered] == IDS[:3]             # none of its updates for that base
    assert (await verifier.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)).ok
    outcome = verifier.finalize_block(ctx(), payload)
    assert (IDS[3], -SETTINGS.penalty_equivocation, "equivocated: two updates for one base") in outcome.stake_changes
    assert all(c[0] != IDS[3] or c[1] < 0 for c in outcome.stake_changes)
    assert (IDS[3], 0) in verifier.window.punished and verifier.pool.evidence() == []
    # punished once: the same evidence again is a provably wrong payload
    proposer.finalize_block(ctx(), payload)
    again = replace(Payload.decode(await proposer.prepare_payload(ctx(2)), 1 << 20), equivocations=p.equivocations)
    verdict = await verifier.verify_payload(ctx(2), again.encode())
    assert not verdict.ok and "already punished" in verdict.reason


async def test_an_update_arriving_after_its_senders_base_was_used_is_evidence(new_app) -> None:
    """A second update for a base whose first update a final block already considered."""
    app = new_app(0)
    app.state_view = lambda: STATE
    honest = round_updates(app, flipped=False)
    admit_all([app], honest)
    app.finalize_block(ctx(), await app.prepare_payload(ctx()))
    late = replace(honest[2], seq=7).signed(KEYS[2])
    assert await screen(app, late) is Verdict.ACCEPT and app.metrics["update_rejected:equivocation"] == 1
    p = Payload.decode(await app.prepare_payload(ctx(2)), 1 << 20)
    assert p.equivocations == (Equivocation(IDS[2], 0, honest[2].id, late.id),)


@pytest.mark.parametrize("forge, reason", [
    (lambda e, other: replace(e, second=e.first), "is not two updates for a base in the window"),
    (lambda e, other: replace(e, base_height=7), "is not two updates for a base in the window"),
    (lambda e, other: replace(e, second=other.id), "is not two signed updates of its sender for one base"),
])
async def test_forged_equivocation_evidence_is_a_fault(new_app, forge, reason: str) -> None:
    proposer, verifier = new_app(0), new_app(1)
    honest = round_updates(proposer, flipped=False)
    admit_all([proposer, verifier], honest)
    p = Payload.decode(await proposer.prepare_payload(ctx()), 1 << 20)
    framed = Equivocation(IDS[2], 0, honest[2].id, honest[2].id)
    bad = replace(p, equivocations=(forge(framed, honest[1]),)).encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)
    assert not verdict.ok and reason in verdict.reason and verifier.metrics["bad_payloads"] == 1


def test_open_membership_ends_with_the_bond_for_the_application_too(new_app) -> None:
    """In open admission a member that unstaked its bond can no longer submit."""
    g = genesis(4, admission="open", member_bond=100, app=SETTINGS.to_app_state())
    state = ChainState.from_genesis(g)
    app = new_app(0)
    update = _fresh(app, KEYS[2])
    assert app.check_update(update, state) is None
    state.begin_block(1, sha256(b"b1"), IDS[0], [])
    state.apply_tx(tx(KEYS[2], "unstake", [100]))
    state.end_block()
    assert app.check_update(update, state) == "unregistered"


async def test_an_update_on_a_model_this_node_has_not_finalized_yet_is_kept_until_it_has(new_app) -> None:
    """A node one block behind cannot check an update's base yet: it does not forward it (IGNORE),
    but keeps it and admits it once the block is final here, instead of fetching it again from a
    peer when a proposal lists it. Only what passes every other check is kept, one per sender."""
    ahead, behind = new_app(0), new_app(1)
    for app in (ahead, behind):
        app.state_view = lambda: STATE
    payload = await ahead.prepare_payload(ctx(1))
    ahead.finalize_block(ctx(1), payload)
    early = _fresh(ahead)                                   # trained on height 1, which `behind` lacks
    forged = replace(_fresh(ahead, key=KEYS[2]), seq=99)    # bad signature: never kept
    for update in (early, forged):
        assert await screen(behind, update) is Verdict.IGNORE and behind.pool.get(update.id) is None
    behind.finalize_block(ctx(1), payload)
    assert behind.pool.get(early.id) is not None and behind.check_update(early, STATE) is None
    assert behind.pool.get(forged.id) is None and behind.metrics["updates_kept_until_base_final"] == 1


async def test_updates_kept_for_the_next_model_are_bounded_in_bytes_and_one_per_sender(new_app, monkeypatch) -> None:
    """What a node behind keeps is bounded: one update per sender for the next model, and at most
    EARLY_BYTES in all; what does not fit is dropped (peers still serve it by id)."""
    ahead, behind = new_app(0), new_app(1)
    for app in (ahead, behind):
        app.state_view = lambda: STATE
    payload = await ahead.prepare_payload(ctx(1))
    ahead.finalize_block(ctx(1), payload)
    first, again, other = _fresh(ahead), replace(_fresh(ahead), seq=7).signed(KEYS[1]), _fresh(ahead, key=KEYS[2])
    monkeypatch.setattr("node.fl.intake.EARLY_BYTES", len(first.encode()) + len(other.encode()) - 1)
    for update in (first, again, other):
        assert await screen(behind, update) is Verdict.IGNORE
    assert [u.id for u in behind.early.values()] == [first.id] and behind.early_bytes == len(first.encode())
    behind.finalize_block(ctx(1), payload)
    assert behind.early == {} and behind.early_bytes == 0
    assert behind.pool.get(first.id) is not None and behind.pool.get(other.id) is None


async def test_update_seq_reads_a_stored_update_header_without_its_body(new_app) -> None:
    """Telemetry times every update of every final block; after settlement the update is only on
    disk, and its creation time comes from the stored header (the body is never decoded)."""
    app = new_app(0)
    update = _fresh(app)
    assert app.blobs.put("update", update.encode(), app.model_height) == update.id
    assert app.pool.get(update.id) is None and app.update_seq(update.id) == update.seq
    assert app.update_seq(sha256(b"never stored")) is None
    for junk in (pack(["not", "an", "update"]), pack([*update.to_wire()[:2], -1, *update.to_wire()[3:]]), b"\xc1"):
        assert app.update_seq(app.blobs.put("update", junk, app.model_height)) is None
