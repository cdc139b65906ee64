"""The genesis privacy preset (``app.privacy``): what privacy a chain's nodes give, and say so.

``{"preset": "off"}`` (the default) claims nothing. Updates are clipped to ``clip_norm``; a
genesis may add the update noise ``noise_multiplier`` (0 by default, part of the norm bound
admission checks), but that noise buys no guarantee worth the name: each node releases in every
round it takes part in, and with 0.01 a node would spend an epsilon of about 190,000 in 35
releases. Everything reports "no formal privacy".

``{"preset": "local-dp", "epsilon": E, "delta": D, "noise_multiplier": s, "max_grad_norm": c}``
gives record-level (E, D)-differential privacy for each device's own data. Amplification by
*participation* sampling does not apply on a chain: every update is signed and gossiped
publicly, so everyone sees which node released in which round. The amplification comes from
sampling inside the device instead: local training is DP-SGD (:mod:`learning.dpsgd`) with
Poisson-sampled batches of the device's own records (rate q = 1 / ceil(records / batch_size)),
each example's gradient clipped to ``max_grad_norm`` and Gaussian noise ``s * max_grad_norm``
added to every step's sum. Every step of every release composes in the node's RDP accountant
(:class:`learning.privacy.PrivacyAccountant`, Opacus' analysis); a node whose next release would
take its epsilon past E stops releasing (it keeps following the chain) and says so.

Presets are parsed strictly: unknown presets or keys, wrong types and meaningless values (an
epsilon above :data:`MEANINGFUL_EPSILON`, a delta above :data:`MAX_DELTA`) are errors naming the
key, as every other genesis setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

PRESETS = ("off", "local-dp")
MEANINGFUL_EPSILON = 10.0
"""Above this epsilon a differential-privacy "guarantee" bounds nothing an attacker cares about
(e^10 ~ 22,000 times likelier outcomes): a ``local-dp`` budget above it is refused."""
MAX_DELTA = 1e-3
"""delta is the probability the guarantee fails outright; it must stay far below 1/records."""
LOCAL_DP_DEFAULTS = {"delta": 1e-5, "noise_multiplier": 1.0, "max_grad_norm": 1.0}


class PrivacyPresetError(ValueError):
    """A genesis ``privacy`` section that cannot be used."""


@dataclass(frozen=True)
class PrivacyPreset:
    """A parsed ``app.privacy``. For ``off`` the numbers are None: there is no guarantee to state."""

    preset: str = "off"
    epsilon: float | None = None          # the node's whole budget
    delta: float | None = None
    noise_multiplier: float | None = None  # DP-SGD noise per step, in units of max_grad_norm
    max_grad_norm: float | None = None     # per-example gradient clip

    @property
    def formal(self) -> bool:
        """True when the preset gives a differential-privacy guarantee (and has a budget)."""
        return self.preset == "local-dp"

    @classmethod
    def parse(cls, section: Any) -> PrivacyPreset:
        """The preset of a genesis ``privacy`` section; raises :class:`PrivacyPresetError`."""
        if not isinstance(section, dict) or "preset" not in section:
            raise PrivacyPresetError(f'privacy must be an object naming a preset, e.g. {{"preset": "off"}}; '
                                     f"got {section!r}")
        name = section["preset"]
        if name not in PRESETS:
            raise PrivacyPresetError(f"privacy.preset must be one of {', '.join(PRESETS)}; got {name!r}")
        allowed = {"preset"} | ({"epsilon", *LOCAL_DP_DEFAULTS} if name == "local-dp" else set())
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise PrivacyPresetError(f"privacy preset {name} takes no {', '.join(unknown)} "
                                     f"(it takes {', '.join(sorted(allowed))})")
        if name == "off":
            return cls()
        if "epsilon" not in section:
            raise PrivacyPresetError("privacy preset local-dp needs an epsilon budget, "
                                     f"e.g. {{\"preset\": \"local-dp\", \"epsilon\": 8}} (at most {MEANINGFUL_EPSILON:g})")
        values = {key: _number(key, section.get(key, default))
                  for key, default in {"epsilon": None, **LOCAL_DP_DEFAULTS}.items()}
        problems = [msg for ok, msg in (
            (0 < values["epsilon"] <= MEANINGFUL_EPSILON,
             (f"privacy.epsilon must be in (0, {MEANINGFUL_EPSILON:g}]: above it differential privacy bounds "
              f'nothing (use {{"preset": "off"}} to claim no privacy)')),
            (0 < values["delta"] <= MAX_DELTA, f"privacy.delta must be in (0, {MAX_DELTA:g}]"),
            (values["noise_multiplier"] > 0, "privacy.noise_multiplier must be > 0"),
            (values["max_grad_norm"] > 0, "privacy.max_grad_norm must be > 0"),
        ) if not ok]
        if problems:
            raise PrivacyPresetError("; ".join(problems))
        return cls(name, **values)

    def to_dict(self) -> dict[str, Any]:
        """The genesis form (:meth:`parse`'s inverse)."""
        if not self.formal:
            return {"preset": self.preset}
        return {"preset": self.preset, "epsilon": self.epsilon, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm}

    def guarantee(self, update_noise: float) -> str:
        """What the preset gives, in one plain sentence (API, CLI, dashboard, docs)."""
        if not self.formal:
            noise = f"noised lightly (noise multiplier {update_noise:g})" if update_noise > 0 else "not noised"
            return f"no formal privacy: updates are clipped and {noise}, and no guarantee is claimed"
        return (f"record-level ({self.epsilon:g}, {self.delta:g})-differential privacy for each device's own data "
                f"(DP-SGD, noise multiplier {self.noise_multiplier:g}, per-example clip {self.max_grad_norm:g}); "
                f"a node stops sending updates before its epsilon would pass {self.epsilon:g}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PrivacyPresetError(f"privacy.{key} must be a finite number, got {value!r}")
    return float(value)
