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
    max_peers = 32              # connections in all, inbound and outbound
    max_outbound = 8            # of which dialled by us: inbound strangers never take these
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
    attack = ""                 # sign_flip | gaussian | alie | ipm | minmax | scale | label_flip | backdoor
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from gossip.codec import DEFAULT_MAX_MESSAGE
from gossip.config import SCOPES, GossipConfig, normalize_url

DEFAULT_PORT = 26657
DEFAULT_HOST = "127.0.0.1"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


class ConfigError(Exception):
    """A home folder, config, genesis or key that the node cannot use; the message says how to fix it."""


def check_base_url(url: str, what: str = "URL") -> str:
    """``url`` in the canonical base-URL form peers are keyed by, or :class:`ConfigError`."""
    try:
        return normalize_url(url)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def _check_port(value: int, what: str) -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{what} must be between 1 and 65535, got {value}")


def _check_positive(value: int, what: str) -> None:
    if value <= 0:
        raise ConfigError(f"{what} must be positive, got {value}")


@dataclass
class NetworkConfig:
    """Listening address, peers to dial first, and transport limits (handed to the gossip layer)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    advertised_url: str = ""
    bootstrap: list[str] = field(default_factory=list)
    max_message: int = DEFAULT_MAX_MESSAGE
    max_peers: int = 32
    max_outbound: int = 8
    dial_scope: str = "public"

    def validate(self) -> None:
        if not self.host:
            raise ConfigError("network.host must not be empty")
        _check_port(self.port, "network.port")
        if self.advertised_url:
            self.advertised_url = check_base_url(self.advertised_url, "network.advertised_url")
        self.bootstrap = [check_base_url(u, "network.bootstrap entry") for u in self.bootstrap]
        if self.max_message < 1024:
            raise ConfigError(f"network.max_message must be at least 1024 bytes, got {self.max_message}")
        _check_positive(self.max_peers, "network.max_peers")
        _check_positive(self.max_outbound, "network.max_outbound")
        if self.max_outbound >= self.max_peers:
            raise ConfigError(f"network.max_outbound ({self.max_outbound}) must be less than "
                              f"network.max_peers ({self.max_peers}): the rest are inbound slots")
        if self.dial_scope not in SCOPES:
            raise ConfigError(f"network.dial_scope must be one of {', '.join(SCOPES)}, got {self.dial_scope!r}")

    @property
    def url(self) -> str:
        """The base URL peers and clients use to reach this node."""
        return self.advertised_url or f"http://{self.host}:{self.port}"

    def gossip_config(self, chain_id: str) -> GossipConfig:
        """The gossip layer's settings for this node (its other knobs keep their defaults)."""
        return GossipConfig(chain_id=chain_id, listen_url=self.url, bootstrap=list(self.bootstrap),
                            max_message=self.max_message, max_outbound=self.max_outbound,
                            max_inbound=self.max_peers - self.max_outbound,
                            dial_scope=self.dial_scope)  # type: ignore[arg-type]


@dataclass
class ApiConfig:
    """Limits of the HTTP API, so that no client can make the node do unbounded work.

    Rates are token buckets per client address (an IPv6 client is its /64): one for requests,
    one for the bytes of the answers (so bulk answers cost a client what they cost the node),
    and a stricter one for transactions. The defaults leave room for what honest parties do (a
    peer polls ``/status`` once a second and fetches pages and updates now and then; a syncing
    node pulls pages of blocks far faster than a chain of full blocks grows; a testnet on one
    machine puts every node, the CLI and the tests behind 127.0.0.1) and hold a flood from one
    address to a few dozen requests a second; see ``docs/node.md``.
    """

    max_blocks_per_page: int = 100
    max_body: int = 1024 * 1024
    max_subscribers: int = 64
    max_response_bytes: int = 4 * 1024 * 1024  # one list answer (/blocks, /mempool, /fl/updates)
    requests_per_s: int = 50                    # per client: bucket refill
    request_burst: int = 200                    # per client: bucket size
    answer_bytes_per_s: int = 8 * 1024 * 1024   # per client: bytes of answers (and bucket size)
    txs_per_s: int = 20                         # POST /txs per client, on top of the above
    tx_burst: int = 100
    max_inflight_per_client: int = 32           # requests of one client being served at once
    max_inflight: int = 64                      # requests of all clients being served at once
    request_timeout_ms: int = 30_000            # to receive a request body, and to send an answer
    head_timeout_ms: int = 10_000               # to send a request head, from connecting or the last answer
    max_connections_per_client: int = 256       # TCP connections one address holds (gossip sessions too)
    max_connections: int = 512                  # TCP connections of all clients (see node/connections.py)

    def validate(self) -> None:
        if not 1 <= self.max_blocks_per_page <= 100:
            raise ConfigError(f"api.max_blocks_per_page must be between 1 and 100, got {self.max_blocks_per_page}")
        if self.max_body < 1024:
            raise ConfigError(f"api.max_body must be at least 1024 bytes, got {self.max_body}")
        if self.max_response_bytes < 64 * 1024:
            raise ConfigError(f"api.max_response_bytes must be at least 65536 bytes, got {self.max_response_bytes}")
        for name in ("max_subscribers", "requests_per_s", "request_burst", "answer_bytes_per_s", "txs_per_s",
                     "tx_burst", "max_inflight_per_client", "max_inflight", "request_timeout_ms",
                     "head_timeout_ms", "max_connections_per_client", "max_connections"):
            _check_positive(getattr(self, name), f"api.{name}")


CHECKPOINT_FORMAT = "HEIGHT:BLOCKHASH (a height of at least 1 and the 64 hex characters of the hash " \
                    "of the final block at that height)"


def parse_checkpoint(text: str, what: str = "sync.trusted_checkpoint") -> tuple[int, bytes]:
    """``"HEIGHT:BLOCKHASH"`` as ``(height, hash)``, or :class:`ConfigError` naming ``what``."""
    height, sep, block_hash = text.strip().partition(":")
    if not sep or not height.isascii() or not height.isdigit():
        raise ConfigError(f"{what} must be {CHECKPOINT_FORMAT}, got {text[:100]!r}")
    if int(height) < 1:
        raise ConfigError(f"{what}: the height must be at least 1, got {height}")
    block_hash = block_hash.lower()
    if len(block_hash) != 64 or not all(c in "0123456789abcdef" for c in block_hash):
        raise ConfigError(f"{what}: the block hash must be 64 hex characters, got {block_hash[:80]!r}")
    return int(height), bytes.fromhex(block_hash)


@dataclass
class SyncConfig:
    """What this node trusts when it syncs, beyond its genesis.

    ``trusted_checkpoint`` is a weak-subjectivity checkpoint, ``"HEIGHT:BLOCKHASH"``: a final
    block the operator learnt out of band (from nodes they trust). Sync refuses a chain whose
    block at HEIGHT has another hash, so a new node cannot be led onto a long-range fork by peers
    that hold old delegate keys. Empty: trust the genesis alone.
    """

    trusted_checkpoint: str = ""

    def validate(self) -> None:
        if self.trusted_checkpoint:
            height, block_hash = parse_checkpoint(self.trusted_checkpoint)
            self.trusted_checkpoint = f"{height}:{block_hash.hex()}"

    @property
    def checkpoint(self) -> tuple[int, bytes] | None:
        """``(height, block hash)`` of the trusted checkpoint, or None."""
        return parse_checkpoint(self.trusted_checkpoint) if self.trusted_checkpoint else None


@dataclass
class StorageConfig:
    """How much history this node keeps in its blob store (a local choice, not a protocol rule)."""

    model_retention: int = 64  # heights of past global models kept
    update_retention: int = 0  # heights of model updates kept; 0 keeps all, so new nodes can verify history

    def validate(self) -> None:
        _check_positive(self.model_retention, "storage.model_retention")
        if self.update_retention < 0:
            raise ConfigError(f"storage.update_retention must be >= 0, got {self.update_retention}")


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


@dataclass
class FaultConfig:
    """Evaluation-only misbehaviour, used to prove that misbehaviour is caught and punished, or
    coped with (the Byzantine delegate behaviours are in ``node.faults``).

    ``double_sign`` signs two blocks per own slot; ``withhold_votes`` never sends its own
    prevotes and precommits; ``lie_height`` makes ``/status`` claim a huge final height and
    ``/blocks`` serve nothing, slowly; ``flood_mempool`` keeps submitting valid fee-free
    transactions from the node's account; ``wrong_model`` proposes blocks with a wrong model
    hash; ``attack`` makes the node send poisoned updates (see ``learning.attacks``).
    """

    double_sign: bool = False
    withhold_votes: bool = False
    lie_height: bool = False
    flood_mempool: bool = False
    wrong_model: bool = False
    attack: str = ""

    def validate(self) -> None:
        from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS

        if self.attack and self.attack not in MODEL_ATTACKS + DATA_ATTACKS:
            raise ConfigError(f"fault.attack must be one of {', '.join(MODEL_ATTACKS + DATA_ATTACKS)}, "
                              f"got {self.attack!r}")

    @property
    def any_enabled(self) -> bool:
        return any(getattr(self, f.name) for f in dataclasses.fields(self))


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

