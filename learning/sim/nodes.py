"""Setting up a simulated federation: data, partition, and the per-node state.

A virtual node is only what differs between nodes - its (possibly poisoned) training arrays,
its compressor residual, its privacy accountant, its speed and trust - so hundreds of them fit
in one process. The model object is shared by all nodes (see :mod:`learning.sim.engine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from learning.attacks import DATA_ATTACKS, poison_data
from learning.compression import ErrorFeedback
from learning.data import (
    Dataset,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    synthetic_fedprox,
)
from learning.partition import Partition, make_partition
from learning.privacy import PrivacyAccountant
from learning.sim.config import SimConfig

# Independent random streams, one per purpose, so changing e.g. the attack does not reshuffle
# the partition: each stream is default_rng([seed, tag]).
STREAM_PARTITION, STREAM_BYZANTINE, STREAM_POISON, STREAM_SPEED, STREAM_VAL = range(5)
STREAM_SELECT, STREAM_ATTACK, STREAM_NOISE = 5, 6, 7


def stream(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag])


@dataclass
class VirtualNode:
    """State one simulated node keeps between rounds."""

    node_id: int
    x: np.ndarray                         # training inputs (n, F) float32
    y: np.ndarray                         # training labels (n,) int64
    byzantine: bool
    speed: float                          # simulated seconds per local job (async mode)
    compressor: ErrorFeedback | None      # None = dense uploads
    accountant: PrivacyAccountant | None  # None = no differential privacy
    trust: float = 1.0


@dataclass
class Federation:
    """Pooled data and how it is split."""

    train: Dataset
    test: Dataset
    partition: Partition


def load_federation(cfg: SimConfig) -> Federation:
    """Load ``cfg.dataset`` and partition it among ``cfg.num_nodes`` nodes."""
    groups = None
    if cfg.dataset == "digits":
        train, test = load_digits(seed=cfg.seed)
    elif cfg.dataset == "fashion_mnist":
        train, test = load_fashion_mnist(cfg.data_dir)
    elif cfg.dataset == "cifar10":
        if cfg.data_dir is None:
            raise ValueError("cifar10 needs data_dir (the folder of the python batches)")
        train, test = load_cifar10(cfg.data_dir)
    else:
        train, test, groups = synthetic_fedprox(cfg.synthetic_alpha, cfg.synthetic_beta, cfg.num_nodes,
                                                seed=cfg.seed)
    partition = make_partition(cfg.partition, train.y, cfg.num_nodes, seed=cfg.seed,
                               alpha=cfg.dirichlet_alpha, shards_per_client=cfg.shards_per_client,
                               min_samples=cfg.min_samples, val_fraction=cfg.val_fraction,
                               groups=groups)
    return Federation(train, test, partition)


def build_nodes(cfg: SimConfig, fed: Federation, dim: int) -> list[VirtualNode]:
    """Create every node: pick the Byzantine ones, poison their data if the attack is on data."""
    n_byz = round(cfg.byzantine_fraction * cfg.num_nodes)
    byz = set(stream(cfg.seed, STREAM_BYZANTINE).choice(cfg.num_nodes, n_byz, replace=False).tolist())
    poison_rng = stream(cfg.seed, STREAM_POISON)
    speeds = stream(cfg.seed, STREAM_SPEED).lognormal(0.0, cfg.speed_sigma, cfg.num_nodes)
    sizes = fed.partition.sizes()
    budget = math.inf if cfg.epsilon_budget is None else cfg.epsilon_budget
    sample_rate = 1.0 if cfg.mode == "async" or cfg.clients_per_round is None \
        else cfg.clients_per_round / cfg.num_nodes
    nodes = []
    for i, idx in enumerate(fed.partition.train):
        x, y = fed.train.x[idx], fed.train.y[idx]
        if i in byz and cfg.attack in DATA_ATTACKS:
            x, y = poison_data(cfg.attack, x, y, poison_rng, fed.train.num_classes,
                               fed.train.image_shape, **cfg.attack_params)
        compressor = None if cfg.topk_fraction is None else \
            ErrorFeedback(dim, cfg.topk_fraction, cfg.compress_dtype, cfg.error_feedback)
        accountant = None if cfg.clip_norm is None else \
            PrivacyAccountant(budget, cfg.dp_delta, cfg.noise_multiplier, sample_rate)
        # Time per job grows with the node's data; speed is the node's hardware factor.
        speed = float(speeds[i] * sizes[i] / sizes.mean())
        nodes.append(VirtualNode(i, np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64),
                                 i in byz, speed, compressor, accountant))
    return nodes


def server_validation(cfg: SimConfig, fed: Federation) -> Dataset:
    """Clean held-out samples (from the nodes' validation splits) that a rule may score models on."""
    pool = np.concatenate(fed.partition.val) if fed.partition.val else np.zeros(0, np.int64)
    if len(pool) == 0:
        raise ValueError("no validation samples: set val_fraction > 0")
    rng = stream(cfg.seed, STREAM_VAL)
    pick = np.sort(rng.choice(pool, min(cfg.server_val_size, len(pool)), replace=False))
    return fed.train.subset(pick, f"{fed.train.name}-server-val")
