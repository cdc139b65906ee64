"""Commands that work on a node home: ``keys``, ``init``, ``join`` and ``node start``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Optional

import typer

from cli.common import CliError, HomeOpt, console, err_console, fields_table, handles_errors
from cli.progress import SyncProgress
from cli.query import fetch_genesis, genesis_summary
from consensus.genesis import Genesis, GenesisError, make_genesis
from gossip.crypto import KeyPair
from node.config import load_config, save_config
from node.config_checks import ConfigError, check_base_url
from node.config_network import DEFAULT_HOST, DEFAULT_PORT
from node.config_sync import parse_checkpoint
from node.home import HomePaths, init_home, load_genesis, load_home, load_key

keys_app = typer.Typer(help="Manage a node's Ed25519 key.", no_args_is_help=True)
node_app = typer.Typer(help="Run a node daemon.", no_args_is_help=True)

PortOpt = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="HTTP and gossip port.")
HostOpt = typer.Option(DEFAULT_HOST, "--host", help="Address to listen on.")
AdvertiseOpt = typer.Option("", "--advertise", help="Base URL peers reach this node at (default http://HOST:PORT).")
MonikerOpt = typer.Option(None, "--moniker", help="Human-readable node name (default: the home folder's name).")


@keys_app.command("new")
@handles_errors
def keys_new(home: Path = HomeOpt,
             force: bool = typer.Option(False, "--force", help="Replace an existing key (its identity is lost).")
             ) -> None:
    """Create a new key in HOME/node_key.json (mode 0600) and print its node id."""
    path = HomePaths(home).node_key
    if path.exists() and not force:
        raise CliError(f"{path} already exists (node id {load_key(path).node_id}); use --force to replace it")
    keypair = KeyPair.generate()
    keypair.save(path)
    console.print(keypair.node_id, highlight=False)


@keys_app.command("show")
@handles_errors
def keys_show(home: Path = HomeOpt) -> None:
    """Print the node id (hex public key) of the key in HOME."""
    console.print(load_key(HomePaths(home).node_key).node_id, highlight=False)


@handles_errors
def init(home: Path = HomeOpt,
         chain_id: str = typer.Option("fedchain-local", "--chain-id", help="Chain id of the new one-node chain."),
         port: int = PortOpt, host: str = HostOpt, advertise: str = AdvertiseOpt,
         moniker: str = MonikerOpt,
         slot_ms: int = typer.Option(2000, "--slot-ms", min=10, help="Slot time in milliseconds.")) -> None:
    """Create a home with config, key and a one-node genesis (this node the only delegate)."""
    paths = HomePaths(home)
    keypair = load_key(paths.node_key) if paths.node_key.exists() else KeyPair.generate()
    try:
        genesis = make_genesis(chain_id, [keypair.node_id], slot_ms=slot_ms,
                               genesis_time_ms=int(time.time() * 1000))
    except GenesisError as exc:
        raise CliError(str(exc)) from None
    created = init_home(home, genesis, port=port, host=host, advertised_url=advertise, keypair=keypair,
                        moniker=moniker)
    console.print(f"initialised {home} for chain [bold]{chain_id}[/]\n"
                  f"node id  {keypair.node_id}\nlisten   {created.config.network.url}", highlight=False)


def _hash_option(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    if len(value) != 64 or not all(c in "0123456789abcdef" for c in value):
        raise CliError(f"--genesis-hash must be 64 hex characters (the SHA-256 genesis hash), got {value[:80]!r}")
    return value


def trust_genesis(base: str, genesis: Genesis, pin: str | None, trust: bool) -> None:
    """Accept the genesis ``base`` served only if it has the pinned hash, or if the operator said
    to trust it (then show what is being trusted). Anyone who can answer for ``base`` (or sits
    on a plain-HTTP path to it) chooses that genesis, so taking it unchecked would let them put
    the new node on a chain of their own."""
    served = genesis.hash.hex()
    if pin is not None:
        if served != pin:
            raise CliError(f"{base} served a genesis whose hash is {served}, not the expected {pin}; "
                           "refusing to join (another chain, or the genesis was altered on the way)")
        return
    if not trust:
        raise CliError(f"refusing to join: nothing says the genesis served by {base} is the right one "
                       f"(chain {genesis.chain_id}, genesis hash {served}). Ask the chain's operators for its "
                       "genesis hash (`fedchain genesis --node URL` on a node you trust) and pass "
                       "--genesis-hash HASH, or pass --trust-genesis to accept this one as it is")
    console.print(fields_table(f"trusting the genesis served by {base}", genesis_summary(genesis)))
    if base.startswith("http://"):
        console.print("[yellow]it came over plain HTTP: anyone on the way could have altered it; compare "
                      "the genesis hash with the one the chain's operators publish[/]", highlight=False)


@handles_errors
def join(url: str = typer.Argument(..., help="Base URL of any node of the chain, e.g. http://127.0.0.1:26657."),
         home: Path = HomeOpt, port: int = PortOpt, host: str = HostOpt, advertise: str = AdvertiseOpt,
         moniker: str = MonikerOpt,
         genesis_hash: Optional[str] = typer.Option(
             None, "--genesis-hash", help="Expected genesis hash (hex); a genesis with another hash is refused."),
         trust: bool = typer.Option(False, "--trust-genesis",
                                    help="Accept the served genesis without --genesis-hash (it is shown first)."),
         checkpoint: Optional[str] = typer.Option(
             None, "--checkpoint", help="Weak-subjectivity checkpoint HEIGHT:BLOCKHASH, a final block learnt out "
                                        "of band; written to config.toml [sync] trusted_checkpoint."),
         no_start: bool = typer.Option(False, "--no-start", help="Only create the home; do not start the node."),
         data: Optional[Path] = typer.Option(None, "--data", exists=True, resolve_path=True,
                                             help="This device's own training data (file, or folder for "
                                                  "imagefolder); written to config.toml [data] and checked "
                                                  "against the chain's task before the node starts."),
         data_format: str = typer.Option("csv", "--format", help="Format of --data: csv, npz, idx or imagefolder."),
         label_column: str = typer.Option("label", "--label-column", help="csv: the column holding the class."),
         labels: Optional[Path] = typer.Option(None, "--labels", exists=True, resolve_path=True,
                                               help="idx: the labels file (--data is the images file)."),
         ) -> None:
    """Make a home for the chain served at URL (bootstrapped to it), then start the node; it syncs from peers
    while a progress bar shows blocks and time left.

    The genesis is accepted only if its hash is --genesis-hash (or, for a home that already has
    one, the same genesis), or with --trust-genesis.
    """
    base = check_base_url(url, "URL")
    pin = _hash_option(genesis_hash)
    if checkpoint is not None:
        height, block_hash = parse_checkpoint(checkpoint, "--checkpoint")
        checkpoint = f"{height}:{block_hash.hex()}"
    genesis = fetch_genesis(base)
    paths = HomePaths(home)
    if paths.genesis.exists():
        mine = load_genesis(paths.genesis)
        if pin is not None and pin != mine.hash.hex():
            raise CliError(f"{home} already holds genesis {mine.hash.hex()}, not --genesis-hash {pin}")
        if mine.hash != genesis.hash:
            raise CliError(f"{home} already belongs to chain {mine.chain_id} (genesis {mine.hash.hex()}), but {base} "
                           f"serves genesis {genesis.hash.hex()}")
        if checkpoint is not None:
            config = load_config(paths.config)
            config.sync.trusted_checkpoint = checkpoint
            save_config(config, paths.config)
        console.print(f"{home} already joined {genesis.chain_id}", highlight=False)
    else:
        trust_genesis(base, genesis, pin, trust)
        created = init_home(home, genesis, port=port, host=host, advertised_url=advertise, bootstrap=[base],
                            moniker=moniker, trusted_checkpoint=checkpoint or "")
        console.print(f"joined chain [bold]{genesis.chain_id}[/] (genesis {genesis.hash.hex()}) via {base}\n"
                      f"node id  {created.keypair.node_id}\nlisten   {created.config.network.url}", highlight=False)
    if data is not None:
        use_own_data(home, data, data_format, label_column, labels, base)
    if not no_start:
        progress = SyncProgress(local_url(home), base, err_console)
        progress.start()
        try:
            start_daemon(home)
        finally:
            progress.stop()


def use_own_data(home: Path, data: Path, data_format: str, label_column: str, labels: Path | None,
                 base: str) -> None:
    """Name ``data`` in the home's ``[data]``, check it against the chain's task (a misfit is an
    error here, before the node starts), and say how the node becomes a training member."""
    from cli.data import checked_data

    paths = HomePaths(home)
    config = load_config(paths.config)
    config.data.source, config.data.format = str(data), data_format
    config.data.label_column, config.data.labels = label_column, str(labels) if labels else ""
    try:
        save_config(config, paths.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    rows, samples = checked_data(home)
    console.print(fields_table("your data fits the chain's task", rows))
    node_id = load_key(paths.node_key).node_id
    console.print(f"to train, this node must be a registered member; the chain's admin admits it with\n"
                  f"  fedchain tx register {node_id} --samples {samples} --node {base}\n"
                  "until then it follows and verifies the chain", highlight=False)


def local_url(home: Path) -> str:
    """Where this machine reaches the node of ``home`` (its listen address; loopback for a wildcard)."""
    net = load_config(HomePaths(home).config).network
    host = "127.0.0.1" if net.host in ("0.0.0.0", "") else "[::1]" if net.host == "::" else net.host
    return f"http://{host}:{net.port}"


def start_daemon(home: Path) -> None:
    """Run the daemon in this process until SIGTERM/SIGINT, on uvloop."""
    import uvloop

    from node.daemon import run

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    run(home)


@node_app.command("start")
@handles_errors
def node_start(home: Path = HomeOpt) -> None:
    """Start the node daemon of HOME and serve until SIGTERM or Ctrl-C."""
    load_home(home)  # every home problem is reported here, before the daemon's heavier imports
    start_daemon(home)
