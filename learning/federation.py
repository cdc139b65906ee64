"""How a task's data is split among a federation, identically on every node and in the simulator.

From the FL settings alone every node derives the same split: the data set's test split (global
accuracy), a public evaluation set carved from the training pool (the clustering rule tunes its
radius on it, so every verifier needs the same one), and the rest partitioned into shards, one
per client, each with a validation part its node keeps to itself. A daemon trains on one shard
(``node/fl/data.py`` says which); the simulator gives shard ``i`` to virtual node ``i``, so a
simulation with the chain's settings and node count trains on exactly the chain's shards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learning.data import (
    Dataset,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    synthetic_fedprox,
)
from learning.partition import Partition, make_partition
from learning.settings import FLSettings


@dataclass(frozen=True)
class Federation:
    """The split of one task's data among ``partition.num_clients`` clients."""

    pool: Dataset            # training samples the partition indexes
    partition: Partition
    test: Dataset            # global accuracy
    public_eval: Dataset     # common validation set of the aggregation rule

    def shard(self, i: int) -> Dataset:
        return self.pool.subset(self.partition.train[i], f"shard{i}")

    def validation(self, i: int) -> Dataset:
        return self.pool.subset(self.partition.val[i], f"val{i}")


def load_task(settings: FLSettings, clients: int, synthetic: tuple[float, float] = (1.0, 1.0),
              ) -> tuple[Dataset, Dataset, list[np.ndarray] | None]:
    """(train pool, test set, natural groups or None) of the settings' data set.

    ``synthetic`` is FedProx's (alpha, beta) for the synthetic set, whose generator draws one task
    per client.
    """
    if settings.dataset == "digits":
        train, test = load_digits(seed=settings.seed)
        return train, test, None
    if settings.dataset == "fashion_mnist":
        train, test = load_fashion_mnist(settings.data_dir or None)
        return train, test, None
    if settings.dataset == "cifar10":
        if not settings.data_dir:
            raise ValueError("cifar10 needs data_dir (the folder of the python batches)")
        train, test = load_cifar10(settings.data_dir)
        return train, test, None
    return synthetic_fedprox(*synthetic, clients, seed=settings.seed)


def split(settings: FLSettings, clients: int, *, synthetic: tuple[float, float] = (1.0, 1.0),
          shards_per_client: int = 2, min_samples: int = 2) -> Federation:
    """Carve the public evaluation set out of the training pool, partition the rest into
    ``clients`` shards (``shards_per_client`` and ``min_samples`` tune the partition schemes)."""
    if clients < 1:
        raise ValueError(f"need at least one client, got {clients}")
    train, test, groups = load_task(settings, clients, synthetic)
    order = np.random.default_rng(settings.seed).permutation(len(train))
    n_eval = min(settings.eval_samples, len(train) // 5)
    public_eval = train.subset(np.sort(order[:n_eval]), "public-eval")
    kept = np.sort(order[n_eval:])
    rest = train.subset(kept, train.name)
    if groups is not None:  # the natural groups, re-indexed into the rest
        position = np.full(len(train), -1, dtype=np.int64)
        position[kept] = np.arange(len(kept))
        groups = [position[g][position[g] >= 0] for g in groups]
    partition = make_partition(settings.partition, rest.y, clients, seed=settings.seed,
                               alpha=settings.dirichlet_alpha, shards_per_client=shards_per_client,
                               min_samples=min_samples, val_fraction=settings.val_fraction, groups=groups)
    return Federation(rest, partition, test, public_eval)
