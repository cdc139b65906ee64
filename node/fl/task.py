"""The task the whole chain trains for: ``app.task`` in the genesis file.

It fixes what every node must agree on and nothing a device keeps to itself: the model (a zoo
name, or a user's own PyTorch module ``package.module:factory`` whose source file's SHA-256 is
pinned), the input shape and number of classes every device's data must have, the loss, the
least samples a device must hold, and the public evaluation set (the robust rule tunes itself on
it, and it is the test metric), named by the SHA-256 of its blob. Local training settings
(epochs, batch size, learning rate, optimizer) stay in the FL settings beside it.

A node whose copy of a custom model's source differs from the pinned hash refuses to start: its
updates would be computed by another function than its peers', and verifying delegates would
reject them (or, worse, two delegates would disagree on a round).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from learning.datasets.checks import DataSpec
from learning.models import MODEL_NAMES, Net, build_model
from node.config_checks import ConfigError

LOSSES = ("cross_entropy",)
_CUSTOM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class TaskError(ConfigError):
    """A genesis task that cannot be used here, or model code that is not the pinned one."""


@dataclass(frozen=True)
class Task:
    model: str
    input_shape: tuple[int, ...]
    num_classes: int
    eval_set_sha256: str
    eval_set_samples: int
    model_code_sha256: str = ""
    loss: str = "cross_entropy"
    min_samples: int = 10

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Task:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise TaskError(f"genesis app.task: unknown key(s) {unknown} (known: {sorted(known)})")
        missing = sorted({"model", "input_shape", "num_classes", "eval_set_sha256", "eval_set_samples"} - set(raw))
        if missing:
            raise TaskError(f"genesis app.task: missing {missing}")
        shape = raw["input_shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= 3 or not all(
                isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape):
            raise TaskError(f"genesis app.task.input_shape must be 1 to 3 positive integers, got {shape!r}")
        task = cls(**{**raw, "input_shape": tuple(shape)})
        task.validate()
        return task

    def validate(self) -> None:
        problems = []
        if self.custom:
            if not _HEX64.match(self.model_code_sha256):
                problems.append("model_code_sha256 must be the 64 hex SHA-256 of the model's source file")
        elif self.model not in MODEL_NAMES:
            problems.append(f"model must be one of {MODEL_NAMES} or package.module:factory, got {self.model!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            problems.append("num_classes must be an integer >= 2")
        if not isinstance(self.eval_set_sha256, str) or not _HEX64.match(self.eval_set_sha256):
            problems.append("eval_set_sha256 must be 64 lower-case hex characters")
        if not isinstance(self.eval_set_samples, int) or self.eval_set_samples < 1:
            problems.append("eval_set_samples must be an integer >= 1")
        if self.loss not in LOSSES:
            problems.append(f"loss must be one of {LOSSES}")
        if not isinstance(self.min_samples, int) or self.min_samples < 1:
            problems.append("min_samples must be an integer >= 1")
        if problems:
            raise TaskError("genesis app.task: " + "; ".join(problems))

    @property
    def custom(self) -> bool:
        """A user's own module rather than a zoo model."""
        return bool(_CUSTOM.match(self.model))

    @property
    def spec(self) -> DataSpec:
        return DataSpec(self.input_shape, self.num_classes, self.min_samples)

    @property
    def eval_hash(self) -> bytes:
        return bytes.fromhex(self.eval_set_sha256)

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["input_shape"] = list(self.input_shape)
        return out

    def build(self, seed: int) -> Net:
        """The model, initialised as a pure function of ``seed`` (every node starts from the same one).
        A custom model is PyTorch: only a node of such a task imports torch."""
        if not self.custom:
            return build_model(self.model, self.input_shape, self.num_classes, seed)
        factory = load_factory(self.model, self.model_code_sha256)
        import torch

        from learning.torchnet import TorchNet, seeded
        module = seeded(lambda: factory(self.input_shape, self.num_classes), seed)
        if not isinstance(module, torch.nn.Module) or any(p.dtype != torch.float32 for p in module.parameters()):
            raise TaskError(f"{self.model} must return a torch.nn.Module with float32 parameters")
        return TorchNet(module)


def source_hash(module: str) -> tuple[str, Path]:
    """SHA-256 (hex) and path of ``module``'s source file, found without running the module itself."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise TaskError(f"model module {module!r} cannot be found ({exc}); install it on this device") from None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise TaskError(f"model module {module!r} is not an importable .py file on this device "
                        "(check PYTHONPATH, or install the package that holds it)")
    path = Path(spec.origin)
    return hashlib.sha256(path.read_bytes()).hexdigest(), path


@lru_cache(maxsize=8)
def load_factory(target: str, pinned: str) -> Any:
    """``factory`` of ``package.module:factory``, imported only after its source hash matched
    (once per process: every evaluation builds a model)."""
    module, _, name = target.partition(":")
    digest, path = source_hash(module)
    if digest != pinned:
        raise TaskError(f"model code {path} has SHA-256 {digest}, but the genesis pins {pinned}: this device "
                        f"runs different code for {target} than the chain agreed on. Install the exact version "
                        "the chain uses; this node will not start with other code")
    factory = getattr(importlib.import_module(module), name, None)
    if not callable(factory):
        raise TaskError(f"{target}: {module} has no callable {name!r}")
    return factory
