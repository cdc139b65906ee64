"""A node's home folder: its config, the chain's genesis, its key, its data and its logs.

Layout (see ``docs/node.md``)::

    HOME/config.toml        node settings (node/config.py)
    HOME/genesis.json       the chain's genesis, identical on every node of the chain
    HOME/node_key.json      Ed25519 key, mode 0600
    HOME/data/chain.sqlite  blocks, commits, state (consensus/store.py)
    HOME/data/blobs/        content-addressed model blobs
    HOME/logs/node.log      daemon log

Loading checks everything up front and turns each problem into a :class:`ConfigError` whose
message tells the operator what to do, so that ``fedchain node start`` fails with one clear line
instead of a traceback from deep inside the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from consensus.genesis import Genesis, GenesisError
from gossip.crypto import KeyPair
from node.config import NodeConfig, load_config, save_config
from node.config_checks import ConfigError
from node.config_network import DEFAULT_HOST, DEFAULT_PORT


@dataclass(frozen=True)
class HomePaths:
    """Where each file of a home folder lives; the one place that knows the layout."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def genesis(self) -> Path:
        return self.root / "genesis.json"

    @property
    def node_key(self) -> Path:
        return self.root / "node_key.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def chain_db(self) -> Path:
        return self.data / "chain.sqlite"

    @property
    def blobs(self) -> Path:
        return self.data / "blobs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs / "node.log"

    def make_dirs(self) -> None:
        for folder in (self.root, self.data, self.blobs, self.logs):
            folder.mkdir(parents=True, exist_ok=True)


@dataclass
class Home:
    """A loaded, checked home folder: everything the daemon needs to start."""

    paths: HomePaths
    config: NodeConfig
    genesis: Genesis
    keypair: KeyPair


def load_key(path: Path) -> KeyPair:
    """Load a node key, turning every failure (missing, readable by others, corrupt) into ConfigError."""
    try:
        return KeyPair.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; create it with `fedchain keys new --home {path.parent}`") from None
    except PermissionError as exc:
        raise ConfigError(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot use key {path}: {exc}") from None


def load_genesis(path: Path) -> Genesis:
    """Load and validate a genesis file, turning every failure into ConfigError."""
    if not path.is_file():
        raise ConfigError(f"{path} not found; a node needs its chain's genesis.json "
                          "(`fedchain init` or `fedchain join URL` writes it)")
    try:
        return Genesis.load(path)
    except GenesisError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_home(home: Path) -> Home:
    """Load and check a home folder; creates ``data/`` and ``logs/`` if they are missing."""
    paths = HomePaths(Path(home))
    if not paths.root.is_dir():
        raise ConfigError(f"home folder {paths.root} does not exist; create it with `fedchain init --home {home}`")
    config = load_config(paths.config)
    genesis = load_genesis(paths.genesis)
    keypair = load_key(paths.node_key)
    try:
        paths.make_dirs()
    except OSError as exc:
        raise ConfigError(f"cannot create folders in {paths.root}: {exc}") from None
    return Home(paths, config, genesis, keypair)


def init_home(
    home: Path,
    genesis: Genesis,
    *,
    port: int = DEFAULT_PORT,
    bootstrap: Iterable[str] = (),
    keypair: KeyPair | None = None,
    moniker: str | None = None,
    host: str = DEFAULT_HOST,
    advertised_url: str = "",
    trusted_checkpoint: str = "",
) -> Home:
    """Create a home folder for ``genesis``.

    Refuses to overwrite a config or genesis already there (that would silently move a node to
    another chain). An existing key is kept when no ``keypair`` is given, so ``fedchain keys new``
    followed by ``fedchain init`` keeps the identity the operator already shared.
    """
    paths = HomePaths(Path(home))
    for existing in (paths.config, paths.genesis):
        if existing.exists():
            raise ConfigError(f"{existing} already exists; {paths.root} is already a node home")
    config = NodeConfig(moniker=moniker or paths.root.name or "node")
    config.network.host = host
    config.network.port = port
    config.network.advertised_url = advertised_url
    config.network.bootstrap = list(bootstrap)
    config.sync.trusted_checkpoint = trusted_checkpoint
    config.validate()
    try:
        genesis.validate()
    except GenesisError as exc:
        raise ConfigError(str(exc)) from None
    if keypair is None:
        keypair = load_key(paths.node_key) if paths.node_key.exists() else KeyPair.generate()
    elif paths.node_key.exists() and load_key(paths.node_key).node_id != keypair.node_id:
        raise ConfigError(f"{paths.node_key} already holds a different key")
    paths.make_dirs()
    keypair.save(paths.node_key)
    genesis.save(paths.genesis)
    save_config(config, paths.config)
    return Home(paths, config, genesis, keypair)

