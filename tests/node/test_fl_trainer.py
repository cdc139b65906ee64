"""The node's trainer: bounded updates, its newest update kept on disk and re-announced until a
final block considers it (so learning resumes after a site-wide restart), never two updates for
one base. Real training on the node's digits shard."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from consensus.state import ChainState
from learning.bounds import sparse_norm
from node.fl.app import FLApp
from node.fl.round import Payload
from node.fl.settings import FLSettings
from node.fl.trainer import Trainer
from node.fl.update import ModelUpdate
from tests.consensus.helpers import IDS, KEYS, OUTSIDER, genesis, tx
from tests.node.helpers import STATE, ctx


class Outbox:
    """The trainer's publish: what it gossiped, decoded."""

    def __init__(self, app: FLApp) -> None:
        self.app = app
        self.sent: list[ModelUpdate] = []

    async def __call__(self, topic: str, body: bytes) -> bytes:
        self.sent.append(self.app.decode_update(body))
        return b""


def trainer_for(app: FLApp, path: Path, state: ChainState = STATE) -> tuple[Trainer, Outbox]:
    app.state_view = lambda: state
    outbox = Outbox(app)
    return Trainer(app, KEYS[0], outbox, path, reannounce_s=0.05), outbox


async def until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_updates_stay_within_the_admitted_bounds(new_app, tmp_path: Path) -> None:
    """The sent vector is clipped to the norm every node admits, the sample count to the declared
    one; successive updates (error feedback carries what was cut) all stay admissible."""
    state = STATE.copy()
    state.apply_tx(tx(KEYS[0], "register", [OUTSIDER.node_id, 7]))
    app = new_app(0)
    trainer, _ = trainer_for(app, tmp_path / "trainer.json", state)
    trainer.keypair = OUTSIDER  # a member that declared 7 samples (its shard holds hundreds)
    for _ in range(3):
        update = await trainer.train_once()
        assert update.num_samples == 7 and sparse_norm(update.sparse) <= app.norm_bound
        assert app.check_update(update, state) is None


async def test_a_restarted_trainer_reannounces_its_update_until_a_block_considers_it(new_app,
                                                                                    tmp_path: Path) -> None:
    path = tmp_path / "trainer.json"
    before = new_app(0)
    trainer, _ = trainer_for(before, path)
    update = await trainer.train_once()
    # every daemon stops: the pools and the updates in flight are gone; the chain state is not
    app = new_app(0)
    restarted, outbox = trainer_for(app, path)
    assert restarted.pending.id == update.id and app.pool.get(update.id) is not None
    task = asyncio.create_task(restarted.run())
    try:
        await until(lambda: len(outbox.sent) >= 2, "two re-announcements")  # peers may come up later
        assert {u.id for u in outbox.sent} == {update.id} and restarted.steps == 1  # no second update
        payload = await app.prepare_payload(ctx())
        assert [c.update_id for c in Payload.decode(payload, 1 << 20).considered] == [update.id]
        app.finalize_block(ctx(), payload)
        await until(lambda: restarted.steps == 2, "training on the new model")
        count = len(outbox.sent)
        await until(lambda: len(outbox.sent) >= count + 2, "the new update re-announced")
        assert {u.id for u in outbox.sent[count:]} == {restarted.pending.id}  # the old one is done
        assert restarted.pending.base_height == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_update_considered_without_changing_the_model_lets_the_node_train_again(
        new_app, tmp_path: Path) -> None:
    """A round that considers the update but leaves the model as it was (here: the sender has no
    trust under the trust-weighted rule) must not freeze the node: it trains on base (1, same
    hash), a new base, so this is no equivocation."""
    state = ChainState.from_genesis(genesis(4, app=FLSettings(rule="trust").to_app_state()))
    state.apply_tx(tx(KEYS[0], "unstake", [100]))
    app = new_app(0, settings=FLSettings(rule="trust"))
    trainer, outbox = trainer_for(app, tmp_path / "trainer.json", state)
    first = await trainer.train_once()
    payload = await app.prepare_payload(ctx(state=state))
    p = Payload.decode(payload, 1 << 20)
    assert p.new_hash == p.base_hash and [c.reason for c in p.considered] == ["zero weight"]
    assert trainer._waiting() and not trainer._should_train(True)
    app.finalize_block(ctx(state=state), payload)
    assert not trainer._waiting() and trainer._should_train(False)
    second = await trainer.train_once()
    assert (second.base_height, second.base_hash) == (1, first.base_hash) and second.sender == IDS[0]
    assert app.check_update(second, state) is None and app.admit(second) == "duplicate"  # admitted already
    assert not np.array_equal(second.dense(), first.dense())
