"""Which data a node trains on, and the sets every node evaluates on alike.

The split itself is :func:`learning.federation.split` (the simulator uses it too): a test set, a
public evaluation set and one shard per client. A node trains on the shard of its index among the
genesis accounts (a node that joined later takes a shard by its id) and keeps that shard's
validation split to itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from learning.data import Dataset
from learning.federation import split
from learning.settings import FLSettings


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


def shard_of(node_id: str, genesis_ids: list[str], clients: int) -> int:
    if node_id in genesis_ids:
        return genesis_ids.index(node_id) % clients
    return int(node_id, 16) % clients


def load_node_data(settings: FLSettings, node_id: str, genesis_ids: list[str]) -> NodeData:
    clients = settings.clients or max(1, len(genesis_ids))
    fed = split(settings, clients)
    shard = shard_of(node_id, genesis_ids, clients)
    return NodeData(fed.shard(shard), fed.validation(shard), fed.test, fed.public_eval, shard)
