"""The node's trainer: bounded updates, its newest update kept on disk and re-announced until a
final block considers it (so learning resumes after a site-wide restart), never two updates for
one base. Real training on the node's digits shard."""

from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from consensus.state import ChainState
from learning.bounds import sparse_norm
from learning.sim import SimConfig, Simulator
from learning.sim.nodes import STREAM_NOISE, stream
from node.fl.app import FLApp
from node.fl.round import Payload
from node.fl.settings import FLSettings
from node.fl.background import BACKGROUND_NICENESS
from node.fl.trainer import Trainer
from node.fl.update import ModelUpdate
from tests.consensus.helpers import IDS, KEYS, OUTSIDER, genesis, tx
from tests.node.helpers import SETTINGS, STATE, ctx


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


async def test_the_trainer_and_the_simulator_make_the_same_update(new_app, tmp_path: Path) -> None:
    """Both run learning.client: for the same settings, shard, model and seeds, the daemon's update
    is the simulator's bit for bit (noise drawn from the same seeded generator, or none at all)."""
    for noise in (0.0, 0.01):
        settings = replace(SETTINGS, noise_multiplier=noise)
        app = new_app(0, settings=settings)
        app.state_view = lambda: STATE
        sim = Simulator(SimConfig(fl=settings, num_nodes=4))
        rng = stream(settings.seed, STREAM_NOISE)  # the simulator's noise generator, seeded alike
        trainer = Trainer(app, KEYS[0], Outbox(app), tmp_path / f"trainer{noise}.json", noise_rng=rng)
        assert np.array_equal(sim.global_flat, app.model)  # same genesis model
        for _ in range(2):  # the second update also carries the first one's residual
            update = await trainer.train_once()
            job = sim._train(sim.nodes[0])
            sent = sim._send([job])[0]
            assert update.sparse.indices.tobytes() == sent.sparse.indices.tobytes()
            assert update.sparse.values.tobytes() == sent.sparse.values.tobytes()
            assert (update.sparse.scale, update.num_samples, update.loss) == (sent.sparse.scale, sent.num_samples,
                                                                             sent.loss)
        assert np.array_equal(trainer.client.compressor.residual, sim.nodes[0].client.compressor.residual)


@pytest.mark.timeout(480)  # the first local-dp update imports Opacus and torch's compiler stack: 10 s idle, a minute on a busy machine
async def test_a_local_dp_trainer_stops_sending_when_its_budget_would_be_passed(new_app, tmp_path: Path,
                                                                               caplog) -> None:
    """Under local-dp every update spends epsilon; the update that would pass the budget is never
    made, the node says so (log, /fl/privacy's view, its metrics), and a restart does not reset it."""
    privacy = {"preset": "local-dp", "epsilon": 3.0, "noise_multiplier": 2.0}
    settings = replace(SETTINGS, privacy=privacy, local_epochs=1)
    path = tmp_path / "trainer.json"
    app = new_app(0, settings=settings)
    trainer, outbox = trainer_for(app, path)
    assert trainer.privacy_view()["epsilon"] == 0.0 and not trainer.privacy_view()["exhausted"]
    while (update := await trainer.train_once()) is not None:
        assert update.loss == 0.0 and app.check_update(update, STATE) is None
        trainer.last_base = (-1, b"")  # as if the model had moved on
    view = trainer.privacy_view()
    assert view["preset"] == "local-dp" and view["formal"] and view["exhausted"]
    assert view["releases"] == len(outbox.sent) >= 2 and 0 < view["epsilon"] <= 3.0 == view["epsilon_budget"]
    assert view["dp_sgd_steps"] == view["releases"] * view["dp_sgd"]["steps_per_update"]
    assert "privacy budget reached" in caplog.text and "only follows the chain" in caplog.text
    restarted, again = trainer_for(new_app(0, settings=settings), path)
    assert restarted.privacy_view()["epsilon"] == view["epsilon"]
    assert restarted.privacy_view()["exhausted"]  # known at start, not only at the next model
    assert await restarted.train_once() is None and not again.sent


async def test_an_off_trainer_reports_no_formal_privacy(new_app, tmp_path: Path) -> None:
    trainer, _ = trainer_for(new_app(0), tmp_path / "trainer.json")
    await trainer.train_once()
    view = trainer.privacy_view()
    assert (view["preset"], view["formal"], view["epsilon"], view["epsilon_budget"], view["releases"]) == \
        ("off", False, None, None, 1)
    assert view["guarantee"].startswith("no formal privacy")


class StalledDisk(Trainer):
    """A trainer whose state file write waits for ``gate`` (a disk that stops answering)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saving, self.gate, self.timed_out = threading.Event(), threading.Event(), False

    def _save(self, *args) -> None:
        self.saving.set()
        self.timed_out = not self.gate.wait(timeout=10)
        super()._save(*args)


async def test_a_stalled_state_write_does_not_stall_the_event_loop(new_app, tmp_path: Path) -> None:
    """Saving, clipping, compressing and signing run on the trainer's worker: while the state file
    write hangs, the loop itself sees it hang and lets it go."""
    app = new_app(0)
    app.state_view = lambda: STATE
    trainer = StalledDisk(app, KEYS[0], Outbox(app), tmp_path / "trainer.json")
    task = asyncio.create_task(trainer.train_once())
    await until(trainer.saving.is_set, "the state write to start")  # only a free loop gets here
    trainer.gate.set()
    update = await task
    assert not trainer.timed_out and update is not None and trainer.pending.id == update.id


async def test_training_runs_at_a_lower_cpu_priority_than_the_event_loop(new_app, tmp_path: Path) -> None:
    """The trainer's worker thread, where local training runs, is niced below the loop's thread
    (Linux sets a priority per thread), so a busy device runs its votes and gossip first."""
    app = new_app(0)
    trainer, _ = trainer_for(app, tmp_path / "trainer.json")
    loop_nice = os.getpriority(os.PRIO_PROCESS, 0)
    worker_nice = await asyncio.get_running_loop().run_in_executor(
        trainer._worker, os.getpriority, os.PRIO_PROCESS, 0)
    assert worker_nice == min(19, loop_nice + BACKGROUND_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == loop_nice  # the loop's own thread is untouched
