"""The FL section of the genesis file (``genesis.app``), shared by every node of a chain.

Everything a verifier must agree on lives here: the task (model, data shape, the public
evaluation set; see ``node/fl/task.py``) or, without one, the built-in data set and partition (so
each node knows its shard) and model, aggregation rule, compression, privacy, staleness, selection, training schedule,
rewards and penalties. Unknown keys are errors: a typo must not silently fall back to a default
on some nodes and not on others.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from learning.aggregation import RULE_NAMES, rule_parameters
from learning.compression import DTYPES
from learning.models import MODEL_NAMES
from learning.partition import SCHEMES
from learning.selection import POLICIES
from learning.train import LR_SCHEDULES, OPTIMIZERS
from node.fl.task import Task, TaskError

DATASETS = ("digits", "fashion_mnist", "synthetic")


class SettingsError(ValueError):
    """An FL setting in the genesis file that cannot be used."""


@dataclass
class FLSettings:
    dataset: str = "digits"
    data_dir: str = ""                 # fashion_mnist: folder of the IDX files ("" = system default)
    partition: str = "dirichlet"
    alpha: float = 0.5
    clients: int = 0                   # shards; 0 = one per genesis account
    val_fraction: float = 0.1
    model: str = "tabular_mlp"           # 64-unit MLP: small enough for devices and for DP noise
    seed: int = 0
    rule: str = "clustering"
    rule_params: dict = field(default_factory=dict)
    server_lr: float = 1.0
    topk: float = 0.1
    encoding: str = "float16"
    error_feedback: bool = True
    clip: float = 1.0
    noise_multiplier: float = 0.01
    epsilon_budget: float = 1e9
    delta: float = 1e-5
    max_staleness: int = 4
    staleness_a: float = 0.5
    selection: str = "all"            # all: every eligible update (max_updates applies to the others)
    max_updates: int = 64
    local_epochs: int = 4
    batch_size: int = 32
    lr: float = 0.3
    lr_schedule: str = "inv_sqrt"
    lr_beta: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    reward_accepted: int = 2
    penalty_rejected: int = 5
    penalty_bad_block: int = 20
    penalty_equivocation: int = 20    # two different signed updates from one sender for one base
    max_samples: int = 10_000          # cap on any member's declared (and so claimed) sample count
    eval_samples: int = 300            # common validation set for the clustering rule's threshold
    max_update_bytes: int = 4 * 1024 * 1024
    task: dict = field(default_factory=dict)  # node/fl/task.py; when set, each node trains on its own [data]

    @classmethod
    def from_app_state(cls, app: dict[str, Any]) -> "FLSettings":
        data = dict(app)
        data.pop("kind", None)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SettingsError(f"unknown FL setting(s): {', '.join(unknown)}")
        settings = cls()
        for f in dataclasses.fields(cls):
            if f.name in data:
                setattr(settings, f.name, _coerce(f.name, data[f.name], getattr(settings, f.name)))
        settings.validate()
        return settings

    def to_app_state(self) -> dict[str, Any]:
        return {"kind": "fl", **dataclasses.asdict(self)}

    def validate(self) -> None:
        checks = [
            (self.dataset in DATASETS, f"dataset must be one of {DATASETS}"),
            (self.partition in SCHEMES and self.partition != "natural", f"partition must be one of {SCHEMES[:-1]}"),
            (self.model in MODEL_NAMES, f"model must be one of {MODEL_NAMES}"),
            (self.rule in RULE_NAMES, f"rule must be one of {RULE_NAMES}"),
            (self.encoding in DTYPES, f"encoding must be one of {DTYPES}"),
            (self.selection in POLICIES, f"selection must be one of {POLICIES}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (0 < self.topk <= 1, "topk must be in (0, 1]"),
            (self.clip > 0 and self.noise_multiplier >= 0, "clip must be > 0 and noise_multiplier >= 0"),
            (self.epsilon_budget > 0 and 0 < self.delta < 1, "epsilon_budget must be > 0 and delta in (0, 1)"),
            (self.max_staleness >= 0 and self.staleness_a >= 0, "max_staleness and staleness_a must be >= 0"),
            (self.max_updates >= 1 and self.local_epochs >= 1 and self.batch_size >= 1,
             "max_updates, local_epochs and batch_size must be >= 1"),
            (self.lr > 0 and self.server_lr > 0, "lr and server_lr must be > 0"),
            (min(self.reward_accepted, self.penalty_rejected, self.penalty_bad_block,
                 self.penalty_equivocation) >= 0, "rewards and penalties must be >= 0"),
            (self.max_samples >= 1, "max_samples must be >= 1"),
            (self.clients >= 0 and self.eval_samples >= 0, "clients and eval_samples must be >= 0"),
            (0 <= self.val_fraction < 1 and self.alpha > 0, "val_fraction must be in [0, 1) and alpha > 0"),
        ]
        problems = [msg for ok, msg in checks if not ok]
        if self.task:
            try:
                Task.from_dict(self.task)
            except TaskError as exc:
                problems.append(str(exc))
        if self.rule in RULE_NAMES:
            allowed = rule_parameters(self.rule) | {"f"}  # f, the assumed Byzantine count, suits every rule
            unknown = sorted(set(self.rule_params) - allowed)
            if unknown:
                problems.append(f"rule_params {unknown} are not parameters of rule {self.rule} "
                                f"(it takes {sorted(allowed)})")
        if problems:
            raise SettingsError("; ".join(problems))


def _coerce(name: str, value: Any, default: Any) -> Any:
    """The value with the default's type (ints accepted for floats); anything else is an error."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise SettingsError(f"FL setting {name} must be {type(default).__name__}, got {value!r}")
    return value
