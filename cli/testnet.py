"""``fedchain testnet create|up``: a local chain of N nodes in one folder.

``create`` writes one genesis in which every node has an account with stake and is a registered
member, and N homes ``node0 .. node{N-1}``, each listening on its own port and bootstrapped to
every other node. ``up`` starts one daemon process per home (see ``cli/supervisor.py``).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import typer

from cli.common import CliError, console, handles_errors, json_assignments
from cli.data import (
    DATASETS,
    FILE_FORMATS,
    make_testnet_data,
    own_testnet_data,
    preset_settings,
    slot_ms_for,
)
from consensus.genesis import GenesisError, make_genesis
from gossip.crypto import KeyPair
from gossip.netpolicy import address_class, host_of, parse_ip
from node.config import save_config
from node.config_checks import check_base_url
from node.config_network import DEFAULT_HOST, DEFAULT_PORT
from node.home import Home, HomePaths, init_home

testnet_app = typer.Typer(help="Create and run a local multi-node testnet.", no_args_is_help=True)

MAX_NODES = 64
APPS = ("fl", "counter")
AppOpt = typer.Option("fl", "--app", help="Application: fl (federated learning) or counter.")
DatasetOpt = typer.Option("digits", "--dataset", help=f"fl: data set cut into one file per node ({', '.join(DATASETS)}).")
DataFormatOpt = typer.Option("npz", "--data-format", help="fl: format of each node's data file (npz or csv).")
OwnDataOpt = typer.Option(None, "--own-data", file_okay=False, exists=True, resolve_path=True,
                          help="fl: a folder of your own CSV files, node0.csv .. node{N-1}.csv (one per node, "
                               "read in place) and eval.csv (the public evaluation set), instead of --dataset.")
SlotOpt = typer.Option(None, "--slot-ms", min=10,
                       help="Slot time in milliseconds (default 2000; 30000 with --dataset fashion_mnist, whose "
                            "CNN updates take a device about half a minute).")
LabelOpt = typer.Option("label", "--label-column", help="fl with --own-data: the CSV column holding the class.")


def app_state(app: str, privacy: str | None = None) -> dict:
    """The genesis ``app`` section for an application name; ``privacy`` (JSON, fl only) is the
    genesis privacy preset (:mod:`learning.privacy_preset`), checked here with a clear error."""
    if app == "counter":
        if privacy:
            raise CliError("--privacy applies to the fl application only")
        return {"kind": "counter"}
    from node.fl.settings import FLSettings

    state = FLSettings().to_app_state()
    if privacy:
        try:
            state["privacy"] = json.loads(privacy)
            FLSettings.from_app_state(state)
        except ValueError as exc:  # json.JSONDecodeError and SettingsError are ValueErrors
            kind = "is not JSON" if isinstance(exc, json.JSONDecodeError) else "is refused"
            raise CliError(f"--privacy {kind}: {exc}") from None
    return state


def with_settings(state: dict, settings: dict[str, Any]) -> dict:
    """The genesis ``app`` section with ``--set``'s FL settings over it (and over the data set's
    preset), checked as every node will read it: a chain no node could run is never written."""
    if not settings:
        return state
    if state.get("kind") != "fl":
        raise CliError("--set applies to the fl application only")
    from node.fl.settings import FLSettings

    out = {**state, **settings}
    try:
        FLSettings.from_app_state(out)
    except ValueError as exc:   # SettingsError
        raise CliError(f"--set is refused: {exc}") from None
    return out


SetOpt = typer.Option(None, "--set", metavar="KEY=VALUE",
                      help='fl: a genesis FL setting, VALUE in JSON, over the data set\'s preset (repeatable), e.g. '
                           '--set standing=true --set \'rule_params={"feature_clip": 1.0}\' (docs/fl.md).')
PrivacyOpt = typer.Option(None, "--privacy", help='fl: the genesis privacy preset as JSON, e.g. '
                          '\'{"preset": "local-dp", "epsilon": 8}\' (default: {"preset": "off"}, no formal privacy).')
DirOpt = typer.Option(Path("testnet"), "--dir", help="Folder holding the node homes.", file_okay=False,
                      resolve_path=True)
BasePortOpt = typer.Option(DEFAULT_PORT, "--base-port", min=1, max=65535, help="Port of node0; node i uses base+i.")
CountArg = typer.Argument(..., min=1, max=MAX_NODES, help="Number of nodes.")


def node_homes(folder: Path) -> list[Path]:
    """The homes of a testnet folder, in node order (node0, node1, ...)."""
    homes = [p for p in folder.glob("node*") if p.is_dir() and p.name[4:].isdigit()]
    return sorted(homes, key=lambda p: int(p.name[4:]))


def create_testnet(folder: Path, n: int, *, base_port: int = DEFAULT_PORT, chain_id: str = "fedchain-local",
                   slot_ms: int | None = None, host: str = DEFAULT_HOST, advertise_host: str = DEFAULT_HOST,
                   genesis_time_ms: int | None = None, app: str = "fl", one_port: bool = False,
                   dataset: str = "digits", data_format: str = "npz", own_data: Path | None = None,
                   label_column: str = "label", privacy: str | None = None,
                   settings: dict[str, Any] | None = None) -> list[Home]:
    """Write the genesis and N homes; refuses a folder that already holds a testnet.

    ``advertise_host`` is a template formatted with ``i`` (e.g. ``node{i}`` for containers that
    reach each other by service name); by default every node is on 127.0.0.1. ``app`` is ``fl``
    (federated learning on the embedded digits set, with the default FL settings) or ``counter``
    (the built-in minimal application, for exercising the chain alone). Node i listens on
    ``base_port + i``, or on ``base_port`` with ``one_port`` (each on its own host, as in pods).

    For ``fl``, ``dataset`` is cut into one file per node (``node{i}/data/train.{data_format}``,
    named in that node's ``[data]``) and a public evaluation set that the genesis task pins by
    hash and every home's blob store holds, with the data set's preset settings and slot time
    (``slot_ms`` None: the preset's, see :func:`cli.data.slot_ms_for`). ``own_data`` instead names
    a folder of CSV files, ``node{i}.csv`` per node and ``eval.csv`` (see
    :func:`cli.data.own_testnet_data`). ``privacy`` is the genesis privacy preset as JSON
    (default: off); ``settings`` are FL settings written over the preset (``--set``).
    """
    if app not in APPS:
        raise CliError(f"--app must be one of {', '.join(APPS)}, got {app!r}")
    if data_format not in FILE_FORMATS:
        raise CliError(f"--data-format must be one of {', '.join(FILE_FORMATS)}, got {data_format!r}")
    ports = [base_port if one_port else base_port + i for i in range(n)]
    if ports[-1] > 65535:
        raise CliError(f"ports {base_port}..{ports[-1]} do not fit below 65536")
    if node_homes(folder):
        raise CliError(f"{folder} already holds a testnet; remove it or choose another --dir")
    urls = [check_base_url(f"http://{advertise_host.format(i=i)}:{ports[i]}", "node URL") for i in range(n)]
    keys = [KeyPair.generate() for _ in range(n)]
    state = app_state(app, privacy)
    if app == "fl" and own_data is None:
        state = preset_settings(dataset, state)
    state = with_settings(state, settings or {})
    data = None
    if app == "fl" and own_data is not None:
        data = own_testnet_data(own_data, n, label_column)
    elif app == "fl":
        data = make_testnet_data(dataset, n, state)
    if data is not None:
        state["task"] = data.task
    try:
        slot = slot_ms or slot_ms_for(dataset if app == "fl" and own_data is None else None)
        genesis = make_genesis(chain_id, [k.node_id for k in keys], slot_ms=slot, app=state,
                               genesis_time_ms=int(time.time() * 1000) if genesis_time_ms is None else genesis_time_ms)
    except GenesisError as exc:
        raise CliError(str(exc)) from None
    homes = []
    scope = dial_scope(urls)
    for i, key in enumerate(keys):
        advertised = urls[i] if advertise_host != host else ""
        home = init_home(folder / f"node{i}", genesis, port=ports[i], host=host, keypair=key,
                         bootstrap=[u for j, u in enumerate(urls) if j != i], moniker=f"node{i}",
                         advertised_url=advertised)
        home.config.network.dial_scope = scope
        if data is not None:
            home.config.data.source, home.config.data.format = data.place(i, home.paths.data, data_format)
            home.config.data.label_column = label_column
            publish_eval_set(home, data.eval_blob)
        save_config(home.config, home.paths.config)
        homes.append(home)
    return homes


def publish_eval_set(home: Home, blob: bytes) -> None:
    """Put the public evaluation set in ``home``'s blob store, from which its node serves it to peers."""
    from node.fl.blobs import BlobStore

    store = BlobStore(home.paths.data / "blobs.sqlite")
    try:
        store.put("evalset", blob, 0)
    finally:
        store.close()


def published_eval_set(home: Home, digest: bytes) -> bytes:
    """The evaluation set :func:`publish_eval_set` put in ``home``'s blob store."""
    from node.fl.blobs import BlobStore

    store = BlobStore(home.paths.data / "blobs.sqlite")
    try:
        blob = store.get(digest, "evalset")
    finally:
        store.close()
    if blob is None:
        raise CliError(f"{home.paths.root} holds no evaluation set {digest.hex()[:12]}")
    return blob


def create_k8s_overlay(out: Path, n: int, *, chain_id: str, slot_ms: int | None, app: str, dataset: str,
                       base: str | None, privacy: str | None = None, settings: dict[str, Any] | None = None) -> None:
    """The Kubernetes overlay of a new N-node testnet (``cli/k8s.py``): its homes are made here,
    as for a local testnet, in a private temporary folder, then turned into a ConfigMap and
    Secrets. Each node's ``[data]`` then names the files on its pod's own data volume: its shard
    and the public evaluation set, which the overlay carries for the init container to put there."""
    from cli import k8s
    from node.fl.task import Task

    with tempfile.TemporaryDirectory(prefix="fedchain-k8s-") as tmp:  # mode 0700: the keys stay private
        homes = create_testnet(Path(tmp), n, base_port=k8s.PORT, one_port=True, chain_id=chain_id, slot_ms=slot_ms,
                               host="0.0.0.0", advertise_host=k8s.advertise_template(), app=app, dataset=dataset,
                               privacy=privacy, settings=settings)
        shards, eval_set = [], None
        if app == "fl":
            task = Task.from_dict(homes[0].genesis.app["task"])
            eval_set = published_eval_set(homes[0], task.eval_hash)
            for home in homes:
                shards.append((home.paths.root / home.config.data.source).read_bytes())
                home.config.data.source = f"{k8s.DATA_DIR}/{k8s.TRAIN_FILE}"
                home.config.data.eval_set = f"{k8s.DATA_DIR}/{k8s.EVAL_SET_FILE}"
                save_config(home.config, home.paths.config)
        k8s.write_overlay(out, Path(tmp), n, homes[0].genesis.max_delegates, base, shards=shards, eval_set=eval_set)


def dial_scope(urls: list[str]) -> str:
    """The narrowest dial scope that lets testnet nodes dial each other's URLs when they learn
    them from one another: ``local`` on one host (127.0.0.1), else ``private`` (a LAN or a
    container network, whose names resolve to private addresses)."""
    hosts = [host_of(u) for u in urls]
    if all(h == "localhost" or ((ip := parse_ip(h)) is not None and address_class(ip) == "local")
           for h in hosts):
        return "local"
    return "private"


@testnet_app.command("create")
@handles_errors
def create(n: int = CountArg, folder: Path = DirOpt, base_port: int = BasePortOpt,
           chain_id: str = typer.Option("fedchain-local", "--chain-id", help="Chain id."),
           slot_ms: Optional[int] = SlotOpt,
           host: str = typer.Option(DEFAULT_HOST, "--host", help="Address every node listens on."),
           advertise_host: str = typer.Option(DEFAULT_HOST, "--advertise-host",
                                              help="Host peers dial, a template with {i} (e.g. node{i})."),
           exist_ok: bool = typer.Option(False, "--exist-ok",
                                         help="Succeed without changes if DIR already holds an N-node testnet."),
           app: str = AppOpt, dataset: str = DatasetOpt, data_format: str = DataFormatOpt,
           own_data: Optional[Path] = OwnDataOpt, label_column: str = LabelOpt,
           privacy: Optional[str] = PrivacyOpt, set_: Optional[list[str]] = SetOpt,
           k8s: Optional[Path] = typer.Option(
               None, "--k8s", file_okay=False, resolve_path=True,
               help="Instead of homes, write a Kustomize overlay to this folder: the genesis, node configs and "
                    "keys as a ConfigMap and a Secret for the StatefulSet of deploy/k8s/base."),
           k8s_base: Optional[str] = typer.Option(
               None, "--k8s-base", help="The base the overlay builds on (default: this checkout's deploy/k8s/base)."),
           ) -> None:
    """Create a genesis with N staked members and N node homes in DIR (or, with --k8s, a Kubernetes overlay)."""
    settings = json_assignments(set_ or [], "--set")
    if k8s is not None:
        create_k8s_overlay(k8s, n, chain_id=chain_id, slot_ms=slot_ms, app=app, dataset=dataset, base=k8s_base,
                           privacy=privacy, settings=settings)
        console.print(f"wrote a {n}-node Kubernetes overlay for [bold]{chain_id}[/] to {k8s} "
                      f"(apply with `kubectl apply -k {k8s}`; testnet.yaml holds the node keys)", highlight=False)
        return
    existing = node_homes(folder)
    if exist_ok and existing:
        if len(existing) != n:
            raise CliError(f"{folder} holds a {len(existing)}-node testnet, not {n}")
        console.print(f"{folder} already holds a {n}-node testnet; nothing to do", highlight=False)
        return
    homes = create_testnet(folder, n, base_port=base_port, chain_id=chain_id, slot_ms=slot_ms, host=host,
                           advertise_host=advertise_host, app=app, dataset=dataset, data_format=data_format,
                           own_data=own_data, label_column=label_column, privacy=privacy, settings=settings)
    console.print(f"created {n}-node testnet [bold]{chain_id}[/] in {folder}", highlight=False)
    for home in homes:
        console.print(f"  {home.paths.root.name:>7}  {home.config.network.url}  {home.keypair.node_id}", highlight=False)


@testnet_app.command("up")
@handles_errors
def up(n: int = CountArg, folder: Path = DirOpt, base_port: int = BasePortOpt,
       slot_ms: Optional[int] = SlotOpt,
       duration: float = typer.Option(0.0, "--duration", min=0.0,
                                      help="Stop after this many seconds (0: run until Ctrl-C or SIGTERM)."),
       app: str = AppOpt, dataset: str = DatasetOpt,
       ) -> None:
    """Start N daemons (creating the testnet first if DIR has none) and show their progress live."""
    from cli.supervisor import Supervisor

    homes = node_homes(folder)
    if not homes:
        create_testnet(folder, n, base_port=base_port, slot_ms=slot_ms, app=app, dataset=dataset)
        homes = node_homes(folder)
        console.print(f"created {n}-node testnet in {folder}", highlight=False)
    elif len(homes) != n:
        raise CliError(f"{folder} holds a {len(homes)}-node testnet, not {n}; use N={len(homes)} or another --dir")
    Supervisor([HomePaths(h) for h in homes]).run(duration or None)
