"""The Gaussian mechanism for released updates, and a per-node RDP privacy accountant.

:func:`clip_and_noise` clips a released update to L2 norm ``C`` and adds N(0, (zC)^2) noise: the
update noise of every preset. It bounds what admission must accept, but no guarantee is claimed
for it (see :mod:`learning.privacy_preset`): a chain's updates are signed and gossiped publicly,
so a node releases in every round it takes part in and there is no participation sampling to
amplify anything; and the noise a small federation can bear gives epsilons in the hundreds of
thousands.

The formal guarantee is the ``local-dp`` preset's: each device trains with DP-SGD
(:mod:`learning.dpsgd`: per-example clipping, Gaussian noise on every step, Poisson-sampled
batches of its own records), and :class:`PrivacyAccountant` composes every DP-SGD step the node
ever released with Renyi DP (Mironov 2017) through Opacus' ``RDPAccountant``'s analysis, so our
epsilon is exactly Opacus' for the same history. Opacus recomputes the RDP curve of every
history entry on each query (tens of milliseconds for q < 1); since the curve of ``n`` steps is
``n`` times that of one, we cache the one-step curve per ``(z, q)`` and combine it with Opacus'
own arithmetic and conversion, which gives bit-identical epsilons at a fraction of the cost - it
matters when a simulator accounts for hundreds of nodes. Only Opacus' analysis module is loaded
(:func:`_opacus_rdp`): importing ``opacus`` runs its package ``__init__``, which brings its
privacy engine, optimizers and ``torch.distributed`` - about 90 MB of resident memory and
seconds of start-up in every daemon, for two pure functions (a ``local-dp`` node imports Opacus'
per-sample gradient machinery anyway, when it first trains).

Everything after the noise (top-k, quantisation, aggregation) is post-processing and costs no
further privacy - hence the order clip -> noise -> compress on the node.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache
from types import ModuleType

import numpy as np

from learning.borrowed import load_module

DEFAULT_ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
"""The RDP orders Opacus' ``RDPAccountant`` searches (``RDPAccountant.DEFAULT_ALPHAS``)."""

History = list[tuple[float, float, int]]


def _opacus_rdp() -> ModuleType:
    """``opacus.accountants.analysis.rdp`` without importing the ``opacus`` package (see the
    module docstring); the module itself needs only numpy and scipy. Loaded on the first epsilon
    asked for, not at import: its ``scipy.special`` costs every daemon of the ``off`` preset, which
    has no accountant, about 9 MB of private memory."""
    return load_module("opacus", "accountants", "analysis", "rdp", name="learning._opacus_rdp")


def _step(history: History, noise_multiplier: float, sample_rate: float, steps: int = 1) -> History:
    """``history`` after ``steps`` more mechanism steps, merged as ``RDPAccountant.step`` merges them."""
    if history and history[-1][:2] == (noise_multiplier, sample_rate):
        return history[:-1] + [(noise_multiplier, sample_rate, history[-1][2] + steps)]
    return history + [(noise_multiplier, sample_rate, steps)]


class PrivacyBudgetExhausted(RuntimeError):
    """Releasing one more update would push epsilon past the node's budget."""


def clip_and_noise(delta: np.ndarray, clip_norm: float, noise_multiplier: float,
                   rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Clip ``delta`` to L2 norm ``clip_norm`` and add N(0, (z * C)^2) noise to every coordinate.

    Returns the noised float32 vector and the norm *before* clipping (for diagnostics: a
    clipping bound far below typical norms biases training). ``noise_multiplier=0`` clips only.
    """
    if not clip_norm > 0:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm}")
    if not noise_multiplier >= 0:
        raise ValueError(f"noise_multiplier must be >= 0, got {noise_multiplier}")
    d = np.asarray(delta, dtype=np.float32)
    norm = float(np.linalg.norm(d.astype(np.float64)))
    if not math.isfinite(norm):
        raise ValueError("update holds NaN or infinity")
    factor = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    out = d * np.float32(factor)
    if noise_multiplier > 0:
        out = out + rng.normal(0.0, noise_multiplier * clip_norm, d.shape).astype(np.float32)
    return out.astype(np.float32, copy=False), norm


class PrivacyAccountant:
    """Epsilon spent by one node, with a budget checked *before* each release.

    A release is ``steps`` Gaussian-mechanism steps, each with noise multiplier ``z`` and Poisson
    sample rate ``q`` (one DP-SGD step per local batch). ``noise_multiplier`` and ``sample_rate``
    are the node's configured defaults; calls may override them per release.
    ``epsilon_budget = inf`` tracks spending without a cap.
    """

    def __init__(self, epsilon_budget: float, delta: float = 1e-5, noise_multiplier: float = 1.0,
                 sample_rate: float = 1.0) -> None:
        if not epsilon_budget > 0:
            raise ValueError(f"epsilon_budget must be > 0, got {epsilon_budget}")
        if not 0 < delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        _check_step(noise_multiplier, sample_rate)
        self.epsilon_budget = float(epsilon_budget)
        self.delta = float(delta)
        self.noise_multiplier = float(noise_multiplier)
        self.sample_rate = float(sample_rate)
        self._history: History = []

    @property
    def history(self) -> History:
        """``(noise_multiplier, sample_rate, steps)`` runs, oldest first (Opacus' format)."""
        return list(self._history)

    @property
    def steps(self) -> int:
        """Mechanism steps composed so far (DP-SGD steps, over every release)."""
        return sum(steps for _, _, steps in self._history)

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon spent so far at ``delta`` (the accountant's default when None)."""
        return _epsilon(self._history, self.delta if delta is None else delta)

    def epsilon_after(self, steps: int = 1, noise_multiplier: float | None = None,
                      sample_rate: float | None = None) -> float:
        """Epsilon the node would have spent after one more release of ``steps`` steps."""
        z, q = self._params(noise_multiplier, sample_rate)
        return _epsilon(_step(self._history, z, q, _check_steps(steps)), self.delta)

    def can_release(self, steps: int = 1, noise_multiplier: float | None = None,
                    sample_rate: float | None = None) -> bool:
        """True when one more release of ``steps`` steps stays within the budget."""
        return self.epsilon_after(steps, noise_multiplier, sample_rate) <= self.epsilon_budget

    def release(self, steps: int = 1, noise_multiplier: float | None = None,
                sample_rate: float | None = None) -> float:
        """Record one release of ``steps`` steps and return the new epsilon; refuse (and record
        nothing) if it would exceed the budget."""
        z, q = self._params(noise_multiplier, sample_rate)
        after = self.epsilon_after(steps, z, q)
        if after > self.epsilon_budget:
            raise PrivacyBudgetExhausted(
                f"release would raise epsilon to {after:.3f}, above the budget {self.epsilon_budget:.3f}")
        self._history = _step(self._history, z, q, steps)
        return after

    def _params(self, z: float | None, q: float | None) -> tuple[float, float]:
        z = self.noise_multiplier if z is None else float(z)
        q = self.sample_rate if q is None else float(q)
        _check_step(z, q)
        return z, q

    def to_dict(self) -> dict:
        """JSON-ready state, so a daemon can persist spending across restarts."""
        return {"epsilon_budget": self.epsilon_budget, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
                "history": [[z, q, n] for z, q, n in self._history]}

    @classmethod
    def from_dict(cls, state: dict) -> PrivacyAccountant:
        """Inverse of :meth:`to_dict`; validates every history entry."""
        try:
            acc = cls(state["epsilon_budget"], state["delta"], state["noise_multiplier"], state["sample_rate"])
            history = [(float(z), float(q), int(n)) for z, q, n in state["history"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid privacy accountant state: {exc}") from exc
        for z, q, n in history:
            _check_step(z, q)
            if n < 1:
                raise ValueError(f"invalid privacy accountant state: {n} steps in a history entry")
        acc._history = history
        return acc


@lru_cache(maxsize=256)
def _unit_rdp(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    """RDP curve (over Opacus' default orders) of a single release."""
    curve = _opacus_rdp().compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                      orders=DEFAULT_ALPHAS)
    curve.flags.writeable = False
    return curve


def _epsilon(history: History, delta: float) -> float:
    """What ``RDPAccountant.get_epsilon`` returns for ``history``, with cached curves."""
    if not history:
        return 0.0
    total = sum([_unit_rdp(z, q) * n for z, q, n in history])
    with warnings.catch_warnings():
        # With little noise the smallest order is optimal and Opacus says so on every query; the
        # epsilon it returns is still a valid upper bound.
        warnings.filterwarnings("ignore", message="Optimal order is the smallest alpha")
        eps, _ = _opacus_rdp().get_privacy_spent(orders=DEFAULT_ALPHAS, rdp=total, delta=delta)
    return float(eps)


def _check_step(noise_multiplier: float, sample_rate: float) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"a release takes at least one step, got {steps!r}")
    return steps
