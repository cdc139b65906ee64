"""The ``[storage]`` section of ``config.toml``: how much history the node's blob store keeps."""

from __future__ import annotations

from dataclasses import dataclass

from node.config_checks import ConfigError, check_positive


@dataclass
class StorageConfig:
    """How much history this node keeps in its blob store (a local choice, not a protocol rule)."""

    model_retention: int = 64  # heights of past global models kept
    update_retention: int = 0  # heights of model updates kept; 0 keeps all, so new nodes can verify history

    def validate(self) -> None:
        check_positive(self.model_retention, "storage.model_retention")
        if self.update_retention < 0:
            raise ConfigError(f"storage.update_retention must be >= 0, got {self.update_retention}")
