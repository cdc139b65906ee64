"""CounterApp, the built-in application: a hash chain of payloads that the engine asks for,
verifies, applies and persists with each final block, and that a restarted node resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.app import BlockContext, CounterApp
from consensus.state import ChainState
from consensus.store import ChainStore
from gossip.codec import pack, unpack
from gossip.crypto import sha256
from tests.consensus.helpers import IDS, KEYS, commit_for, genesis, make_block

GENESIS = genesis(4)


def ctx(height: int, state: ChainState | None = None) -> BlockContext:
    st = state or ChainState.from_genesis(GENESIS)
    return BlockContext(height, height, IDS[0], st.last_block_hash, 1000 * height, st)


def fresh(app_state: dict | None = None, restored: dict[bytes, bytes] | None = None) -> CounterApp:
    app = CounterApp()
    app.init_chain(app_state if app_state is not None else {}, restored or {})
    return app


def test_init_chain_seeds_the_digest() -> None:
    assert fresh().app_hash() == sha256(b"fedchain")
    assert fresh({"seed": "orchard"}).app_hash() == sha256(b"orchard")
    assert fresh({"seed": "orchard"}).app_hash() == fresh({"seed": "orchard"}).app_hash()


async def test_payload_extends_the_chain_and_another_node_accepts_it() -> None:
    proposer, verifier = fresh(), fresh()
    payload = await proposer.prepare_payload(ctx(1))
    height, digest = unpack(payload)
    assert height == 1 and digest == sha256(sha256(b"fedchain") + (1).to_bytes(8, "big"))
    verdict = await verifier.verify_payload(ctx(1), payload)
    assert verdict.ok and verdict.reason == ""
    assert verifier.app_hash() == sha256(b"fedchain")  # verifying changes nothing


@pytest.mark.parametrize("payload, reason", [
    (b"", "counter payload: empty message"),
    (b"\xc1", "counter payload: malformed"),
    (b"\x00" * 2000, "counter payload: message of 2000 bytes exceeds"),
    (pack({"height": 1}), "does not extend the digest chain"),
    (pack([1]), "does not extend the digest chain"),
    (pack([2, sha256(sha256(b"fedchain") + (2).to_bytes(8, "big"))]), "does not extend the digest chain"),
    (pack([1, sha256(b"forged")]), "does not extend the digest chain"),
])
async def test_verify_rejects_malformed_or_wrong_payloads(payload: bytes, reason: str) -> None:
    verdict = await fresh().verify_payload(ctx(1), payload)
    assert not verdict.ok and reason in verdict.reason


async def test_a_payload_from_another_seed_is_rejected() -> None:
    payload = await fresh({"seed": "other"}).prepare_payload(ctx(1))
    assert not (await fresh().verify_payload(ctx(1), payload)).ok


async def test_finalize_advances_the_digest() -> None:
    app = fresh()
    payload = await app.prepare_payload(ctx(1))
    outcome = app.finalize_block(ctx(1), payload)
    assert outcome.app_hash == app.app_hash() == unpack(payload)[1]
    assert outcome.stake_changes == [] and outcome.events == [] and outcome.writes == [(CounterApp.KEY, app.app_hash())]
    assert not (await app.verify_payload(ctx(1), payload)).ok  # height 1 is done; the chain moved on
    stale = await fresh().prepare_payload(ctx(2))               # a node that missed height 1
    assert not (await app.verify_payload(ctx(2), stale)).ok


async def test_finalized_record_restores_the_app(tmp_path: Path) -> None:
    """The record ``finalize_block`` writes, stored with the block, lets a restarted app resume."""
    app = fresh()
    state = ChainState.from_genesis(GENESIS)
    with ChainStore(tmp_path / "chain.db", GENESIS) as store:
        for height in (1, 2):
            c = ctx(height, state)
            payload = await app.prepare_payload(c)
            assert (await app.verify_payload(c, payload)).ok
            block = make_block(state, KEYS[0], payload=payload)
            outcome = app.finalize_block(c, payload)
            state = state.copy()
            state.begin_block(block.height, block.hash, IDS[0], [])
            state.end_block()
            store.commit_block(block, commit_for(block, KEYS[:3]), state, outcome.writes, voters=IDS[:4])
        restored_records = dict(store.app_records())
    assert restored_records == {CounterApp.KEY: app.app_hash()}
    restored = fresh({}, restored_records)
    assert restored.app_hash() == app.app_hash()
    nxt = await app.prepare_payload(ctx(3, state))
    assert await restored.prepare_payload(ctx(3, state)) == nxt
    assert (await restored.verify_payload(ctx(3, state), nxt)).ok


def test_restored_record_wins_over_the_genesis_seed() -> None:
    record = sha256(b"some later digest")
    assert fresh({"seed": "orchard"}, {CounterApp.KEY: record}).app_hash() == record


def test_the_context_of_a_block_counts_the_slots_its_height_already_took() -> None:
    """``attempt`` comes from chain data (the block's and its parent's slots), so every verifier
    computes the same number; ``retry`` is the proposer's hint and never set for verification."""
    from consensus.schedule import Schedule
    from consensus.validation import Tip
    from tests.consensus.helpers import finalize

    state = ChainState.from_genesis(GENESIS)
    parent = make_block(state, KEYS[0], slot=4)
    after = finalize(state, parent)
    tip = Tip(GENESIS, after, CounterApp(), Schedule(IDS[:4], lambda slot: GENESIS.hash), parent, IDS[:4], 3)
    for slot, attempt in ((5, 0), (6, 1), (9, 4)):
        c = tip.context(make_block(after, KEYS[1], slot=slot))
        assert (c.height, c.slot, c.attempt, c.retry) == (2, slot, attempt, False)
    first = Tip(GENESIS, state, CounterApp(), Schedule(IDS[:4], lambda slot: GENESIS.hash), None, [], 0)
    assert first.context(make_block(state, KEYS[0], slot=0)).attempt == 0
