"""Verifying an FL payload by re-running its round: what is a fault (provably wrong on every
machine, punished), what is only "not agreed" (another CPU could cause it: refused, nobody
punished), what is unavailable, and what tolerances let delegates on different CPUs agree."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import node.fl.update as update_module
from gossip import Verdict
from gossip.codec import pack
from gossip.crypto import sha256
from node.fl.faults import WrongModelApp
from node.fl.app import MAX_FAULT_BYTES
from node.fl.verify import FAULT_CARRY_HEIGHTS
from node.fl.data import load_node_data
from node.fl.intake import FETCHES_AT_ONCE
from node.fl.round import NOT_AGREED, Payload
from tests.consensus.helpers import IDS, KEYS, OUTSIDER
from tests.integration.harness import REPO
from tests.node.helpers import (
    SETTINGS,
    STATE,
    admit_all,
    ctx,
    honest_deltas,
    make_update,
    round_updates,
    screen,
    signed_header,
)


EVAL_SET = len(load_node_data(SETTINGS, IDS[0], IDS[:4]).public_eval)  # samples every node evaluates on


def decode(payload: bytes) -> Payload:
    return Payload.decode(payload, 1 << 20)


def _serve(what: str) -> Callable:
    async def fetch(update_id: bytes, producer: str) -> bytes | None:
        if what == "nothing":
            return None
        if what == "garbage":
            return b"\xc1"
        return make_update(KEYS[0], np.ones(4, np.float32)).encode()  # a genuine update, but another one
    return fetch


@pytest.mark.parametrize("serve, reason", [
    (None, "is not available from peers"),
    ("nothing", "is not available from peers"),
    ("garbage", "fetched malformed"),
    ("other", "peer served another update"),
])
async def test_an_unobtainable_update_is_not_a_fault(new_app, serve: str | None, reason: str) -> None:
    proposer = new_app(0)
    verifier = new_app(1, fetch=_serve(serve) if serve else None)
    admit_all([proposer], round_updates(proposer))
    payload = await proposer.prepare_payload(ctx())
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)
    assert not verdict.ok and reason in verdict.reason
    assert verifier.metrics["bad_payloads"] == 0 and verifier.metrics["payloads_unavailable"] == 1
    assert decode(await verifier.prepare_payload(ctx(slot=1, producer=1))).faults == ()


@pytest.mark.parametrize("retry", [False, True])
async def test_a_tampered_payload_is_recorded_and_its_producer_punished(new_app, retry: bool) -> None:
    """The next proposal of the height carries the fault: a full round, or (when the engine saw the
    height stall) a skipped one; either way another delegate checks the fault and applies it."""
    a, b, c = new_app(0), new_app(1), new_app(2)
    admit_all([a, b, c], round_updates(a))
    genuine = await a.prepare_payload(ctx())
    tampered = replace(decode(genuine), new_hash=sha256(b"forged")).encode()
    bad_header = signed_header(KEYS[0], tampered)
    verdict = await b.verify_payload(ctx(header=bad_header), tampered)
    assert not verdict.ok and "re-running the aggregation gives a different model hash" in verdict.reason
    assert b.metrics["bad_payloads"] == 1
    second = ctx(producer=1, attempt=1, retry=retry)
    carrying = await b.prepare_payload(second)
    p = decode(carrying)
    assert p.faults == ((bad_header.to_wire(), tampered),)
    assert (p.skipped == NOT_AGREED) is retry and bool(p.considered) is not retry
    assert (await c.verify_payload(replace(second, signed_header=signed_header(KEYS[1], carrying, slot=1)), carrying)).ok
    outcome = c.finalize_block(second, carrying)
    assert (IDS[0], -SETTINGS.penalty_bad_block, "proposed a wrong model") in outcome.stake_changes
    assert outcome.events[0]["faults"] == 1 and c.metrics["faults_punished"] == 1


async def test_a_fault_outlives_its_height_when_its_producer_also_holds_the_retry(new_app) -> None:
    """A delegate can hold two slots in a row (the last of one cycle, the first of the next). Its
    proven bad proposal is then followed by its own retry, a skip that leaves its fault out and
    decides the height. The fault rides on the next height's proposal instead: delegates that proved
    it accept it from their own proof, a node that never saw it cannot check it (unavailable,
    nobody punished), a retry leaves it out, and once punished it is never carried again."""
    liar, b, c, late = new_app(0), new_app(1), new_app(2), new_app(2)  # late: a node that joins late
    admit_all([liar, b, c, late], round_updates(liar))
    tampered = replace(decode(await liar.prepare_payload(ctx())), new_hash=sha256(b"forged")).encode()
    bad_header = signed_header(KEYS[0], tampered)
    for app in (b, c):
        assert not (await app.verify_payload(ctx(header=bad_header), tampered)).ok
    retry = ctx(producer=0, attempt=1, retry=True)
    skip = await liar.prepare_payload(retry)
    assert decode(skip).faults == ()
    for app in (b, c, late):
        assert (await app.verify_payload(replace(retry, signed_header=signed_header(KEYS[0], skip, slot=1)), skip)).ok
        app.finalize_block(retry, skip)
    assert decode(await b.prepare_payload(ctx(2, producer=1, slot=3, attempt=1, retry=True))).faults == ()
    nxt = ctx(2, producer=1, slot=2)
    carrying = await b.prepare_payload(nxt)
    assert decode(carrying).faults == ((bad_header.to_wire(), tampered),)
    proposal = replace(nxt, signed_header=signed_header(KEYS[1], carrying, height=2, slot=2))
    assert (await c.verify_payload(proposal, carrying)).ok
    verdict = await late.verify_payload(proposal, carrying)
    assert not verdict.ok and "did not prove" in verdict.reason, verdict.reason
    assert late.metrics["payloads_unavailable"] == 1 and late.metrics["bad_payloads"] == 0
    outcome = c.finalize_block(nxt, carrying)
    assert (IDS[0], -SETTINGS.penalty_bad_block, "proposed a wrong model") in outcome.stake_changes
    b.finalize_block(nxt, carrying)
    assert decode(await b.prepare_payload(ctx(3, producer=1, slot=4))).faults == ()


async def test_a_fault_is_carried_for_a_bounded_number_of_heights(new_app) -> None:
    """Unpunished, a proven fault rides on proposals for FAULT_CARRY_HEIGHTS heights after its
    own; after that nobody keeps it, and a block listing it is provably wrong."""
    liar, keeper, other = new_app(0), new_app(1), new_app(2)
    bad = replace(decode(await liar.prepare_payload(ctx())), base_hash=sha256(b"old")).encode()
    fault = (signed_header(KEYS[0], bad).to_wire(), bad)
    assert not (await keeper.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)).ok
    for h in range(1, FAULT_CARRY_HEIGHTS + 2):
        assert decode(await keeper.prepare_payload(ctx(h, producer=1))).faults == (fault,), h
        final = await other.prepare_payload(ctx(h, producer=2))  # decides each height without it
        keeper.finalize_block(ctx(h, producer=2), final)
        other.finalize_block(ctx(h, producer=2), final)
    h = FAULT_CARRY_HEIGHTS + 2
    assert decode(await keeper.prepare_payload(ctx(h, producer=1))).faults == ()
    stale = replace(decode(await other.prepare_payload(ctx(h, producer=2))), faults=(fault,)).encode()
    verdict = await keeper.verify_payload(ctx(h, producer=2, header=signed_header(KEYS[2], stale, height=h)), stale)
    assert not verdict.ok and "fault is not a signed proposal of this height" in verdict.reason


async def test_a_proposal_checked_after_its_height_was_decided_is_not_kept_as_a_fault(new_app) -> None:
    """A proposal that arrives after its height became final here no longer builds on this node's
    model: refused, but never carried as a fault (its producer did nothing wrong)."""
    a, b = new_app(0), new_app(1)
    admit_all([a, b], round_updates(a))
    first = await a.prepare_payload(ctx())
    b.finalize_block(ctx(), first)
    assert not (await b.verify_payload(ctx(header=signed_header(KEYS[2], first, slot=1), slot=1), first)).ok
    assert decode(await b.prepare_payload(ctx(2, producer=1))).faults == ()


async def test_the_wrong_model_fault_mode_proposes_a_provably_bad_payload(new_app) -> None:
    liar, honest = new_app(0, cls=WrongModelApp), new_app(1)
    admit_all([liar, honest], round_updates(liar))
    payload = await liar.prepare_payload(ctx())
    verdict = await honest.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)
    assert not verdict.ok and "different model hash" in verdict.reason and honest.metrics["bad_payloads"] == 1


def _listing_fault(header: Callable[[bytes], Any]):
    """Mutator: list the genuine payload itself as a fault, under the given header."""
    def mutate(p: Payload, genuine: bytes) -> Payload:
        return replace(p, faults=((header(genuine).to_wire(), genuine),))
    return mutate


def _first(p: Payload, **change: Any) -> tuple:
    return (replace(p.considered[0], **change),) + p.considered[1:]


def _forged(p: Payload) -> bytes:
    return replace(p, new_hash=sha256(b"forged")).encode()


def _skip(p: Payload) -> Payload:
    return replace(p, new_hash=p.base_hash, considered=(), evals=(), skipped=NOT_AGREED)


BAD_PAYLOADS: dict[str, tuple[Callable[[Payload, bytes], Any], str]] = {
    "not msgpack": (lambda p, g: b"\xc1", "malformed FL payload"),
    "another rule": (lambda p, g: replace(p, rule="median"), "payload uses rule median, genesis says clustering"),
    "another base": (lambda p, g: replace(p, base_hash=sha256(b"old")), "does not build on the current global"),
    "sender twice": (lambda p, g: replace(p, considered=p.considered + p.considered[:1]), "lists a sender twice"),
    "wrong sender": (lambda p, g: replace(p, considered=_first(p, sender=IDS[5])), "names the wrong sender"),
    "wrong base": (lambda p, g: replace(p, considered=_first(p, base_height=3)), "names the wrong sender or base"),
    "model hash": (lambda p, g: replace(p, new_hash=sha256(b"x")), "different model hash"),
    "evaluation out of tolerance": (lambda p, g: replace(p, evals=(p.evals[0] - 5 / EVAL_SET,) + p.evals[1:]),
                                    "an evaluate value is out of tolerance: evaluation 0 recorded as"),
    "skipped at the first attempt": (lambda p, g: _skip(p), "skipped as not agreed only after a failed attempt"),
    "valid payload listed as fault": (_listing_fault(lambda g: signed_header(KEYS[0], g)),
                                      "a listed fault is a valid payload"),
    "fault by an outsider": (_listing_fault(lambda g: signed_header(OUTSIDER, g)),
                             "fault is not a signed proposal of this height"),
    "fault of another height": (_listing_fault(lambda g: signed_header(KEYS[0], g, height=2)),
                                "fault is not a signed proposal of this height"),
    "fault of another chain": (_listing_fault(lambda g: signed_header(KEYS[0], g, chain_id="other")),
                               "fault is not a signed proposal of this height"),
    "fault header malformed": (lambda p, g: replace(p, faults=(([1, 2], g),)), "fault header malformed"),
    "one fault twice": (lambda p, g: replace(p, faults=((signed_header(KEYS[2], _forged(p)).to_wire(), _forged(p)),) * 2),
                        "two faults of one producer at one height"),
}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
async def test_each_provably_wrong_payload_is_a_fault(new_app, name: str) -> None:
    proposer, verifier = new_app(0), new_app(1)
    admit_all([proposer, verifier], round_updates(proposer))
    genuine = await proposer.prepare_payload(ctx())
    mutate, reason = BAD_PAYLOADS[name]
    bad = mutate(decode(genuine), genuine)
    bad = bad if isinstance(bad, bytes) else bad.encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)
    assert not verdict.ok and reason in verdict.reason, verdict.reason
    assert verifier.metrics["bad_payloads"] == 1
    carrying = decode(await verifier.prepare_payload(ctx(slot=1, producer=1)))
    assert carrying.faults == ((signed_header(KEYS[0], bad).to_wire(), bad),)


async def test_a_bad_payload_too_large_to_carry_is_refused_but_not_kept(new_app) -> None:
    proposer, verifier = new_app(0), new_app(1)
    genuine = decode(await proposer.prepare_payload(ctx()))
    bad = replace(genuine, base_hash=sha256(b"old"), skipped="x" * MAX_FAULT_BYTES).encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)
    assert not verdict.ok and verifier.metrics["bad_payloads"] == 1
    assert decode(await verifier.prepare_payload(ctx(slot=1, producer=1))).faults == ()


NOT_AGREED_PAYLOADS: dict[str, tuple[Callable[[Payload], Payload], str]] = {
    "weight": (lambda p: replace(p, considered=_first(p, weight=1.0)), "reaches other decisions"),
    "verdict": (lambda p: replace(p, considered=tuple(replace(c, accepted=True) for c in p.considered)),
                "reaches other decisions"),
    "score": (lambda p: replace(p, considered=_first(p, score=p.considered[0].score * 1.01)),
              "suspicion scores differ beyond the tolerance"),
    "evaluation count": (lambda p: replace(p, evals=p.evals[:-1]), "the rule asked for"),
    "evaluation near the tolerance": (lambda p: replace(p, evals=(p.evals[0] - 3 / EVAL_SET,) + p.evals[1:]),
                                      "an evaluate value is near the tolerance"),
}


@pytest.mark.parametrize("name", list(NOT_AGREED_PAYLOADS))
async def test_what_another_cpu_could_cause_is_refused_but_never_punished(new_app, name: str) -> None:
    """Other decisions, scores or numbers of evaluations could come from other kernels, so they are
    no proof against the proposer: the block is not voted for, and no fault is recorded."""
    proposer, verifier = new_app(0), new_app(1)
    admit_all([proposer, verifier], round_updates(proposer))
    mutate, reason = NOT_AGREED_PAYLOADS[name]
    bad = mutate(decode(await proposer.prepare_payload(ctx()))).encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)
    assert not verdict.ok and "round not agreed" in verdict.reason and reason in verdict.reason, verdict.reason
    assert verifier.metrics["bad_payloads"] == 0 and verifier.metrics["payloads_not_agreed"] == 1
    assert decode(await verifier.prepare_payload(ctx(slot=1, producer=1))).faults == ()


async def test_scores_and_evaluations_within_tolerance_are_accepted(new_app) -> None:
    """A proposer on another CPU reports scores a few ulps off and accuracies a sample off: the
    verifier accepts, and feeds the rule the proposer's accuracies so it decides as it did."""
    proposer, verifier = new_app(0), new_app(1)
    admit_all([proposer, verifier], round_updates(proposer))
    p = decode(await proposer.prepare_payload(ctx()))
    one_sample = 1.0 / len(verifier.data.public_eval)
    nudged = replace(p, considered=tuple(replace(c, score=c.score * (1 + 1e-12)) for c in p.considered),
                     evals=tuple(min(1.0, v + one_sample) for v in p.evals)).encode()
    assert (await verifier.verify_payload(ctx(), nudged)).ok
    assert verifier.finalize_block(ctx(), nudged).app_hash == p.new_hash


async def test_a_listed_update_must_pass_admission(new_app) -> None:
    proposer, verifier = new_app(0), new_app(1)
    updates = round_updates(proposer)
    updates[2] = replace(updates[2], signature=b"\x00" * 64)  # slipped into the pools unchecked
    for app in (proposer, verifier):
        for u in updates:
            assert app.pool.add(u) is None
    payload = await proposer.prepare_payload(ctx())
    verdict = await verifier.verify_payload(ctx(), payload)
    assert not verdict.ok and verdict.reason == "payload lists an inadmissible update: bad_signature"


async def test_an_update_is_aggregated_once_per_sender_and_base(new_app) -> None:
    proposer, verifier = new_app(0), new_app(1)
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    first = await proposer.prepare_payload(ctx())
    for app in (proposer, verifier):
        assert (await app.verify_payload(ctx(), first)).ok
        app.finalize_block(ctx(), first)
    # the same update again at height 2 (still a usable base): refused by admission and verification
    assert proposer.admit(updates[0]) == "duplicate"
    proposer.pool.add(updates[0])  # slipped in unchecked
    again = await proposer.prepare_payload(ctx(2))
    verdict = await verifier.verify_payload(ctx(2), again)
    assert not verdict.ok and "already aggregated for that base" in verdict.reason


async def test_a_verifier_on_another_cpu_kind_accepts_an_honest_proposal(new_app, tmp_path) -> None:
    """An honest proposal computed with other BLAS and torch kernels (another CPU generation) must
    be accepted: verifiers may not compare what is only reported (suspicion scores) bit for bit."""
    verifier = new_app(1)
    deltas, _ = honest_deltas(4, verifier.dim, seed=5, spread=0.5)
    updates = [make_update(KEYS[i], d / np.linalg.norm(d), base_hash=verifier.model_hash, samples=50 + i)
               for i, d in enumerate(deltas)]  # dense float32: sums that are not exact in float64
    admit_all([verifier], updates)
    (tmp_path / "updates").write_bytes(pack([u.encode() for u in updates]))
    other = "Nehalem" if os.environ.get("OPENBLAS_CORETYPE") == "Prescott" else "Prescott"
    env = {**os.environ, "OPENBLAS_CORETYPE": other, "ATEN_CPU_CAPABILITY": "default", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "tests.node.cpu_proposer", str(tmp_path / "updates"),
                    str(tmp_path / "payload"), str(tmp_path / "blobs.sqlite")], cwd=REPO, env=env, check=True,
                   timeout=120)
    payload = (tmp_path / "payload").read_bytes()
    verdict = await verifier.verify_payload(ctx(), payload)
    assert verdict.ok, verdict.reason


async def test_a_verifier_checks_each_gossiped_update_signature_once(new_app, monkeypatch) -> None:
    """Updates that came in over gossip were signature-checked on admission; re-checking them when
    the proposal arrives (the busiest moment of every delegate) would repeat that work, while an
    update fetched from a peer is new bytes and is checked."""
    checked: list[str] = []
    real = update_module.verify

    def counting(sender: str, message: bytes, signature: bytes) -> bool:
        checked.append(sender)
        return real(sender, message, signature)

    monkeypatch.setattr(update_module, "verify", counting)
    proposer, verifier = new_app(0), new_app(1)
    verifier.state_view = lambda: STATE
    updates = round_updates(proposer)
    admit_all([proposer], updates)
    for u in updates[:-1]:
        assert await screen(verifier, u.encode()) == Verdict.ACCEPT
    assert len(checked) == len(updates) - 1

    async def serve(update_id: bytes, producer: str) -> bytes | None:
        return updates[-1].encode()
    verifier.fetch = serve
    payload = await proposer.prepare_payload(ctx())
    checked.clear()
    assert (await verifier.verify_payload(ctx(), payload)).ok
    assert checked == [updates[-1].sender]  # only the fetched one


async def test_a_verifier_lacking_the_listed_updates_fetches_them_at_once_and_only_once(new_app) -> None:
    """A node back from an outage lacks every update a block lists: fetched one after another,
    each would cost a round trip while the block's check holds the chain's lock."""
    proposer = new_app(0)
    admit_all([proposer], round_updates(proposer))
    payload = await proposer.prepare_payload(ctx())
    listed = [c.update_id for c in decode(payload).considered]
    in_flight, most, asked = 0, 0, []

    async def fetch(update_id: bytes, producer: str) -> bytes | None:
        nonlocal in_flight, most
        asked.append(update_id)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.01)  # a round trip: the others start meanwhile
        in_flight -= 1
        held = proposer.local_update(update_id)
        return held.encode() if held is not None else None

    verifier = new_app(1, fetch=fetch)
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)
    assert verdict.ok, verdict.reason
    assert len(listed) >= 3 and sorted(asked) == sorted(listed)  # each fetched once, then served locally
    assert most == min(len(listed), FETCHES_AT_ONCE)


async def test_a_block_listing_made_up_updates_costs_a_few_fetches_not_one_per_id(new_app) -> None:
    asked = []

    async def fetch(update_id: bytes, producer: str) -> bytes | None:
        asked.append(update_id)
        await asyncio.sleep(0.01)
        return None

    verifier = new_app(1, fetch=fetch)
    await verifier.prefetch([bytes([i]) * 32 for i in range(40)], IDS[0])
    assert len(asked) == FETCHES_AT_ONCE  # the first ones to fail stop the rest
