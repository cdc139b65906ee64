"""``fedchain data check`` and the data files of a local testnet.

``check`` reads a home's ``[data]`` section and its genesis task and reports what the node would
train on (samples, class histogram, shape) without starting it. :func:`write_testnet_data` gives
every testnet node its own file, cut from a data set with the genesis partition scheme, and makes
the public evaluation set the task pins by hash: each daemon then reads only its own file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import typer

from cli.common import CliError, HomeOpt, console, fields_table, handles_errors

data_app = typer.Typer(help="A node's own training data.", no_args_is_help=True)
DATASETS = ("digits", "fashion_mnist", "synthetic")
FILE_FORMATS = ("npz", "csv")
PRESET_MODELS = {"digits": "tabular_mlp", "fashion_mnist": "cnn", "synthetic": "tabular_mlp"}
"""The model each data set's preset trains: a small MLP for tables, the CNN for Fashion-MNIST images."""
PRESET_SETTINGS: dict[str, dict] = {
    "fashion_mnist": {"local_epochs": 1, "clip_norm": 5.0},
}
"""Genesis FL settings a data set's preset changes from the product defaults, which are sized for
the 4,810-parameter MLP that trains in well under a slot. The CNN has 206,922 parameters: its
deltas are longer, so the clip grows with them; and one local epoch, because four on a shard of
7,000 images take a device minutes per update. See docs/decisions.md."""
DEFAULT_SLOT_MS = 2000
PRESET_SLOT_MS = {"fashion_mnist": 30_000}
"""Slot times a data set's preset needs. A CNN round (the robust rule on 207k-parameter updates,
candidate models scored on the public set) took 1 to 2.5 s on a busy 2-core machine, more than
the half slot a proposal has to be run and re-run by verifiers at 2 s; and one local epoch takes
such a device about half a minute, so a 30 s slot lets each block average about one update from
every device (with 10 s slots each block applied one device's update alone, and the accuracy of
the non-IID federation swung by up to 10 points from block to block)."""



@dataclass
class TestnetData:
    """What a testnet's genesis task and each node's ``[data]`` are made from."""

    task: dict                    # genesis app.task
    eval_blob: bytes              # the public evaluation set, content-addressed
    shards: list                  # one learning.data.Dataset per node to write into its home, or
    files: list[Path] | None = None   # one file per node that stays where it is (its owner's own data)

    def place(self, i: int, data_dir: Path, file_format: str) -> tuple[str, str]:
        """Node ``i``'s ``[data]`` (source, format): its own file, or its shard written into its home."""
        if self.files is not None:
            return str(self.files[i]), "csv"
        return write_shard(self.shards[i], data_dir, file_format)


def slot_ms_for(dataset: str | None) -> int:
    """The slot time of a testnet whose nodes train on ``dataset`` (None: no data set)."""
    return PRESET_SLOT_MS.get(dataset or "", DEFAULT_SLOT_MS)


def preset_settings(dataset: str, app_state: dict) -> dict:
    """The genesis ``app`` section of ``dataset``'s preset: ``app_state`` with the settings the
    preset changes."""
    return {**app_state, **PRESET_SETTINGS.get(dataset, {})}


def make_testnet_data(dataset: str, n: int, app_state: dict) -> TestnetData:
    """Cut ``dataset`` into a public evaluation set and ``n`` node shards (the genesis FL settings
    give the partition scheme, its alpha, the seed and the evaluation set's size)."""
    import dataclasses

    from gossip.crypto import sha256
    from learning.datasets import evalset
    from learning.federation import split
    from node.fl.settings import FLSettings

    if dataset not in DATASETS:
        raise CliError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    settings = FLSettings.from_app_state({**app_state, "dataset": dataset})
    try:  # the simulator's split; whole shards (each node keeps its validation split itself)
        fed = split(dataclasses.replace(settings, val_fraction=0.0), n)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    pool, eval_set = fed.pool, fed.public_eval
    shards = [fed.shard(i) for i in range(n)]
    blob = evalset.encode(eval_set)
    task = {"model": PRESET_MODELS[dataset], "input_shape": list(pool.input_shape), "num_classes": pool.num_classes,
            "eval_set_sha256": sha256(blob).hex(), "eval_set_samples": len(eval_set),
            "min_samples": max(1, min(10, *(len(s) for s in shards)))}
    return TestnetData(task, blob, shards)


def own_testnet_data(folder: Path, n: int, label_column: str = "label") -> TestnetData:
    """A testnet on CSV files the operator already has: ``FOLDER/node{i}.csv`` for each node and
    ``FOLDER/eval.csv``, the public evaluation set. The task (a small MLP, one input per feature
    column) is read off the evaluation set; each node's file is checked against it here and read
    in place by its node only."""
    from gossip.crypto import sha256
    from learning.datasets import evalset
    from learning.datasets.checks import DataSpec, check
    from learning.datasets.formats import DataError, DataSource, read

    files = [folder / f"node{i}.csv" for i in range(n)]
    try:
        x, y = read(DataSource(folder / "eval.csv", "csv", label_column))
        if not len(y):
            raise DataError(f"{folder / 'eval.csv'}: no samples")
        spec = DataSpec((x.shape[1],), int(np.nanmax(y)) + 1 if np.isfinite(y).all() else 2, 1)
        eval_set = check(x, y, spec, str(folder / "eval.csv"))
        sizes = [len(check(*read(DataSource(f, "csv", label_column)), spec, str(f))) for f in files]
    except DataError as exc:
        raise CliError(str(exc)) from None
    blob = evalset.encode(eval_set)
    task = {"model": "tabular_mlp", "input_shape": [x.shape[1]], "num_classes": spec.num_classes,
            "eval_set_sha256": sha256(blob).hex(), "eval_set_samples": len(eval_set), "min_samples": min(10, *sizes)}
    return TestnetData(task, blob, [], [f.resolve() for f in files])


def write_shard(shard, folder: Path, file_format: str) -> tuple[str, str]:
    """Write one node's data file; returns its ``[data]`` (source, format), relative to the home."""
    folder.mkdir(parents=True, exist_ok=True)
    if file_format == "npz":
        x = shard.x.reshape(len(shard), *shard.input_shape)
        as_bytes = np.round(x * 255).astype(np.uint8)
        if np.array_equal(as_bytes.astype(np.float32) / 255, x):   # 8-bit images: a quarter of the size
            x = as_bytes
        np.savez(folder / "train.npz", x=x, y=shard.y)
        return "data/train.npz", "npz"
    header = ",".join([*(f"f{j}" for j in range(shard.x.shape[1])), "label"])
    table = np.column_stack([shard.x, shard.y])
    fmt = ["%.7g"] * shard.x.shape[1] + ["%d"]
    np.savetxt(folder / "train.csv", table, delimiter=",", header=header, comments="", fmt=fmt)
    return "data/train.csv", "csv"


OutOpt = typer.Option(..., "--out", file_okay=False, resolve_path=True, help="Folder to write.")


@data_app.command("example")
@handles_errors
def example(out: Path = OutOpt,
            nodes: int = typer.Option(3, "--nodes", min=1, max=64, help="Devices (one CSV file each)."),
            seed: int = typer.Option(0, "--seed")) -> None:
    """Write synthetic network-flow CSV files for the intrusion-detection example: node0.csv ..
    (each device's own records), eval.csv (the public evaluation set) and test.csv (held out)."""
    from learning.datasets.flows import device_split, flows, write_csv

    train, test = flows(seed=seed)
    order = np.random.default_rng(seed).permutation(len(train))
    n_eval = len(train) // 10
    public, rest = train.subset(np.sort(order[:n_eval])), train.subset(np.sort(order[n_eval:]))
    out.mkdir(parents=True, exist_ok=True)
    write_csv(public, str(out / "eval.csv"))
    write_csv(test, str(out / "test.csv"))
    for i, idx in enumerate(device_split(rest, nodes, seed)):
        write_csv(rest.subset(idx), str(out / f"node{i}.csv"))
    console.print(f"wrote {nodes} device files, eval.csv ({len(public)} records) and test.csv ({len(test)}) "
                  f"to {out}", highlight=False)


def checked_data(home: Path) -> tuple[list[tuple[str, object]], int]:
    """HOME's ``[data]`` checked against its genesis task: the rows ``data check`` shows and the
    number of samples the node would train on (what it may declare when it registers)."""
    from learning.datasets.checks import summary
    from learning.datasets.formats import DataError
    from node.fl.localdata import data_source, load_local
    from node.fl.task import Task
    from node.home import load_home

    h = load_home(home)
    task_raw = h.genesis.app.get("task")
    if h.genesis.app.get("kind") != "fl" or not task_raw:
        raise CliError(f"the genesis of {home} names no FL task: its nodes train on the built-in data set")
    task = Task.from_dict(task_raw)
    if not h.config.data.source:
        raise CliError(f"{h.paths.config} has no [data] source: this node would not train. Set source and format")
    try:
        ds = load_local(task, h.config.data, h.paths.root)
    except DataError as exc:
        raise CliError(f"{exc}. The node would not start with this data") from None
    info = summary(ds)
    settings = h.genesis.app
    trains_on = info["samples"] - int(settings.get("val_fraction", 0.1) * info["samples"])
    rows = [("source", data_source(h.config.data, h.paths.root).path), ("format", h.config.data.format),
            ("samples", info["samples"]), ("trains on", f"{trains_on} (the rest is its own validation split)"),
            ("input shape", info["input_shape"]),
            ("classes", " ".join(f"{c}:{k}" for c, k in enumerate(info["classes"]))),
            ("task", f"{task.model}, {task.num_classes} classes, at least {task.min_samples} samples")]
    return rows, trains_on


@data_app.command("check")
@handles_errors
def check(home: Path = HomeOpt) -> None:
    """Check HOME's [data] against the chain's task and show what the node would train on, without starting it."""
    rows, _ = checked_data(home)
    console.print(fields_table("data fits the task", rows))
