"""The node's own training loop: asynchronous, at its own pace, off the event loop.

Whenever a new global model becomes final, the node runs the client pipeline
(:class:`learning.client.Client`: train on its shard - DP-SGD under the ``local-dp`` preset, its
privacy spending tracked by an RDP accountant - clip and noise the delta, top-k with error
feedback within the norm every node admits, claim at most the sample count its registration
declared), signs the update and gossips it. Under ``local-dp`` it stops sending updates once one
more would take its epsilon past the budget; it keeps following the chain, and says so in its
log, ``/fl/privacy`` and its metrics.

All of that, and saving the trainer's state, runs on one worker thread of its own, in order, at a
lower CPU priority than the rest of the daemon (:mod:`node.fl.background`); the event loop only
hands it a copy of the model and what it needs to know of the chain, and gets
back the signed, encoded update and a snapshot of the privacy spending. Only the worker touches
the client's state (residual, accountant, update count).

The newest own update is kept (with privacy spending, step count, residual and the base it was
trained on) in ``trainer.json``. Until a final block considers it, or its base is too old, the
node re-announces it every ``reannounce_s``: after a site-wide restart the updates in flight are
gone from every pool, and peers that come up later must still receive it. The node never trains
twice on one base (a second, different update for one base is equivocation); it trains again
when the model changes, or when its update was considered on an unchanged model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gossip.crypto import KeyPair
from learning.client import Client, Release
from learning.compression import dense_bytes, wire_size
from node.fl.app import TOPIC_UPDATE, FLApp
from node.fl.background import background_worker
from node.fl.update import ModelUpdate

log = logging.getLogger("fedchain.trainer")


@dataclass(frozen=True)
class Made:
    """What the worker hands back: the signed update, its bytes, and the privacy spent so far."""

    update: ModelUpdate
    raw: bytes
    loss: float           # the training loss (local: under local-dp the update carries none)
    steps: int
    epsilon: float | None
    seconds: float


class Trainer:
    def __init__(self, app: FLApp, keypair: KeyPair, publish: Callable[[str, bytes], Awaitable[bytes]],
                 state_path: Path, reannounce_s: float = 3.0, noise_rng: np.random.Generator | None = None) -> None:
        self.app = app
        self.keypair = keypair
        self.publish = publish
        self.state_path = state_path
        self.reannounce_s = reannounce_s
        data = app.data.train
        # DP noise must not be predictable: OS entropy unless a caller (a test) seeds it
        self.client = Client(app.settings, data.x, data.y, app.dim, noise_rng or np.random.default_rng())
        self.net = app.new_net()
        self.last_base: tuple[int, bytes] = (-1, b"")  # (height, hash) of the model last trained on
        self.pending: ModelUpdate | None = None        # the newest own update
        self.exhausted = False
        self.metrics: Counter[str] = Counter()
        self.steps = 0                                 # snapshots of the client's state, for the loop
        self.epsilon: float | None = self.client.epsilon()
        self._pending_raw = b""
        self._announced_s = -float("inf")
        self._worker = background_worker("fl-trainer")
        self._wake = asyncio.Event()
        app.listeners.append(self._wake.set)
        self._restore()
        if not self.client.can_release():  # a restart after the budget was spent: say so now
            self._stop_for_budget()

    # ----- persistence --------------------------------------------------------------------
    def _restore(self) -> None:
        if not self.state_path.exists():
            return
        try:
            state = json.loads(self.state_path.read_text())
            self.client.load_state(state)
            self.last_base = (int(state["last_base_height"]), bytes.fromhex(state["last_base"]))
            pending = bytes.fromhex(state["pending"]) if state["pending"] else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{self.state_path} is corrupt ({exc}); privacy spending cannot be "
                               "recovered, refusing to start rather than under-count it") from exc
        self.steps, self.epsilon = self.client.steps, self.client.epsilon()
        if pending is not None:
            self.pending, self._pending_raw = self.app.decode_update(pending), pending
            if self.app.awaits_round(self.pending):
                self.app.admit(self.pending)  # the pools died with the processes; ours starts again
                log.info("resuming with own update %s on base %d", self.pending.id.hex()[:12],
                         self.pending.base_height)

    def _save(self, last_base: tuple[int, bytes], pending_raw: bytes) -> None:
        """Write ``trainer.json`` atomically (worker thread: it reads the client's state)."""
        state = {**self.client.state_dict(), "last_base_height": last_base[0], "last_base": last_base[1].hex(),
                 "pending": pending_raw.hex()}
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    # ----- the loop -----------------------------------------------------------------------
    def _is_member(self) -> bool:
        """Only registered members may submit (Secured-FL admission): others wait, and send nothing
        their peers would reject and penalize them for."""
        state = self.app.state_view() if self.app.state_view is not None else None
        member = state is not None and state.is_member(self.keypair.node_id)
        if not member and not self.metrics["waiting_for_registration"]:
            log.warning("this node is not a registered member; it trains once registered "
                        "(fedchain tx register %s, signed by the admin)", self.keypair.node_id)
        self.metrics["waiting_for_registration"] = 0 if member else 1
        return member

    def _waiting(self) -> bool:
        """Our newest update can still be aggregated and no final block has considered it yet."""
        return self.pending is not None and self.app.awaits_round(self.pending)

    def _should_train(self, waiting: bool) -> bool:
        app = self.app
        base = (app.model_height, app.model_hash)
        return base != self.last_base and (app.model_hash != self.last_base[1] or not waiting)

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                app = self.app
                if app.model_hash and not app.model_missing and not self.exhausted and self._is_member():
                    waiting = self._waiting()
                    if waiting:
                        await self._reannounce()
                    if self._should_train(waiting):
                        try:
                            await self.train_once()
                        except Exception:  # a failed round must not end training for good
                            log.exception("training round failed")
                            self.metrics["train_errors"] += 1
                        continue
                with contextlib.suppress(TimeoutError):  # not wait_for: see consensus.engine's ticker
                    async with asyncio.timeout(min(5.0, self.reannounce_s)):
                        await self._wake.wait()
        finally:
            self._worker.shutdown(wait=False, cancel_futures=True)

    async def _reannounce(self) -> None:
        """Gossip the waiting update again (at most every ``reannounce_s``), back into our own pool
        first if a restart emptied it."""
        if time.monotonic() - self._announced_s < self.reannounce_s:
            return
        update = self.pending
        if self.app.pool.get(update.id) is None:
            self.app.admit(update)
        self._announced_s = time.monotonic()
        await self.publish(TOPIC_UPDATE, self._pending_raw)
        self.metrics["updates_reannounced"] += 1

    async def train_once(self) -> ModelUpdate | None:
        """One update on the current model: the pipeline on the worker, then admit and gossip."""
        app = self.app
        base_height, base_hash = app.model_height, app.model_hash
        start = app.model.copy()
        cap = app.sample_bound(app.state_view(), self.keypair.node_id) or 1
        observed = self._observed(base_hash)
        made = await asyncio.get_running_loop().run_in_executor(
            self._worker, self._make, start, base_height, base_hash, cap, observed)
        if made is None:
            self._stop_for_budget()
            return None
        update = made.update
        self.last_base, self.pending, self._pending_raw = (base_height, base_hash), update, made.raw
        self.steps, self.epsilon = made.steps, made.epsilon
        self.metrics["train_seconds_total"] += made.seconds
        app.admit(update)
        self._announced_s = time.monotonic()
        await self.publish(TOPIC_UPDATE, made.raw)
        self.metrics["updates_sent"] += 1
        self.metrics["update_bytes_sent"] += wire_size(update.sparse)
        self.metrics["dense_bytes_equivalent"] += dense_bytes(app.dim)
        return update

    def _stop_for_budget(self) -> None:
        """One more update would pass the privacy budget: stop sending, and say so."""
        self.exhausted = True
        log.warning("privacy budget reached: epsilon spent %.3f of %g (delta %g) after %d updates; one more "
                    "would pass it, so this node sends no more updates and only follows the chain",
                    self.epsilon or 0.0, self.client.privacy.epsilon, self.client.privacy.delta, self.steps)

    def _observed(self, base_hash: bytes) -> list[np.ndarray]:
        """What of others' updates the pipeline needs (copies; an honest node needs none)."""
        return []

    def _craft(self, release: Release, observed: list[np.ndarray]) -> np.ndarray:
        """The vector to send for ``release`` (worker thread): an honest node sends its release."""
        return release.vector

    def _make(self, start: np.ndarray, base_height: int, base_hash: bytes, cap: int,
              observed: list[np.ndarray]) -> Made | None:
        """Worker thread: the client pipeline, the signed and encoded update, the saved state.
        None when the privacy budget is spent."""
        if not self.client.can_release():
            return None
        t0 = time.perf_counter()
        release = self.client.release(self.net, start)
        sent = self.client.send(release, cap, self._craft(release, observed))
        app = self.app
        update = ModelUpdate(app.chain_id, self.keypair.node_id, time.time_ns() // 1000, base_hash, base_height,
                             sent.num_samples, sent.loss, sent.sparse).signed(self.keypair)
        raw = update.encode()  # encoded and hashed (its id) here, not on the loop
        _ = update.id
        self._save((base_height, base_hash), raw)  # before it leaves the node: never train twice on a base
        return Made(update, raw, release.loss, self.client.steps, self.client.epsilon(), time.perf_counter() - t0)

    def privacy_view(self) -> dict:
        """``/fl/privacy``: the preset, what it gives, and what this node has spent of it."""
        s, p = self.app.settings, self.client.privacy
        dp_sgd = {"noise_multiplier": p.noise_multiplier, "max_grad_norm": p.max_grad_norm,
                  "sample_rate": self.client.sample_rate, "steps_per_update": self.client.dp_steps} if p.formal else None
        return {"preset": p.preset, "formal": p.formal, "guarantee": p.guarantee(s.noise_multiplier),
                "epsilon": self.epsilon, "epsilon_budget": p.epsilon, "delta": p.delta, "releases": self.steps,
                "dp_sgd_steps": self.steps * self.client.dp_steps if p.formal else None, "dp_sgd": dp_sgd,
                "exhausted": self.exhausted, "accountant": "opacus RDP analysis" if p.formal else None,
                "update_clip": s.clip_norm, "update_noise_multiplier": s.noise_multiplier}
