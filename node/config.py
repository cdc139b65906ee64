"""The node's own settings: ``config.toml`` in its home folder.

Protocol numbers (slot time, delegates, FL rules) live in the genesis file, which every node of a
chain shares; this file holds what one operator may choose alone: where the node listens, whom it
dials first, its resource limits and its logging. It is read with :mod:`tomllib` and checked
strictly (unknown keys and wrong types are errors, not silently ignored) because a misspelt key
that falls back to a default is the kind of mistake an operator only finds in production.

Layout::

    moniker = "node0"
    log_level = "info"
    log_format = "text"         # text | json (one JSON object per line, for log shippers)

    [network]
    host = "127.0.0.1"          # listen address
    port = 26657                # one port: HTTP API and the /p2p gossip endpoint
    advertised_url = ""         # empty: http://HOST:PORT
    bootstrap = ["http://127.0.0.1:26658"]
    max_message = 8388608
    max_peers = 64              # connections in all, inbound and outbound
    max_outbound = 16           # of which dialled by us: inbound strangers never take these
    dial_scope = "public"       # addresses learned from peers that may be dialled: public | private | local

    [api]
    max_blocks_per_page = 100
    max_body = 1048576
    max_subscribers = 64
    max_response_bytes = 4194304  # byte budget of one list answer
    requests_per_s = 50           # per client address (token bucket)
    request_burst = 200
    answer_bytes_per_s = 8388608  # bytes of answers per client address
    txs_per_s = 20                # POST /txs per client address
    tx_burst = 100
    max_inflight_per_client = 32
    max_inflight = 64
    request_timeout_ms = 30000

    [sync]
    trusted_checkpoint = ""     # "HEIGHT:BLOCKHASH", a weak-subjectivity checkpoint

    [storage]
    model_retention = 64        # heights of past global models kept
    update_retention = 0        # heights of updates kept (0 = all: lets new nodes verify history)

    [data]                      # this device's own training data (never in genesis)
    source = ""                 # file or folder, relative to the home; "" = none (the node does not train)
    format = ""                 # csv | npz | idx | imagefolder
    label_column = "label"      # csv: the class column
    labels = ""                 # idx: the labels file
    x_key = "x"                 # npz: the arrays of samples and labels
    y_key = "y"
    eval_set = ""               # a copy of the public evaluation set (checked against the genesis hash),
                                # used if the blob store lacks it; "" = fetch it from peers

    [fault]                     # evaluation-only misbehaviour; never enable on a real chain
    double_sign = false
    withhold_votes = false
    lie_height = false
    flood_mempool = false
    wrong_model = false
    lying_partial = false       # hierarchical rounds: lie about one cluster's partial aggregate
    attack = ""                 # sign_flip | gaussian | alie | ipm | minmax | scale | label_flip | backdoor
    clock_offset_ms = 0         # run consensus and gossip on a wall clock this far off

The sections are dataclasses in their own modules (``node/config_network.py``,
``node/config_api.py``, ``node/config_sync.py``, ``node/config_storage.py``,
``node/config_data.py``, ``node/config_fault.py``); this module holds the whole file: the
top-level keys, and reading and writing it.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from node.config_api import ApiConfig
from node.config_checks import ConfigError
from node.config_data import DataConfig
from node.config_fault import FaultConfig
from node.config_network import NetworkConfig
from node.config_storage import StorageConfig
from node.config_sync import SyncConfig

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


@dataclass
class NodeConfig:
    """Everything in ``config.toml``. Build with :func:`load_config` or the defaults, then ``validate()``."""

    moniker: str = "node"
    log_level: str = "info"
    log_format: str = "text"  # text, or json: one object per line (time, level, logger, message) for log shippers
    network: NetworkConfig = field(default_factory=NetworkConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)

    def validate(self) -> "NodeConfig":
        if not self.moniker or len(self.moniker) > 64:
            raise ConfigError("moniker must be 1 to 64 characters")
        self.log_level = self.log_level.lower()
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        for section in (self.network, self.api, self.sync, self.storage, self.data, self.fault):
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_ok(value: Any, hint: Any) -> bool:
    """Does a TOML value match a field's type hint? Only the few types config fields use."""
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    raise TypeError(f"unsupported config field type {hint!r}")


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        return "a list of " + {bool: "booleans", int: "integers", str: "strings"}.get(item, str(item))
    return {bool: "true or false", int: "an integer", str: "a string"}.get(hint, str(hint))


def _build(cls: type, data: Any, where: str) -> Any:
    """Instantiate dataclass ``cls`` from a TOML table, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        prefix = f"[{where}] " if where else ""
        raise ConfigError(f"unknown key {prefix}{unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints[key]
        dotted = f"{where}.{key}" if where else key
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, dotted)
        elif not _type_ok(value, hint):
            raise ConfigError(f"{dotted} must be {_type_name(hint)}, got {value!r}")
        else:
            kwargs[key] = value
    return cls(**kwargs)


def parse_config(text: str, source: str = "config.toml") -> NodeConfig:
    """Parse and validate TOML text; every problem is a :class:`ConfigError` naming ``source``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    try:
        return _build(NodeConfig, data, "").validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: Path) -> NodeConfig:
    """Read ``path``; a missing or unreadable file is a :class:`ConfigError`, not an OSError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; create it with `fedchain init --home {path.parent}`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return parse_config(text, str(path))


def save_config(config: NodeConfig, path: Path) -> None:
    """Write ``config`` as TOML (atomically, so a crash never leaves half a file)."""
    config.validate()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(tomli_w.dumps(config.to_dict()), encoding="utf-8")
    tmp.replace(path)
