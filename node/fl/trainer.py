"""The node's own training loop: asynchronous, at its own pace, off the event loop.

Whenever a new global model becomes final, the node trains on its shard from that model (in a
worker thread, so the event loop never blocks), clips and noises the delta (Gaussian mechanism,
spending privacy tracked by an RDP accountant), top-k sparsifies it with error feedback within
the norm every node admits (:func:`learning.bounds.compress_within`; what is cut stays in the
residual), signs it and gossips it. It claims at most the sample count its registration declared.
It stops contributing once its epsilon budget would be exceeded.

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
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from gossip.crypto import KeyPair
from learning.bounds import compress_within
from learning.compression import ErrorFeedback, dense_bytes, wire_size
from learning.privacy import PrivacyAccountant, clip_and_noise
from learning.train import TrainResult, local_train, lr_at
from node.fl.app import TOPIC_UPDATE, FLApp
from node.fl.update import ModelUpdate

log = logging.getLogger("fedchain.trainer")


class Trainer:
    def __init__(self, app: FLApp, keypair: KeyPair, publish: Callable[[str, bytes], Awaitable[bytes]],
                 state_path: Path, reannounce_s: float = 3.0) -> None:
        self.app = app
        self.keypair = keypair
        self.publish = publish
        self.state_path = state_path
        self.reannounce_s = reannounce_s
        s = app.settings
        self.net = app.new_net()
        self.ef = ErrorFeedback(app.dim, s.topk, s.encoding, s.error_feedback)
        # with noise_multiplier = 0 there is no privacy guarantee to account for (epsilon is infinite)
        self.accountant = (PrivacyAccountant(s.epsilon_budget, s.delta, s.noise_multiplier)
                           if s.noise_multiplier > 0 else None)
        self.steps = 0
        self.last_base: tuple[int, bytes] = (-1, b"")  # (height, hash) of the model last trained on
        self.pending: ModelUpdate | None = None        # the newest own update
        self.exhausted = False
        self.metrics: Counter[str] = Counter()
        self.last_loss = float("nan")
        self._announced_s = -float("inf")
        self._rng = np.random.default_rng()  # DP noise must not be predictable: OS entropy
        self._wake = asyncio.Event()
        app.listeners.append(self._wake.set)
        self.x, self.y = app.data.train.x, app.data.train.y
        self._restore()

    # ----- persistence --------------------------------------------------------------------
    def _restore(self) -> None:
        if not self.state_path.exists():
            return
        try:
            state = json.loads(self.state_path.read_text())
            if state["privacy"] is not None:
                self.accountant = PrivacyAccountant.from_dict(state["privacy"])
            self.steps = int(state["steps"])
            self.last_base = (int(state["last_base_height"]), bytes.fromhex(state["last_base"]))
            residual = np.frombuffer(bytes.fromhex(state["residual"]), dtype="<f4")
            pending = bytes.fromhex(state["pending"]) if state["pending"] else None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{self.state_path} is corrupt ({exc}); privacy spending cannot be "
                               "recovered, refusing to start rather than under-count it") from exc
        if residual.size == self.ef.dim:
            self.ef.residual = residual.astype(np.float32)
        if pending is not None:
            self.pending = self.app.decode_update(pending)
            if self.app.awaits_round(self.pending):
                self.app.admit(self.pending)  # the pools died with the processes; ours starts again
                log.info("resuming with own update %s on base %d", self.pending.id.hex()[:12],
                         self.pending.base_height)

    def _save(self) -> None:
        privacy = self.accountant.to_dict() if self.accountant is not None else None
        state = {"privacy": privacy, "steps": self.steps, "last_base_height": self.last_base[0],
                 "last_base": self.last_base[1].hex(), "residual": self.ef.residual.astype("<f4").tobytes().hex(),
                 "pending": self.pending.encode().hex() if self.pending is not None else ""}
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

    async def _reannounce(self) -> None:
        """Gossip the waiting update again (at most every ``reannounce_s``), back into our own pool
        first if a restart emptied it."""
        if time.monotonic() - self._announced_s < self.reannounce_s:
            return
        update = self.pending
        if self.app.pool.get(update.id) is None:
            self.app.admit(update)
        self._announced_s = time.monotonic()
        await self.publish(TOPIC_UPDATE, update.encode())
        self.metrics["updates_reannounced"] += 1

    async def train_once(self) -> ModelUpdate | None:
        app, s = self.app, self.app.settings
        base_hash, base_height, start = app.model_hash, app.model_height, app.model.copy()
        if self.accountant is not None and not self.accountant.can_release():
            self.exhausted = True
            log.warning("privacy budget epsilon=%.2f reached: this node stops contributing updates",
                        s.epsilon_budget)
            return None
        lr = lr_at(self.steps, s.lr, s.lr_beta, s.lr_schedule)
        t0 = time.perf_counter()
        result = await asyncio.to_thread(self._local_train, start, lr, self.steps)
        self.metrics["train_seconds_total"] += time.perf_counter() - t0
        sparse = compress_within(self.ef, self._release(result, base_hash), app.norm_bound)
        samples = min(result.num_samples, app.sample_bound(app.state_view(), self.keypair.node_id) or 1)
        update = ModelUpdate(app.chain_id, self.keypair.node_id, time.time_ns() // 1000, base_hash, base_height,
                             samples, result.loss, sparse).signed(self.keypair)
        self.last_base, self.pending = (base_height, base_hash), update
        self.steps, self.last_loss = self.steps + 1, result.loss
        self._save()  # before it leaves the node: a restart must never train on this base again
        app.admit(update)
        self._announced_s = time.monotonic()
        await self.publish(TOPIC_UPDATE, update.encode())
        self.metrics["updates_sent"] += 1
        self.metrics["update_bytes_sent"] += wire_size(sparse)
        self.metrics["dense_bytes_equivalent"] += dense_bytes(app.dim)
        return update

    def _release(self, result: TrainResult, base_hash: bytes) -> np.ndarray:
        """The delta as released: clipped and noised (one release for the privacy accountant)."""
        s = self.app.settings
        noised, _ = clip_and_noise(result.delta, s.clip, s.noise_multiplier, self._rng)
        if self.accountant is not None:
            self.accountant.release()
        return noised

    def _local_train(self, start: np.ndarray, lr: float, step: int) -> TrainResult:
        s = self.app.settings
        return local_train(self.net, self.x, self.y, start=start, epochs=s.local_epochs, batch_size=s.batch_size,
                           lr=lr, optimizer=s.optimizer, momentum=s.momentum, seed=step)

    def privacy_view(self) -> dict:
        s = self.app.settings
        acc = self.accountant
        return {"dp": acc is not None, "epsilon": acc.epsilon() if acc else None, "delta": s.delta,
                "epsilon_budget": s.epsilon_budget, "noise_multiplier": s.noise_multiplier, "clip": s.clip,
                "releases": acc.releases if acc else self.steps, "exhausted": self.exhausted,
                "accountant": "opacus.accountants.RDPAccountant" if acc else None}
