"""What a node trains on when the genesis names a task: its own files, and the shared evaluation set.

The device's data comes from the ``[data]`` section of its own ``config.toml`` and is checked
against the task before anything else starts (:func:`load_local`); the node keeps a validation
split of it to itself. The public evaluation set is the one thing every node shares: it is a
blob the task names by hash, read from the local blob store or fetched from peers
(:mod:`node.fl.service`) and checked against that hash before it is used (:func:`parse_eval_set`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from gossip.crypto import sha256
from learning.data import Dataset
from learning.datasets import evalset
from learning.datasets.checks import check
from learning.datasets.formats import DataError, DataSource, read
from node.config_data import DataConfig
from node.fl.data import NodeData
from node.fl.task import Task

log = logging.getLogger("fedchain.fl")


def home_path(path: str, home: Path) -> Path:
    """A path of a home's config: absolute, or taken from ``home``."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else home / p


def data_source(config: DataConfig, home: Path) -> DataSource:
    """The ``[data]`` section as a :class:`DataSource`, relative paths taken from ``home``."""
    return DataSource(home_path(config.source, home), config.format, config.label_column,
                      home_path(config.labels, home) if config.labels else None, config.x_key, config.y_key)


def load_local(task: Task, config: DataConfig, home: Path) -> Dataset:
    """This device's training data, checked against ``task``; :class:`DataError` says what is wrong.

    With no ``[data] source`` the node has nothing to train on: an empty set (it still follows and
    verifies the chain)."""
    if not config.source:
        return empty(task, "no local data")
    source = data_source(config, home)
    x, y = read(source)
    return check(x, y, task.spec, str(source.path))


def empty(task: Task, name: str) -> Dataset:
    shape = task.input_shape if len(task.input_shape) == 3 else None
    return Dataset(np.zeros((0, int(np.prod(task.input_shape))), np.float32), np.zeros(0, np.int64),
                   task.num_classes, name, shape)  # type: ignore[arg-type]


def task_node_data(task: Task, local: Dataset, val_fraction: float, seed: int) -> NodeData:
    """Own data split into train and a private validation part; the evaluation set comes later."""
    order = np.random.default_rng(seed).permutation(len(local))
    n_val = int(val_fraction * len(local))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    pending = empty(task, "public-eval (not fetched yet)")
    return NodeData(local.subset(train, "local-train"), local.subset(val, "local-val"), pending, pending, -1)


def parse_eval_set(task: Task, blob: bytes) -> Dataset:
    """The evaluation set in ``blob``; :class:`DataError` if its hash is not the task's (a tampered
    or wrong copy) or it does not fit the task."""
    got = sha256(blob)
    if got != task.eval_hash:
        raise DataError(f"public evaluation set has SHA-256 {got.hex()}, the genesis task pins "
                        f"{task.eval_set_sha256}: refused")
    return evalset.decode(blob, task.spec, task.eval_set_samples)


def install_eval_set(data: NodeData, eval_set: Dataset) -> None:
    """The shared set becomes both the robust rule's evaluation set and the test metric's set."""
    data.public_eval = eval_set
    data.test = eval_set
