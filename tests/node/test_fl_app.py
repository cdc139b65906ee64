"""FLApp, federated learning as the chain's application, driven in process without a network.

Several FLApp instances stand for the delegates of a 4-node chain: one proposes a payload from the
updates in its pool, the others verify it by re-running the round. Real digits data, real models,
real aggregation, a real ChainStore and BlobStore.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from consensus.state import ChainState
from consensus.store import ChainStore
from learning.aggregation import AGAINST_DRIFT
from learning.models import get_flat
from node.fl.app import KEY_MODEL, KEY_WINDOW, round_key
from node.fl.blobs import model_bytes
from node.fl.round import NOT_AGREED, Payload
from node.fl.settings import FLSettings
from tests.consensus.helpers import IDS, KEYS, commit_for, make_block
from tests.node.helpers import (GENESIS, SETTINGS, STATE, admit_all, advance_empty, ctx, make_update,
                                round_updates, signed_header)


def decode(payload: bytes) -> Payload:
    return Payload.decode(payload, 1 << 20)


def test_init_chain_from_genesis(new_app) -> None:
    a, b = new_app(0), new_app(1)
    assert a.model_hash == b.model_hash == a.app_hash() and a.model_height == 0
    assert a.window.recent == {0: a.model_hash}
    assert a.dim == get_flat(a.new_net()).size > 0
    assert a.blobs.get(a.model_hash, "model") == model_bytes(a.model)


async def test_a_second_node_verifies_the_proposal_and_reaches_the_same_state(new_app) -> None:
    proposer, verifier = new_app(0), new_app(1)
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx())
    p = decode(payload)
    assert [c.sender for c in p.considered] == IDS[:4] and p.base_hash == proposer.model_hash
    assert p.evals and not p.skipped  # the clustering rule tuned its radius on the public set
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
    assert all(verifier.blobs.has(u.id, "update") for u in updates)


async def test_a_round_that_cannot_produce_a_finite_model_is_skipped(new_app) -> None:
    """A genesis with a huge clip admits values near the float32 limit; a round whose model would
    overflow changes nothing, rewards and penalizes no update, and the chain goes on."""
    loose = FLSettings(rule="fedavg", clip_norm=1e38)
    proposer, verifier = new_app(0, settings=loose), new_app(1, settings=loose)

    async def round_of(height: int, updates: list) -> bytes:
        admit_all([proposer, verifier], updates)
        payload = await proposer.prepare_payload(ctx(height))
        assert (await verifier.verify_payload(ctx(height), payload)).ok
        return payload

    def huge() -> list:
        spike = np.zeros(proposer.dim, np.float32)
        spike[0] = 1.9e38  # within twice the clip, the norm admission allows without update noise
        return [make_update(KEYS[i], spike, base_hash=proposer.model_hash, base_height=proposer.model_height,
                            topk=1 / proposer.dim) for i in range(3)]

    first = await round_of(1, huge())  # coordinate 0 moves to the float32 limit, still finite
    for app in (proposer, verifier):
        app.finalize_block(ctx(1), first)
    payload = await round_of(2, huge())  # one more step would overflow
    p = decode(payload)
    assert p.skipped == "the new model is not finite" and p.new_hash == p.base_hash
    assert all(c.reason == f"round skipped: {p.skipped}" and not c.accepted for c in p.considered)
    outcome = verifier.finalize_block(ctx(2), payload)
    assert outcome.stake_changes == [] and outcome.events[0]["skipped"] == p.skipped
    assert verifier.model_height == 2 and verifier.model_hash == p.base_hash
    proposer.finalize_block(ctx(2), payload)
    nxt = await round_of(3, round_updates(proposer))  # the next height is decided as usual
    assert not decode(nxt).skipped


async def test_after_a_failed_attempt_the_round_is_skipped_and_the_chain_goes_on(new_app) -> None:
    """When an earlier proposal of the height did not finalize (``retry``), the next proposer skips
    the round; verifiers accept a skip only from the second attempt on."""
    proposer, verifier = new_app(0), new_app(1)
    admit_all([proposer, verifier], round_updates(proposer))
    skip = await proposer.prepare_payload(ctx(attempt=1, retry=True))
    p = decode(skip)
    assert (p.skipped, p.new_hash, p.considered) == (NOT_AGREED, p.base_hash, ())
    assert (await verifier.verify_payload(ctx(attempt=1), skip)).ok
    outcome = verifier.finalize_block(ctx(attempt=1), skip)
    assert outcome.app_hash == p.base_hash and outcome.stake_changes == []
    assert len(verifier.pool) == 4  # nothing was considered: the updates wait for the next round
    # a retry hint at the first attempt (a bogus earlier proposal) is not followed
    assert not decode(await proposer.prepare_payload(ctx(attempt=0, retry=True))).skipped


async def test_many_valid_payloads_for_one_slot_never_break_finalization(new_app) -> None:
    """A proposer may sign many different valid payloads for its slot (here: subsets of seven
    updates); verifying them all must not make the one that becomes final inapplicable, and the
    kept results go at finalization."""
    from itertools import combinations

    from node.fl.pool import UpdatePool
    state8 = ChainState.from_genesis(genesis8())
    proposer, verifier = new_app(0), new_app(1)
    deltas = 0.02 * np.random.default_rng(3).normal(size=(7, proposer.dim)).astype(np.float32)  # norm ~1.4
    updates = [make_update(KEYS[i], d, base_hash=proposer.model_hash, topk=0.1, dtype="float16")
               for i, d in enumerate(deltas)]
    payloads = []
    for subset in [c for r in (1, 2, 3, 4) for c in combinations(updates, r)][:70]:
        proposer.pool = UpdatePool()
        for u in subset:
            proposer.pool.add(u)
        payloads.append(await proposer.prepare_payload(ctx(state=state8)))
    admit_all([verifier], updates)
    assert len(set(payloads)) == 70
    for payload in payloads:
        assert (await verifier.verify_payload(ctx(state=state8), payload)).ok
    verifier.finalize_block(ctx(state=state8), payloads[0])
    assert verifier.model_hash == decode(payloads[0]).new_hash and verifier._results == {}


def genesis8():
    from tests.consensus.helpers import genesis
    return genesis(8, app=FLSettings().to_app_state())


async def test_a_final_payload_never_verified_here_is_re_run_or_its_model_fetched(new_app) -> None:
    proposer = new_app(0)
    updates = round_updates(proposer)
    admit_all([proposer], updates)
    payload = await proposer.prepare_payload(ctx())
    p = decode(payload)
    holder = new_app(1)
    admit_all([holder], updates)
    holder.finalize_block(ctx(), payload)  # it holds the updates: re-run
    assert holder.model_hash == p.new_hash and not holder.model_missing
    served: list[bytes] = []

    async def fetch_model(model_hash: bytes) -> bytes | None:
        served.append(model_hash)
        return proposer.blobs.get(model_hash, "model")

    fetched: list[bytes] = []

    async def fetch(update_id: bytes, producer: str) -> bytes | None:
        fetched.append(update_id)
        return proposer.blobs.get(update_id, "update")

    lacking = new_app(2, fetch_model=fetch_model, fetch=fetch)
    outcome = lacking.finalize_block(ctx(), payload)  # no updates: it follows the chain, fetches later
    assert outcome.app_hash == p.new_hash and lacking.model_missing
    proposer.finalize_block(ctx(), payload)
    nxt = await proposer.prepare_payload(ctx(2))
    assert (await lacking.verify_payload(ctx(2), nxt)).ok and served == [p.new_hash]
    # the updates height 1 accepted witness their senders in the feature clip: fetched once each
    accepted = sorted(c.update_id for c in p.considered if c.accepted)
    assert accepted and sorted(fetched) == accepted
    assert lacking.model.tobytes() == proposer.model.tobytes()
    unreadable = new_app(0).finalize_block(ctx(), b"\xc1")  # cannot even be decoded: changes nothing
    assert unreadable.stake_changes == [] and unreadable.app_hash == proposer.window.recent[0]


async def test_finalize_rewards_penalizes_and_writes_restorable_records(new_app, tmp_path: Path) -> None:
    proposer, verifier = new_app(0), new_app(1, blobs="shared")
    updates = round_updates(proposer)
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx())
    assert (await verifier.verify_payload(ctx(), payload)).ok
    outcome = verifier.finalize_block(ctx(), payload)
    p = decode(payload)
    s = SETTINGS
    assert outcome.stake_changes == [(c.sender, s.reward_accepted, "update accepted") if c.accepted else
                                     (c.sender, -s.penalty_rejected, f"update rejected: {c.reason}")
                                     for c in p.considered]
    assert not p.considered[3].accepted and any(c.accepted for c in p.considered)  # the sign flip is caught
    assert len(verifier.pool) == 0 and verifier.window.recent == {0: p.base_hash, 1: p.new_hash}
    assert verifier.window.claims == {(u.sender, 0): u.id for u in updates}
    assert outcome.events == [{"type": "fl_round", "height": 1, "model_hash": p.new_hash.hex(), "faults": 0,
                               "accepted": sum(c.accepted for c in p.considered), "equivocations": 0,
                               "rejected": sum(not c.accepted for c in p.considered), "skipped": None}]
    state = STATE.copy()
    block = make_block(state, KEYS[0], payload=payload)
    state.begin_block(1, block.hash, IDS[0], [])
    state.apply_stake_changes(outcome.stake_changes)
    state.end_block()
    with ChainStore(tmp_path / "chain.db", GENESIS) as store:
        store.commit_block(block, commit_for(block, KEYS[:3]), state, outcome.writes, voters=IDS[:4])
        records = dict(store.app_records())
    assert set(records) == {KEY_MODEL, KEY_WINDOW, round_key(1)}
    assert json.loads(records[round_key(1)]) == json.loads(json.dumps(p.to_json()))
    restored = new_app(1, blobs="shared", restored=records)
    assert (restored.model_hash, restored.model_height, restored.window) == (p.new_hash, 1, verifier.window)
    assert restored.model.tobytes() == verifier.model.tobytes() and not restored.model_missing
    # the restored node follows the chain on: it accepts the next proposal of the live node
    proposer.finalize_block(ctx(), payload)
    nxt = await proposer.prepare_payload(ctx(2, state=state))
    assert (await restored.verify_payload(ctx(2, state=state), nxt)).ok
    # a data dir that lost the model blob does not stop the node: it fetches the model when needed
    lost = new_app(1, blobs="empty", restored=records)
    assert lost.model_missing and lost.model_hash == p.new_hash
    verdict = await lost.verify_payload(ctx(2, state=state), nxt)
    assert not verdict.ok and "is not available from peers" in verdict.reason


async def test_the_current_model_survives_pruning_when_rounds_change_nothing(new_app) -> None:
    """An unchanged model is re-stored at every height, so retention never prunes the live model
    (a node restarting after such a block must find its model)."""
    app = new_app(0, model_retention=2)
    for h in range(1, 6):
        await advance_empty(app, range(h, h + 1))
        assert app.blobs.get(app.model_hash, "model") == model_bytes(app.model), f"model missing after height {h}"


async def test_the_round_reference_is_the_models_drift_over_the_window_and_a_late_node_fetches_it(new_app) -> None:
    """Proposer and verifiers give the rule one reference: the current model minus the oldest base
    of the window, both named by final blocks; a node that lacks the older model fetches it."""
    from learning.round import drift
    from node.fl.blobs import parse_model

    proposer = new_app(0)
    genesis = proposer.model
    assert await proposer.round_reference() is None          # nothing has moved yet
    writes: list = []
    for h in (1, 2):
        updates = round_updates(proposer, flipped=False)
        admit_all([proposer], updates)
        writes = proposer.finalize_block(ctx(h), await proposer.prepare_payload(ctx(h))).writes
    assert sorted(proposer.window.recent) == [0, 1, 2]
    reference = await proposer.round_reference()
    assert reference is not None and np.array_equal(reference, drift(proposer.model, genesis))
    served: list[bytes] = []

    async def fetch_model(model_hash: bytes) -> bytes | None:
        served.append(model_hash)
        return proposer.blobs.get(model_hash, "model")

    late = new_app(1, blobs="late", restored=dict(writes), fetch_model=fetch_model)
    with pytest.raises(LookupError, match="oldest base"):
        late._reference_here()                               # neither model is in its blob store
    await late._ensure_model()
    fetched = await late.round_reference()
    assert served == [proposer.model_hash, proposer.window.recent[0]]
    assert fetched is not None and fetched.tobytes() == reference.tobytes()
    assert parse_model(proposer.blobs.get(proposer.window.recent[0], "model"), 1 << 22).tobytes() == genesis.tobytes()


async def _moved_twice(new_app) -> tuple:
    """A proposer and a verifier after two honest rounds (the model has moved), and twelve members."""
    from consensus.genesis import make_genesis
    from gossip.crypto import KeyPair
    from tests.consensus.helpers import CHAIN

    proposer, verifier = new_app(0), new_app(1)
    for h in (1, 2):
        updates = round_updates(proposer, flipped=False)
        admit_all([proposer, verifier], updates)
        payload = await proposer.prepare_payload(ctx(h))
        assert (await verifier.verify_payload(ctx(h), payload)).ok
        for app in (proposer, verifier):
            app.finalize_block(ctx(h), payload)
    keys = [KeyPair.from_seed(bytes([i + 101]) * 32) for i in range(12)]
    state12 = ChainState.from_genesis(make_genesis(CHAIN, [k.node_id for k in keys],
                                                   app=FLSettings().to_app_state()))
    return proposer, verifier, keys, state12


async def _against(proposer, verifier, keys, state, height: int, agreement: float, reversed_: slice,
                   seed: int) -> dict[str, str]:
    """A round of twelve updates at ``agreement`` with the model's drift, ``reversed_`` of them
    turned around, proposed and verified (and finalized on both); each sender's reason."""
    reference = await proposer.round_reference()
    assert reference is not None
    rng = np.random.default_rng(seed)
    unit = reference / np.linalg.norm(reference)
    deltas = agreement * unit + rng.normal(size=(12, proposer.dim)).astype(np.float32) / np.sqrt(proposer.dim)
    deltas[reversed_] *= -1.0
    deltas /= np.linalg.norm(deltas, axis=1, keepdims=True)
    updates = [make_update(k, d, base_hash=proposer.model_hash, base_height=proposer.model_height, samples=50)
               for k, d in zip(keys, deltas)]
    admit_all([proposer, verifier], updates)
    payload = await proposer.prepare_payload(ctx(height, state=state))
    assert (await verifier.verify_payload(ctx(height, state=state), payload)).ok
    for app in (proposer, verifier):
        app.finalize_block(ctx(height, state=state), payload)
    return {c.sender: c.reason for c in decode(payload).considered}


async def test_a_verifier_re_runs_the_drift_test_with_the_proposers_reference(new_app) -> None:
    """Twelve members, four of them reversing the way the model has been moving while the round
    shows a shared direction: the proposer's round drops them as against the drift, and a verifier
    that derives the same reference from the same final blocks reaches the same decisions and model."""
    proposer, verifier, keys, state12 = await _moved_twice(new_app)
    reasons = await _against(proposer, verifier, keys, state12, 3, 0.5, slice(8, None), 12)
    assert [reasons[k.node_id] for k in keys[8:]] == [AGAINST_DRIFT] * 4
    assert not any(reasons[k.node_id] == AGAINST_DRIFT for k in keys[:8])


async def test_senders_dropped_against_the_drift_are_held_until_accepted(new_app) -> None:
    """Final blocks hold the senders they drop against the drift (a record every node derives and
    restores). In a later round that shows no shared direction only held senders are tested: the
    held ones that still point against the drift go again, a newcomer to it does not, and a held
    sender whose update is accepted is released."""
    from node.fl.window import Window

    proposer, verifier, keys, state12 = await _moved_twice(new_app)
    await _against(proposer, verifier, keys, state12, 3, 0.5, slice(8, None), 12)
    four = {k.node_id for k in keys[8:]}
    for app in (proposer, verifier):
        assert app.window.held == dict.fromkeys(four, 3)
        assert Window.decode(app.window.encode()).held == app.window.held
    reasons = await _against(proposer, verifier, keys, state12, 4, 0.1, slice(7, 11), 13)
    assert [reasons[k.node_id] for k in keys[8:11]] == [AGAINST_DRIFT] * 3    # held, reversed again
    assert reasons[keys[7].node_id] != AGAINST_DRIFT                           # reversed, but not held
    assert reasons[keys[11].node_id] != AGAINST_DRIFT
    expected = dict.fromkeys((k.node_id for k in keys[8:11]), 4)
    if reasons[keys[11].node_id] != "":                                        # not accepted: still held
        expected[keys[11].node_id] = 3
    assert proposer.window.held == verifier.window.held == expected


async def test_a_round_the_attackers_outnumber_is_refused_and_verifiers_agree(new_app, node_data) -> None:
    """Three of the four members send the negation of a real update (trained on digits): they are
    the round's majority, so every majority test sides with them, and their aggregate undoes the
    last round. The validation guard sees it on the public set and the round is skipped; the
    verifier replays the same evaluations (the current model's is one more recorded value) and
    agrees, and nobody gains or loses stake."""
    from learning.models import set_flat
    from learning.train import local_train

    proposer, verifier = new_app(0), new_app(1)

    def trained(shard: int) -> np.ndarray:
        net = proposer.new_net()
        set_flat(net, proposer.model)
        data = node_data[shard % len(node_data)].train
        delta = local_train(net, data.x, data.y, epochs=1, lr=0.05, seed=shard).delta
        return delta / np.linalg.norm(delta)

    def updates(deltas: list[np.ndarray]) -> list:
        return [make_update(KEYS[i], d, base_hash=proposer.model_hash, base_height=proposer.model_height, samples=50,
                            topk=SETTINGS.topk_fraction, dtype=SETTINGS.encoding, seq=proposer.model_height + 1)
                for i, d in enumerate(deltas)]

    async def propose_and_verify(height: int, sent: list) -> tuple[Payload, list]:
        admit_all([proposer, verifier], sent)
        payload = await proposer.prepare_payload(ctx(height))
        assert (await verifier.verify_payload(ctx(height, header=signed_header(KEYS[0], payload, height=height)),
                                              payload)).ok
        outcomes = [app.finalize_block(ctx(height), payload) for app in (proposer, verifier)]
        assert outcomes[0].app_hash == outcomes[1].app_hash
        return decode(payload), outcomes[0].stake_changes

    for height in range(1, 9):                               # honest rounds: the model learns
        await propose_and_verify(height, updates([trained(i + height) for i in range(4)]))
    before = proposer.model_hash
    p, stake_changes = await propose_and_verify(9, updates([trained(0)] + [-trained(i) for i in (1, 2, 3)]))
    assert "below the current model" in p.skipped, p.skipped
    assert stake_changes == []
    assert len(p.evals) > 2                                  # candidates, the current model, the second pass
    assert proposer.model_hash == verifier.model_hash == before
    assert not any(c.accepted for c in p.considered)
