"""Setting up a simulated federation: the data split and the per-node state.

A virtual node is only what differs between nodes - its client (its shard, possibly poisoned,
its error-feedback residual, its privacy accountant, its update count), its speed and its stake -
so hundreds of them fit in one process. The model object is shared by all nodes (see
:mod:`learning.sim.engine`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learning.attacks import DATA_ATTACKS, HYBRID_ATTACKS, poison_data
from learning.client import Client
from learning.federation import Federation, split
from learning.sim.config import SimConfig

# Independent random streams, one per purpose, so changing e.g. the attack does not reshuffle
# the noise: each stream is default_rng([seed, tag]).
STREAM_BYZANTINE, STREAM_POISON, STREAM_SPEED = 1, 2, 3
STREAM_SELECT, STREAM_ATTACK, STREAM_NOISE = 5, 6, 7


def stream(seed: int, tag: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag])


@dataclass
class VirtualNode:
    """State one simulated node keeps between rounds."""

    node_id: int
    client: Client
    byzantine: bool
    speed: float                          # simulated seconds per local job (async mode)
    stake: int                            # rewarded and penalized by rounds as on a chain


def load_federation(cfg: SimConfig) -> Federation:
    """The chain's split of ``cfg.fl``'s data among ``cfg.num_nodes`` nodes (node i holds shard i)."""
    return split(cfg.fl, cfg.num_nodes, synthetic=(cfg.synthetic_alpha, cfg.synthetic_beta),
                 shards_per_client=cfg.shards_per_client, min_samples=cfg.min_samples)


def build_nodes(cfg: SimConfig, fed: Federation, dim: int) -> list[VirtualNode]:
    """Create every node: pick the Byzantine ones, poison their data if the attack is on data."""
    seed = cfg.fl.seed
    n_byz = round(cfg.byzantine_fraction * cfg.num_nodes)
    byz = set(stream(seed, STREAM_BYZANTINE).choice(cfg.num_nodes, n_byz, replace=False).tolist())
    poison_rng = stream(seed, STREAM_POISON)
    noise_rng = stream(seed if cfg.noise_seed is None else cfg.noise_seed, STREAM_NOISE)
    speeds = stream(seed, STREAM_SPEED).lognormal(0.0, cfg.speed_sigma, cfg.num_nodes)
    sizes = fed.partition.sizes()
    data_attack = cfg.attack if cfg.attack in DATA_ATTACKS else HYBRID_ATTACKS.get(cfg.attack or "")
    # a distributed trigger: the k-th attacker (in node order) stamps part k of it
    parts = {node: k for k, node in enumerate(sorted(byz))} if data_attack == "dba" else {}
    nodes = []
    for i in range(cfg.num_nodes):
        shard = fed.shard(i)
        x, y = shard.x, shard.y
        if i in byz and data_attack is not None:
            # a hybrid attack's parameters are its vector's; its data poisoning keeps the defaults
            params = {} if data_attack != cfg.attack else {**cfg.attack_params, **({"part": parts[i]} if parts else {})}
            x, y = poison_data(data_attack, x, y, poison_rng, shard.num_classes, shard.image_shape, **params)
        client = Client(cfg.fl, np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int64), dim,
                        noise_rng)
        # Time per job grows with the node's data; speed is the node's hardware factor.
        speed = float(speeds[i] * sizes[i] / sizes.mean())
        nodes.append(VirtualNode(i, client, i in byz, speed, cfg.initial_stake))
    return nodes
