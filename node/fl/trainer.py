"""The node's own training loop: asynchronous, at its own pace, off the event loop.

Whenever a new global model becomes final, the node trains on its shard from that model (in a
worker thread, so the event loop never blocks), clips and noises the delta (Gaussian mechanism,
spending privacy tracked by an RDP accountant), top-k sparsifies it with error feedback, signs
it and gossips it. It stops contributing once its epsilon budget would be exceeded. Privacy
spending, the step count and the compression residual survive restarts.

``attack`` turns the node into a Byzantine one for evaluation (sign flip, Gaussian, ALIE, IPM,
min-max, scaling on the update; label flip, backdoor on the data). It is off by default and
logged loudly when on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from gossip.crypto import KeyPair
from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS, craft_updates, poison_data
from learning.compression import ErrorFeedback, dense_bytes, wire_size
from learning.privacy import PrivacyAccountant, clip_and_noise
from learning.train import local_train, lr_at
from node.fl.app import TOPIC_UPDATE, FLApp
from node.fl.update import ModelUpdate

log = logging.getLogger("fedchain.trainer")

ATTACKS = MODEL_ATTACKS + DATA_ATTACKS


class Trainer:
    def __init__(self, app: FLApp, keypair: KeyPair, publish: Callable[[str, bytes], Awaitable[bytes]],
                 state_path: Path, attack: str = "") -> None:
        if attack and attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        self.app = app
        self.keypair = keypair
        self.publish = publish
        self.state_path = state_path
        self.attack = attack
        s = app.settings
        self.net = app.new_net()
        self.ef = ErrorFeedback(app.dim, s.topk, s.encoding, s.error_feedback)
        # with noise_multiplier = 0 there is no privacy guarantee to account for (epsilon is infinite)
        self.accountant = (PrivacyAccountant(s.epsilon_budget, s.delta, s.noise_multiplier)
                           if s.noise_multiplier > 0 else None)
        self.steps = 0
        self.last_base = b""
        self.exhausted = False
        self.metrics: Counter[str] = Counter()
        self.last_loss = float("nan")
        self._rng = np.random.default_rng()  # DP noise must not be predictable: OS entropy
        self._wake = asyncio.Event()
        app.listeners.append(self._wake.set)
        self.x, self.y = app.data.train.x, app.data.train.y
        if attack:
            log.warning("ATTACK ENABLED: this node sends %s updates on purpose (evaluation only)", attack)
        if attack in DATA_ATTACKS:
            d = app.data.train
            self.x, self.y = poison_data(attack, self.x, self.y, np.random.default_rng(0), d.num_classes,
                                         d.image_shape)
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
            self.last_base = bytes.fromhex(state["last_base"])
            residual = np.frombuffer(bytes.fromhex(state["residual"]), dtype="<f4")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{self.state_path} is corrupt ({exc}); privacy spending cannot be "
                               "recovered, refusing to start rather than under-count it") from exc
        if residual.size == self.ef.dim:
            self.ef.residual = residual.astype(np.float32)

    def _save(self) -> None:
        privacy = self.accountant.to_dict() if self.accountant is not None else None
        state = {"privacy": privacy, "steps": self.steps, "last_base": self.last_base.hex(),
                 "residual": self.ef.residual.astype("<f4").tobytes().hex()}
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

    async def run(self) -> None:
        while True:
            self._wake.clear()
            if (self.app.model_hash and self.app.model_hash != self.last_base and not self.exhausted
                    and self._is_member()):
                try:
                    await self.train_once()
                except Exception:  # a failed round must not end training for good
                    log.exception("training round failed")
                    self.metrics["train_errors"] += 1
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), 5.0)
            except asyncio.TimeoutError:
                pass

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
        noised, _ = clip_and_noise(result.delta, s.clip, s.noise_multiplier, self._rng)
        if self.accountant is not None:
            self.accountant.release()
        if self.attack in MODEL_ATTACKS:
            observed = [u.dense() for u in app.pool.on_base(base_hash) if u.sender != self.keypair.node_id]
            seen = np.stack(observed) if observed else noised[None]
            noised = craft_updates(self.attack, noised[None], seen, self._rng)[0]
        sparse = self.ef.compress(noised)
        update = ModelUpdate(app.chain_id, self.keypair.node_id, time.time_ns() // 1000, base_hash, base_height,
                             result.num_samples, result.loss, sparse).signed(self.keypair)
        self.last_base, self.steps, self.last_loss = base_hash, self.steps + 1, result.loss
        self._save()
        app.admit(update)
        await self.publish(TOPIC_UPDATE, update.encode())
        self.metrics["updates_sent"] += 1
        self.metrics["update_bytes_sent"] += wire_size(sparse)
        self.metrics["dense_bytes_equivalent"] += dense_bytes(app.dim)
        return update

    def _local_train(self, start: np.ndarray, lr: float, step: int):
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
