"""FLApp, federated learning as the chain's application, driven in process without a network.

Several FLApp instances stand for the delegates of a 4-node chain: one proposes a payload from the
updates in its pool, the others verify it by re-running the round. Real digits data, real models,
real aggregation, a real ChainStore and BlobStore.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consensus.app import BlockContext
from consensus.state import ChainState
from consensus.store import ChainStore
from consensus.types import EMPTY_HASH, BlockHeader, SignedHeader
from gossip import Envelope, Verdict
from gossip.codec import DecodeError, pack
from gossip.crypto import KeyPair, sha256
from learning.attacks import craft_updates
from learning.models import get_flat
from node.fl.app import KEY_MODEL, KEY_RECENT, TOPIC_UPDATE, FLApp
from node.fl.blobs import BlobStore, model_bytes
from node.fl.data import NodeData, load_node_data
from node.fl.round import Payload
from node.fl.settings import FLSettings
from node.fl.update import ModelUpdate
from tests.consensus.helpers import (
    CHAIN,
    IDS,
    KEYS,
    OUTSIDER,
    commit_for,
    genesis,
    make_block,
)
from tests.node.helpers import honest_deltas, make_update

SETTINGS = FLSettings()
GENESIS = genesis(4, app=SETTINGS.to_app_state())
STATE = ChainState.from_genesis(GENESIS)


@pytest.fixture(scope="module")
def node_data() -> list[NodeData]:
    """Each genesis node's shard of digits, and the sets every node shares."""
    return [load_node_data(SETTINGS, nid, IDS[:4]) for nid in IDS[:3]]


@pytest.fixture
def new_app(tmp_path: Path, node_data: list[NodeData]):
    """Factory of initialised FLApps, one blob store each (or a shared one by name)."""
    stores: dict[str, BlobStore] = {}

    def make(i: int = 0, *, blobs: str | None = None, restored: dict[bytes, bytes] | None = None,
             **kw: Any) -> FLApp:
        name = blobs or f"node{len(stores)}"
        store = stores.get(name) or stores.setdefault(name, BlobStore(tmp_path / f"{name}.sqlite"))
        app = FLApp(SETTINGS, CHAIN, node_data[i], store, **kw)
        app.init_chain(GENESIS.app, restored or {})
        return app

    yield make
    for store in stores.values():
        store.close()


def ctx(height: int = 1, producer: int = 0, *, slot: int | None = None, state: ChainState = STATE,
        header: SignedHeader | None = None) -> BlockContext:
    return BlockContext(height, height - 1 if slot is None else slot, IDS[producer], state.last_block_hash,
                        10 * height, state, header)


def signed_header(key: KeyPair, payload: bytes, *, height: int = 1, slot: int = 0, chain_id: str = CHAIN,
                  state: ChainState = STATE) -> SignedHeader:
    """A proposal header naming ``payload``, signed by ``key``."""
    header = BlockHeader(chain_id, height, slot, 10 * height, state.last_block_hash, key.node_id, EMPTY_HASH,
                         sha256(payload), EMPTY_HASH, EMPTY_HASH, state.root(), b"")
    return SignedHeader(header, key.sign(header.signed_bytes()))


def round_updates(app: FLApp, flipped: bool = True) -> list[ModelUpdate]:
    """Updates from the four members on the app's current model; the last one sign-flipped."""
    honest, _ = honest_deltas(4, app.dim, seed=app.model_height, spread=0.5)
    deltas = 0.05 * honest
    if flipped:
        deltas[3] = craft_updates("sign_flip", deltas[3:], deltas[:3], np.random.default_rng(0), scale=3.0)[0]
    return [make_update(KEYS[i], d, base_hash=app.model_hash, base_height=app.model_height, samples=50 + i,
                        topk=SETTINGS.topk, dtype=SETTINGS.encoding) for i, d in enumerate(deltas)]


def admit_all(apps: list[FLApp], updates: list[ModelUpdate]) -> None:
    for app in apps:
        for u in updates:
            assert app.admit(u) is None


def test_init_chain_from_genesis(new_app) -> None:
    a, b = new_app(0), new_app(1)
    assert a.model_hash == b.model_hash == a.app_hash() and a.model_height == 0
    assert a.recent == {0: a.model_hash}
    assert a.dim == get_flat(a.new_net()).size > 0
    assert a.blobs.get(a.model_hash) == model_bytes(a.model)


async def test_a_second_node_verifies_the_proposal_and_reaches_the_same_state(new_app) -> None:
    proposer, verifier = new_app(0), new_app(1)
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx())
    p = Payload.decode(payload, 1 << 20)
    assert [c.sender for c in p.considered] == IDS[:4] and p.base_hash == proposer.model_hash
    assert (await verifier.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)).ok
    outcomes = [app.finalize_block(ctx(), payload) for app in (proposer, verifier)]
    assert outcomes[0].app_hash == outcomes[1].app_hash == p.new_hash != p.base_hash
    assert outcomes[0].stake_changes == outcomes[1].stake_changes
    assert proposer.model.tobytes() == verifier.model.tobytes()
    assert proposer.model_height == verifier.model_height == 1


async def test_missing_updates_are_fetched_from_the_proposer(new_app) -> None:
    proposer = new_app(0)
    asked: list[tuple[bytes, str]] = []

    async def fetch(update_id: bytes, producer: str) -> bytes | None:
        asked.append((update_id, producer))
        return proposer.update_blob(update_id)

    verifier = new_app(1, fetch=fetch)
    updates = round_updates(proposer)
    admit_all([proposer], updates)
    payload = await proposer.prepare_payload(ctx())
    assert (await verifier.verify_payload(ctx(), payload)).ok
    assert sorted(asked) == sorted((u.id, IDS[0]) for u in updates)
    assert all(verifier.pool.get(u.id) is not None and verifier.blobs.has(u.id) for u in updates)


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
    assert verifier.metrics["bad_payloads"] == 0
    assert Payload.decode(await verifier.prepare_payload(ctx(slot=1, producer=1)), 1 << 20).faults == ()


async def test_a_tampered_payload_is_recorded_and_its_producer_punished(new_app) -> None:
    a, b, c = new_app(0), new_app(1), new_app(2)
    admit_all([a, b, c], round_updates(a))
    genuine = await a.prepare_payload(ctx())
    tampered = replace(Payload.decode(genuine, 1 << 20), new_hash=sha256(b"forged")).encode()
    bad_header = signed_header(KEYS[0], tampered)
    verdict = await b.verify_payload(ctx(header=bad_header), tampered)
    assert not verdict.ok and "re-running the aggregation gives a different model hash" in verdict.reason
    assert b.metrics["bad_payloads"] == 1
    # the next proposer at this height carries the fault; another delegate checks and applies it
    carrying = await b.prepare_payload(ctx(slot=1, producer=1))
    assert Payload.decode(carrying, 1 << 20).faults == ((bad_header.to_wire(), tampered),)
    assert (await c.verify_payload(ctx(slot=1, producer=1, header=signed_header(KEYS[1], carrying, slot=1)),
                                   carrying)).ok
    outcome = c.finalize_block(ctx(slot=1, producer=1), carrying)
    assert (IDS[0], -SETTINGS.penalty_bad_block, "proposed a wrong model") in outcome.stake_changes
    assert outcome.events[0]["faults"] == 1 and c.metrics["faults_punished"] == 1


async def test_the_wrong_model_fault_mode_proposes_a_provably_bad_payload(new_app) -> None:
    liar, honest = new_app(0, wrong_model=True), new_app(1)
    admit_all([liar, honest], round_updates(liar))
    payload = await liar.prepare_payload(ctx())
    verdict = await honest.verify_payload(ctx(header=signed_header(KEYS[0], payload)), payload)
    assert not verdict.ok and "different model hash" in verdict.reason


def _listing_fault(header: Callable[[bytes], SignedHeader]):
    """Mutator: list the genuine payload itself as a fault, under the given header."""
    def mutate(p: Payload, genuine: bytes) -> Payload:
        return replace(p, faults=((header(genuine).to_wire(), genuine),))
    return mutate


BAD_PAYLOADS: dict[str, tuple[Callable[[Payload, bytes], Any], str]] = {
    "not msgpack": (lambda p, g: b"\xc1", "malformed FL payload"),
    "another rule": (lambda p, g: replace(p, rule="median"), "payload uses rule median, genesis says clustering"),
    "another base": (lambda p, g: replace(p, base_hash=sha256(b"old")), "does not build on the current global"),
    "sender twice": (lambda p, g: replace(p, considered=p.considered + p.considered[:1]), "lists a sender twice"),
    "wrong sender": (lambda p, g: replace(p, considered=(replace(p.considered[0], sender=IDS[5]),) + p.considered[1:]),
                     "names the wrong sender"),
    "weight changed": (lambda p, g: replace(p, considered=(replace(p.considered[0], weight=1.0),) + p.considered[1:]),
                       "different model hash"),
    "verdict changed": (lambda p, g: replace(p, considered=tuple(replace(c, accepted=True) for c in p.considered)),
                        "different model hash"),
    "update dropped": (lambda p, g: replace(p, considered=p.considered[:-1]), "different model hash"),
    "valid payload listed as fault": (_listing_fault(lambda g: signed_header(KEYS[0], g)),
                                      "a listed fault is a valid payload"),
    "fault by an outsider": (_listing_fault(lambda g: signed_header(OUTSIDER, g)),
                             "fault is not a signed proposal of this height"),
    "fault of another height": (_listing_fault(lambda g: signed_header(KEYS[0], g, height=2)),
                                "fault is not a signed proposal of this height"),
    "fault of another chain": (_listing_fault(lambda g: signed_header(KEYS[0], g, chain_id="other")),
                               "fault is not a signed proposal of this height"),
    "fault header malformed": (lambda p, g: replace(p, faults=(([1, 2], g),)), "fault header malformed"),
}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
async def test_each_provably_wrong_payload_is_a_fault(new_app, name: str) -> None:
    proposer, verifier = new_app(0), new_app(1)
    admit_all([proposer, verifier], round_updates(proposer))
    genuine = await proposer.prepare_payload(ctx())
    mutate, reason = BAD_PAYLOADS[name]
    bad = mutate(Payload.decode(genuine, 1 << 20), genuine)
    bad = bad if isinstance(bad, bytes) else bad.encode()
    verdict = await verifier.verify_payload(ctx(header=signed_header(KEYS[0], bad)), bad)
    assert not verdict.ok and reason in verdict.reason, verdict.reason
    assert verifier.metrics["bad_payloads"] == 1
    carrying = Payload.decode(await verifier.prepare_payload(ctx(slot=1, producer=1)), 1 << 20)
    assert carrying.faults == ((signed_header(KEYS[0], bad).to_wire(), bad),)


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


async def advance_empty(app: FLApp, heights: range) -> None:
    """Finalize blocks that aggregate nothing (no update waits)."""
    for h in heights:
        app.finalize_block(ctx(h), await app.prepare_payload(ctx(h)))


@pytest.mark.parametrize("change, reason", [
    (lambda app, u: u, None),
    (lambda app, u: replace(u, chain_id="other").signed(KEYS[1]), "wrong_chain"),
    (lambda app, u: make_update(KEYS[1], np.ones(app.dim - 1), base_hash=app.model_hash), "wrong_shape"),
    (lambda app, u: make_update(OUTSIDER, np.ones(app.dim), base_hash=app.model_hash), "unregistered"),
    (lambda app, u: replace(u, base_height=app.model_height + 1).signed(KEYS[1]), "unknown_base"),
    (lambda app, u: replace(u, base_hash=sha256(b"fork")).signed(KEYS[1]), "unknown_base"),
    (lambda app, u: replace(u, base_height=0).signed(KEYS[1]), "stale_base"),
    (lambda app, u: replace(u, seq=99), "bad_signature"),
])
async def test_check_update_admission_rules(new_app, change, reason: str | None) -> None:
    app = new_app(0)
    await advance_empty(app, range(1, SETTINGS.max_staleness + 3))
    update = make_update(KEYS[1], np.ones(app.dim), base_hash=app.model_hash, base_height=app.model_height - 1)
    assert app.check_update(change(app, update), STATE) == reason


async def test_finalize_rewards_penalizes_and_writes_restorable_records(new_app, tmp_path: Path) -> None:
    proposer, verifier = new_app(0), new_app(1, blobs="shared")
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx())
    assert (await verifier.verify_payload(ctx(), payload)).ok
    outcome = verifier.finalize_block(ctx(), payload)
    p = Payload.decode(payload, 1 << 20)
    s = SETTINGS
    assert outcome.stake_changes == [(c.sender, s.reward_accepted, "update accepted") if c.accepted else
                                     (c.sender, -s.penalty_rejected, f"update rejected: {c.reason}")
                                     for c in p.considered]
    assert not p.considered[3].accepted and any(c.accepted for c in p.considered)  # the sign flip is caught
    assert len(verifier.pool) == 0 and verifier.recent == {0: p.base_hash, 1: p.new_hash}
    assert outcome.events == [{"type": "fl_round", "height": 1, "model_hash": p.new_hash.hex(), "faults": 0,
                               "accepted": sum(c.accepted for c in p.considered),
                               "rejected": sum(not c.accepted for c in p.considered)}]
    state = STATE.copy()
    block = make_block(state, KEYS[0], payload=payload)
    state.begin_block(1, block.hash, IDS[0], [])
    state.apply_stake_changes(outcome.stake_changes)
    state.end_block()
    with ChainStore(tmp_path / "chain.db", GENESIS) as store:
        store.commit_block(block, commit_for(block, KEYS[:3]), state, outcome.writes, voters=IDS[:4])
        records = store.app_kv_items()
        rows = store.app_query("SELECT id, sender, accepted, reason FROM fl_updates WHERE height = 1 ORDER BY idx")
    assert set(records) == {KEY_MODEL, KEY_RECENT}
    assert rows == [(c.update_id, c.sender, int(c.accepted), c.reason) for c in p.considered]
    restored = new_app(1, blobs="shared", restored=records)
    assert (restored.model_hash, restored.model_height, restored.recent) == (p.new_hash, 1, verifier.recent)
    assert restored.model.tobytes() == verifier.model.tobytes()
    # the restored node follows the chain on: it accepts the next proposal of the live node
    proposer.finalize_block(ctx(), payload)
    nxt = await proposer.prepare_payload(ctx(2, state=state))
    assert (await restored.verify_payload(ctx(2, state=state), nxt)).ok
    with pytest.raises(RuntimeError, match="missing from the blob store"):
        new_app(1, blobs="empty", restored=records)


async def test_the_current_model_survives_pruning_when_rounds_change_nothing(new_app) -> None:
    """An unchanged model is re-stored at every height, so retention never prunes the live model
    (a node restarting after such a block must find its model)."""
    app = new_app(0, model_retention=2)
    for h in range(1, 6):
        await advance_empty(app, range(h, h + 1))
        assert app.blobs.get(app.model_hash) == model_bytes(app.model), f"model missing after height {h}"


def test_finalizing_an_unverified_payload_is_refused(new_app) -> None:
    with pytest.raises(RuntimeError, match="never verified"):
        new_app(0).finalize_block(ctx(), b"unseen payload")


def test_decode_update_limits_and_parses(new_app) -> None:
    app = new_app(0)
    update = make_update(KEYS[1], np.ones(app.dim), base_hash=app.model_hash, topk=0.01)
    assert app.decode_update(update.encode()).id == update.id
    with pytest.raises(DecodeError, match="exceeds"):
        app.decode_update(b"\x00" * (SETTINGS.max_update_bytes + 1))
    with pytest.raises(DecodeError, match="dim must be"):
        app.decode_update(make_update(KEYS[1], np.ones(app.dim + 1), topk=0.01).encode())


def _with_loss(update: ModelUpdate, loss: float) -> bytes:
    wire = update.to_wire()
    wire[6] = loss
    return pack(wire)


def _fresh(app: FLApp, key: KeyPair = KEYS[1], **kw: Any) -> ModelUpdate:
    return make_update(key, np.ones(app.dim), base_hash=app.model_hash, base_height=app.model_height, topk=0.01, **kw)


@pytest.mark.parametrize("body, verdict, metric", [
    (lambda app: _fresh(app).encode(), Verdict.ACCEPT, "updates_received"),
    (lambda app: b"\xc1", Verdict.REJECT, "update_rejected:malformed"),
    (lambda app: b"\x00" * (SETTINGS.max_update_bytes + 1), Verdict.REJECT, "update_rejected:oversized"),
    (lambda app: _with_loss(_fresh(app), float("nan")), Verdict.REJECT, "update_rejected:non_finite"),
    (lambda app: _fresh(app, OUTSIDER).encode(), Verdict.REJECT, "update_rejected:unregistered"),
    (lambda app: _fresh(app, chain_id="other").encode(), Verdict.REJECT, "update_rejected:wrong_chain"),
    (lambda app: replace(_fresh(app), base_height=3).signed(KEYS[1]).encode(), Verdict.IGNORE, None),  # we lag
])
async def test_gossiped_updates_are_screened(new_app, body, verdict: Verdict, metric: str | None) -> None:
    app = new_app(0)
    app.state_view = lambda: STATE
    assert await app.validate_update_msg(Envelope(TOPIC_UPDATE, IDS[1], 1, body(app), b"")) == verdict
    assert dict(app.metrics) == ({metric: 1} if metric else {})
    assert len(app.pool) == (1 if verdict is Verdict.ACCEPT else 0)


async def test_gossip_screening_of_repeats_conflicts_and_stale_updates(new_app) -> None:
    app = new_app(0)
    app.state_view = lambda: STATE
    first = _fresh(app)

    async def screen(update: ModelUpdate) -> Verdict:
        return await app.validate_update_msg(Envelope(TOPIC_UPDATE, update.sender, 1, update.encode(), b""))

    assert await screen(first) is Verdict.ACCEPT and app.blobs.has(first.id)
    assert await screen(first) is Verdict.IGNORE                      # already have it
    assert await screen(_fresh(app, seq=2)) is Verdict.REJECT         # a second update for one base
    assert app.metrics["update_rejected:duplicate_for_base"] == 1
    await advance_empty(app, range(1, SETTINGS.max_staleness + 3))
    assert await screen(_fresh(app, KEYS[2], seq=3)) is Verdict.ACCEPT
    assert await screen(replace(first, seq=4).signed(KEYS[1])) is Verdict.IGNORE  # too old: not a fault
    assert app.metrics["update_rejected:stale_base"] == 1
