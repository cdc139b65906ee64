"""The federated-learning settings: one type for the chain's genesis and for the simulator.

Everything every node of a chain must agree on lives here: data set and partition (so each node
knows its shard), model, local training, the client pipeline (clip, noise, top-k encoding, error
feedback), the privacy preset (:mod:`learning.privacy_preset`), the aggregation rule, staleness,
selection, rewards and penalties. A chain reads them
from the genesis file's ``app`` section (:meth:`FLSettings.from_app_state`); the simulator
(:class:`learning.sim.SimConfig`) holds one and adds only what a simulation alone needs. So a
simulated federation runs exactly the settings a chain would, and the defaults below are the
product's.

Two parts of the client pipeline may be switched off in a simulation only, as baselines and
ablations need: ``topk_fraction = None`` sends dense float32 updates and ``clip_norm = None``
neither clips nor bounds them. A chain refuses both (its wire form is sparse, and admission needs
the norm bound that the clip implies).

Unknown keys are errors: a typo must not silently fall back to a default on some nodes and not on
others.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from learning.aggregation import DEFAULT_RULE, RULE_NAMES, check_params
from learning.compression import DTYPES
from learning.hierarchy import Hierarchy
from learning.models import MODEL_NAMES
from learning.partition import SCHEMES
from learning.privacy_preset import PrivacyPreset, PrivacyPresetError
from learning.selection import POLICIES
from learning.optimizers import OPTIMIZERS
from learning.train import LR_SCHEDULES
from learning.typed import conforms, expected, is_float

DATASETS = ("digits", "fashion_mnist", "synthetic", "cifar10")
RENAMED = {"topk": "topk_fraction", "clip": "clip_norm", "delta": "privacy.delta", "dp_delta": "privacy.delta",
           "epsilon_budget": "privacy.epsilon", "alpha": "dirichlet_alpha"}
"""Genesis keys of earlier versions and their names now (named in the error, not accepted)."""


class SettingsError(ValueError):
    """An FL setting that cannot be used."""


@dataclass(frozen=True)
class FLSettings:
    """FL settings; every default is the product's (what ``fedchain testnet create`` writes)."""

    # task: data, partition, model
    dataset: str = "digits"
    data_dir: str = ""                 # fashion_mnist / cifar10: folder of the files ("" = system default)
    partition: str = "dirichlet"
    dirichlet_alpha: float = 0.5       # label-skew (and quantity-skew) concentration
    clients: int = 0                   # shards; 0 = one per node (genesis account, or simulated node)
    val_fraction: float = 0.1          # of each shard, kept by its node for its own validation
    model: str = "tabular_mlp"         # 64-unit MLP: small enough for devices and for DP noise
    seed: int = 0
    eval_samples: int = 300            # public evaluation set (the clustering rule's validation)
    task: dict = field(default_factory=dict)  # a chain's own task (node/fl/task.py): with one, each node
                                              # trains on its own [data] and the fields above name no data
    # local training
    local_epochs: int = 4
    batch_size: int | None = 32        # None = full batch
    lr: float = 0.3
    lr_schedule: str = "inv_sqrt"      # eta_t = lr / sqrt(t + lr_beta), t = the node's update count
    lr_beta: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    prox_mu: float = 0.0               # FedProx proximal term (0 = plain local training)
    # client pipeline: (DP-SGD under local-dp) -> clip -> update noise -> top-k with error feedback -> norm bound
    clip_norm: float | None = 1.0
    noise_multiplier: float = 0.0      # update noise: none by default (it claims no guarantee and hid attackers;
                                       # see learning.privacy_preset and docs/decisions.md)
    privacy: dict = field(default_factory=lambda: {"preset": "off"})
    topk_fraction: float | None = 0.1
    encoding: str = "float16"
    error_feedback: bool = True
    max_samples: int = 10_000          # cap on any member's declared (and so claimed) sample count
    max_update_bytes: int = 4 * 1024 * 1024
    # aggregation
    rule: str = DEFAULT_RULE
    rule_params: dict = field(default_factory=dict)
    server_lr: float = 1.0
    standing: bool = False             # weigh each sender by its last accepted scores (learning.standing;
                                       # the clustering rule only; off: see docs/decisions.md)
    max_staleness: int = 4
    staleness_a: float = 0.5
    selection: str = "all"             # all: every eligible update (max_updates applies to the others)
    max_updates: int = 64
    hierarchy: dict = field(default_factory=dict)   # {} = flat rounds; see learning.hierarchy.Hierarchy
    # rewards and penalties (stake; trust is the stake share)
    reward_accepted: int = 2
    penalty_rejected: int = 5
    penalty_bad_block: int = 20
    penalty_equivocation: int = 20     # two different signed updates from one sender for one base

    @classmethod
    def from_app_state(cls, app: dict[str, Any]) -> FLSettings:
        """The settings of a genesis ``app`` section; raises :class:`SettingsError` naming every
        problem (unknown keys, wrong types, out-of-range values, what a chain cannot run)."""
        data = dict(app)
        data.pop("kind", None)
        unknown = sorted(set(data) - set(_TYPES))
        if unknown:
            hints = [f"{k} (now {RENAMED[k]})" if k in RENAMED else k for k in unknown]
            raise SettingsError(f"unknown FL setting(s): {', '.join(hints)}")
        settings = cls(**{name: _coerce(name, value) for name, value in data.items()})
        settings.validate(chain=True)
        return settings

    def to_app_state(self) -> dict[str, Any]:
        return {"kind": "fl", **dataclasses.asdict(self)}

    @property
    def hierarchy_rule(self) -> Hierarchy | None:
        """The parsed ``hierarchy`` section (None: every round flat; :meth:`validate` refused a bad one)."""
        return Hierarchy.parse(self.hierarchy)

    @property
    def privacy_preset(self) -> PrivacyPreset:
        """The parsed ``privacy`` section (:meth:`validate` has refused a bad one)."""
        return PrivacyPreset.parse(self.privacy)

    def validate(self, chain: bool = False) -> None:
        """Raise :class:`SettingsError` naming every inconsistent setting; ``chain`` adds what a
        chain needs beyond a simulation (a clip, a sparse encoding, no ``natural`` partition)."""
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {DATASETS}"),
            (self.partition in SCHEMES, f"partition must be one of {SCHEMES}"),
            (self.partition != "natural" or self.dataset == "synthetic", "only synthetic data has a natural partition"),
            (self.model in MODEL_NAMES, f"model must be one of {MODEL_NAMES}"),
            (self.rule in RULE_NAMES, f"rule must be one of {RULE_NAMES}"),
            (self.encoding in DTYPES, f"encoding must be one of {DTYPES}"),
            (self.selection in POLICIES, f"selection must be one of {POLICIES}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.topk_fraction is None or 0 < self.topk_fraction <= 1, "topk_fraction must be in (0, 1]"),
            (self.clip_norm is None or self.clip_norm > 0, "clip_norm must be > 0"),
            (self.noise_multiplier >= 0, "noise_multiplier must be >= 0"),
            (self.clip_norm is not None or self.noise_multiplier == 0, "noise needs a clip_norm"),
            (self.max_staleness >= 0 and self.staleness_a >= 0, "max_staleness and staleness_a must be >= 0"),
            (self.max_updates >= 1 and self.local_epochs >= 1 and (self.batch_size is None or self.batch_size >= 1),
             "max_updates, local_epochs and batch_size must be >= 1"),
            (self.lr > 0 and self.server_lr > 0, "lr and server_lr must be > 0"),
            (self.momentum >= 0 and self.prox_mu >= 0, "momentum and prox_mu must be >= 0"),
            (min(self.reward_accepted, self.penalty_rejected, self.penalty_bad_block,
                 self.penalty_equivocation) >= 0, "rewards and penalties must be >= 0"),
            (self.max_samples >= 1, "max_samples must be >= 1"),
            (self.clients >= 0 and self.eval_samples >= 0, "clients and eval_samples must be >= 0"),
            (0 <= self.val_fraction < 1 and self.dirichlet_alpha > 0,
             "val_fraction must be in [0, 1) and dirichlet_alpha > 0"),
        ]
        if chain:
            checks += [
                (self.clip_norm is not None, "a chain needs clip_norm (admission bounds update norms by it)"),
                (self.topk_fraction is not None, "a chain needs topk_fraction (updates travel sparse)"),
                (self.partition != "natural", "a chain cannot use the natural partition"),
            ]
        problems = [msg for ok, msg in checks if not ok]
        try:
            PrivacyPreset.parse(self.privacy)
        except PrivacyPresetError as exc:
            problems.append(str(exc))
        try:
            Hierarchy.parse(self.hierarchy)
        except ValueError as exc:
            problems.append(str(exc))
        if self.rule in RULE_NAMES:
            try:
                check_params(self.rule, self.rule_params)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise SettingsError("; ".join(problems))


_TYPES: dict[str, Any] = typing.get_type_hints(FLSettings)


def _coerce(name: str, value: Any) -> Any:
    """``value`` as the field's type (ints accepted for floats, None only where the field allows
    it); anything else is an error."""
    hint = _TYPES[name]
    if not conforms(hint, value):
        raise SettingsError(f"FL setting {name} must be {expected(hint)}, got {value!r}")
    return float(value) if value is not None and is_float(hint) else value
