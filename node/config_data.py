"""The ``[data]`` section of ``config.toml``: where this device's own training data is.

Read by :mod:`node.fl.localdata`, which loads the data in the format named here.
"""

from __future__ import annotations

from dataclasses import dataclass

from node.config_checks import ConfigError

DATA_FORMATS = ("csv", "npz", "idx", "imagefolder")


@dataclass
class DataConfig:
    """This device's own training data. It is named here, in the node's config, and never in the
    genesis: only its owner knows where it is, and the daemon reads no one else's data. Relative
    paths are relative to the home folder (:meth:`NodeConfig` users resolve them)."""

    source: str = ""
    format: str = ""
    label_column: str = "label"
    labels: str = ""
    x_key: str = "x"
    y_key: str = "y"
    eval_set: str = ""  # the public evaluation set's blob, for a node no peer can serve it to yet

    def validate(self) -> None:
        if self.source and self.format not in DATA_FORMATS:
            raise ConfigError(f"data.format must be one of {', '.join(DATA_FORMATS)} "
                              f"(the format of {self.source}), got {self.format!r}")
        if self.format == "idx" and self.source and not self.labels:
            raise ConfigError("data.labels must name the IDX labels file when data.format = \"idx\"")
