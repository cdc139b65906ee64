"""Which data a node trains on, and the sets every node evaluates on alike.

From the genesis FL settings every node derives the same split of the data set: a held-out test
set (global accuracy), a small public evaluation set (the clustering rule tunes its radius on it,
so verifiers must all hold the same one), and the training pool partitioned among ``clients``
shards. A node trains on its own shard (its index among the genesis accounts; a node that joined
later takes a shard by its id) and keeps that shard's validation split to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learning.data import Dataset, load_digits, load_fashion_mnist, synthetic_fedprox
from learning.partition import make_partition
from node.fl.settings import FLSettings


@dataclass
class NodeData:
    train: Dataset
    val: Dataset
    test: Dataset
    public_eval: Dataset
    shard: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def load_pool(settings: FLSettings) -> tuple[Dataset, Dataset]:
    """The (train pool, test set) of the configured data set."""
    if settings.dataset == "digits":
        return load_digits(seed=settings.seed)
    if settings.dataset == "fashion_mnist":
        return load_fashion_mnist(settings.data_dir or None)
    train, test, _ = synthetic_fedprox(1.0, 1.0, max(settings.clients, 1), seed=settings.seed)
    return train, test


def shard_of(node_id: str, genesis_ids: list[str], clients: int) -> int:
    if node_id in genesis_ids:
        return genesis_ids.index(node_id) % clients
    return int(node_id, 16) % clients


def load_node_data(settings: FLSettings, node_id: str, genesis_ids: list[str]) -> NodeData:
    train_pool, test = load_pool(settings)
    clients = settings.clients or max(1, len(genesis_ids))
    rng = np.random.default_rng(settings.seed)
    order = rng.permutation(len(train_pool))
    n_eval = min(settings.eval_samples, len(train_pool) // 5)
    public_eval = train_pool.subset(np.sort(order[:n_eval]), "public-eval")
    rest = train_pool.subset(np.sort(order[n_eval:]), train_pool.name)
    part = make_partition(settings.partition, rest.y, clients, seed=settings.seed, alpha=settings.alpha,
                          val_fraction=settings.val_fraction)
    shard = shard_of(node_id, genesis_ids, clients)
    return NodeData(rest.subset(part.train[shard], f"shard{shard}"), rest.subset(part.val[shard], f"val{shard}"),
                    test, public_eval, shard)
