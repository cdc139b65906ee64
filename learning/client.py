"""The client pipeline: what one node does to turn a global model into the update it sends.

local training (DP-SGD under the ``local-dp`` preset: one release of its steps for the privacy
accountant) -> clip to ``C`` -> update noise N(0, (zC)^2) -> top-k with error feedback, values in
the genesis encoding -> the sent vector's norm bounded (what is cut stays in the residual) ->
claim at most the sample count the node may.

A daemon's trainer (``node/fl/trainer.py``) and the simulator (:mod:`learning.sim`) both run a
:class:`Client`, so a benchmark of the simulator measures the pipeline users run. The pipeline
is two calls, :meth:`Client.release` then :meth:`Client.send`, because an attacker (evaluation
only) replaces the released vector with a crafted one in between, and must still send it through
the same compression and norm bound as everybody else, as a careful attacker would.

Everything here is pure and synchronous; a daemon runs it on one worker thread, which alone
touches the client's state (residual, accountant, step count).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from learning.bounds import compress_within, l2_norm, update_norm_bound
from learning.compression import (
    ErrorFeedback,
    SparseUpdate,
    dense_bytes,
    densify,
    wire_size,
)
from learning.dpsgd import dp_local_train, dp_schedule
from learning.models import Net
from learning.privacy import PrivacyAccountant, PrivacyBudgetExhausted, clip_and_noise
from learning.settings import FLSettings
from learning.train import local_train, lr_at


def norm_bound(settings: FLSettings, dim: int) -> float:
    """The largest L2 norm an honest update may have (:func:`learning.bounds.update_norm_bound`);
    infinite when the settings do not clip (a simulation baseline)."""
    if settings.clip_norm is None:
        return math.inf
    return update_norm_bound(settings.clip_norm, settings.noise_multiplier, dim, settings.encoding)


@dataclass(frozen=True)
class Release:
    """What local training released: the clipped, noised delta."""

    vector: np.ndarray    # (d,) float32
    num_samples: int      # samples trained on per epoch
    loss: float           # mean training loss (known to the node; sent only without a guarantee)


@dataclass(frozen=True)
class Sent:
    """What the node sends: its (compressed, bounded) update and the sample count it claims."""

    sparse: SparseUpdate | None   # None: sent dense float32 (simulation baselines only)
    vector: np.ndarray            # (d,) float32, what every receiver decodes
    num_samples: int
    loss: float

    @property
    def wire_bytes(self) -> int:
        """Exact msgpack bytes of the update's vector part (4 bytes per value when dense)."""
        return dense_bytes(self.vector.size) if self.sparse is None else wire_size(self.sparse)


class Client:
    """One node's client side: its data, error-feedback residual, privacy accountant, update count.

    ``noise_rng`` draws the noise and, under ``local-dp``, the Poisson batches: a daemon passes an
    unseeded generator (neither may be predictable), a simulation a seeded one. The accountant
    exists under ``local-dp`` only: the ``off`` preset claims no guarantee, so there is no epsilon.
    """

    def __init__(self, settings: FLSettings, x: np.ndarray, y: np.ndarray, dim: int,
                 noise_rng: np.random.Generator) -> None:
        self.settings = settings
        self.x, self.y = x, y
        self.dim = int(dim)
        self.noise_rng = noise_rng
        s = settings
        self.compressor = (None if s.topk_fraction is None
                           else ErrorFeedback(self.dim, s.topk_fraction, s.encoding, s.error_feedback))
        self.privacy = s.privacy_preset
        # the Poisson rate and step count of one release (the data set size is public: it is
        # declared at registration, and DP-SGD's sample rate assumes it)
        # (a node without records follows and verifies the chain and never releases: no schedule)
        self.sample_rate, self.dp_steps = dp_schedule(len(y), s.batch_size, s.local_epochs) if len(y) else (0.0, 0)
        self.accountant = (PrivacyAccountant(self.privacy.epsilon, self.privacy.delta, self.privacy.noise_multiplier,
                                             self.sample_rate) if self.privacy.formal and len(y) else None)
        self.bound = norm_bound(s, self.dim)
        self.steps = 0

    def can_release(self) -> bool:
        """False once one more release would take the node's epsilon past its budget."""
        return self.accountant is None or self.accountant.can_release(self.dp_steps)

    def epsilon(self) -> float | None:
        return None if self.accountant is None else self.accountant.epsilon()

    def release(self, net: Net, start: np.ndarray, seed: int | None = None) -> Release:
        """Train ``net`` from ``start``, then clip and noise the delta: one release.

        The learning rate follows the node's own update count (``lr_at(steps)``). Without a
        guarantee, batch order is drawn from ``seed`` (by default that count); under ``local-dp``
        training is DP-SGD with batches drawn from ``noise_rng``, and the accountant records its
        steps. Raises :class:`PrivacyBudgetExhausted` when the budget would be passed.
        """
        s = self.settings
        if not self.can_release():
            raise PrivacyBudgetExhausted(f"epsilon budget {self.privacy.epsilon:g} reached "
                                         f"(spent {self.epsilon():.3f}; one more update would pass it)")
        lr = lr_at(self.steps, s.lr, s.lr_beta, s.lr_schedule)
        if self.privacy.formal:
            result = dp_local_train(net, self.x, self.y, start=start, epochs=s.local_epochs, batch_size=s.batch_size,
                                    lr=lr, noise_multiplier=self.privacy.noise_multiplier,
                                    max_grad_norm=self.privacy.max_grad_norm, rng=self.noise_rng,
                                    optimizer=s.optimizer, momentum=s.momentum, prox_mu=s.prox_mu)
            self.accountant.release(result.steps)
        else:
            result = local_train(net, self.x, self.y, start=start, epochs=s.local_epochs, batch_size=s.batch_size,
                                 lr=lr, optimizer=s.optimizer, momentum=s.momentum, prox_mu=s.prox_mu,
                                 seed=self.steps if seed is None else seed)
        vector = result.delta
        if s.clip_norm is not None:
            vector, _ = clip_and_noise(vector, s.clip_norm, s.noise_multiplier, self.noise_rng)
        self.steps += 1
        return Release(vector, result.num_samples, result.loss)

    def send(self, release: Release, sample_cap: int, vector: np.ndarray | None = None) -> Sent:
        """Compress ``vector`` (by default the release's) with error feedback within the norm
        bound, and claim at most ``sample_cap`` samples. Under ``local-dp`` the training loss is
        not sent (0): it is computed from the records without noise, so it would leak them."""
        vec = release.vector if vector is None else np.asarray(vector, dtype=np.float32)
        claim = min(release.num_samples, int(sample_cap))
        loss = 0.0 if self.privacy.formal else release.loss
        if self.compressor is None:
            norm = l2_norm(vec)
            if norm > self.bound:
                vec = (vec * np.float32(self.bound / norm * (1 - 1e-4))).astype(np.float32)
            return Sent(None, vec, claim, loss)
        sparse = compress_within(self.compressor, vec, self.bound)
        return Sent(sparse, densify(sparse), claim, loss)

    def update(self, net: Net, start: np.ndarray, sample_cap: int, seed: int | None = None) -> Sent:
        """The whole pipeline: :meth:`release` then :meth:`send`."""
        return self.send(self.release(net, start, seed), sample_cap)

    # ----- persistence (a daemon keeps this across restarts) ---------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-ready: privacy spending, update count, error-feedback residual (hex float32 LE)."""
        residual = self.compressor.residual if self.compressor is not None else np.zeros(0, np.float32)
        return {"privacy": self.accountant.to_dict() if self.accountant is not None else None,
                "steps": self.steps, "residual": residual.astype("<f4").tobytes().hex()}

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; raises ValueError, KeyError or TypeError on a bad state.
        Spending is restored only under ``local-dp`` (an ``off`` node has none to keep)."""
        if self.accountant is not None and state["privacy"] is not None:
            self.accountant = PrivacyAccountant.from_dict(state["privacy"])
        self.steps = int(state["steps"])
        residual = np.frombuffer(bytes.fromhex(state["residual"]), dtype="<f4")
        if self.compressor is not None and residual.size == self.dim:
            self.compressor.residual = residual.astype(np.float32)

