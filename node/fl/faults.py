"""Federated-learning misbehaviour for evaluation, chosen when a node is wired (``[fault]`` in its
config), kept out of the production classes: a lying application and an attacking trainer.

``WrongModelApp`` proposes payloads whose model hash is wrong (every other delegate proves it and
the block deciding the height punishes it). ``AttackingTrainer`` sends poisoned updates: model
attacks (sign flip, Gaussian, ALIE, IPM, min-max, scaling) craft the released vector from what
the node observes, data attacks (label flip, backdoor) poison its shard. Its updates stay within
the admitted norm and sample bounds, as a careful attacker's would, so the robust aggregation
rule is what has to stop them. Both are logged loudly. Never enable them on a real chain.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from consensus.app import BlockContext
from gossip.crypto import sha256
from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS, craft_updates, poison_data
from learning.client import Release
from node.fl.app import FLApp
from node.fl.round import Payload, RoundResult
from node.fl.trainer import Trainer

log = logging.getLogger("fedchain.fault")

ATTACKS = MODEL_ATTACKS + DATA_ATTACKS


class WrongModelApp(FLApp):
    """An FL application whose own proposals name a wrong model hash."""

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        honest = await super().prepare_payload(ctx)
        p = Payload.decode(honest, self.max_message)
        log.warning("FAULT wrong_model: proposing a wrong model hash at height %d", ctx.height)
        lie = replace(p, new_hash=sha256(b"wrong" + p.new_hash)).encode()
        self._remember(ctx.height, sha256(lie), RoundResult(p, self.model))
        return lie


class AttackingTrainer(Trainer):
    """A trainer that sends ``attack`` updates instead of honest ones, through the same pipeline
    (compression, norm bound, sample cap) as every honest node."""

    def __init__(self, *args: Any, attack: str, **kwargs: Any) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        super().__init__(*args, **kwargs)
        self.attack = attack
        self._attack_rng = np.random.default_rng()  # used on the worker thread only
        log.warning("ATTACK ENABLED: this node sends %s updates on purpose (evaluation only)", attack)
        if attack in DATA_ATTACKS:
            d, c = self.app.data.train, self.client
            c.x, c.y = poison_data(attack, c.x, c.y, np.random.default_rng(0), d.num_classes, d.image_shape)

    def _observed(self, base_hash: bytes) -> list[np.ndarray]:
        if self.attack not in MODEL_ATTACKS:
            return []
        return [u.dense() for u in self.app.pool.on_base(base_hash) if u.sender != self.keypair.node_id]

    def _craft(self, release: Release, observed: list[np.ndarray]) -> np.ndarray:
        if self.attack not in MODEL_ATTACKS:
            return release.vector
        seen = np.stack(observed) if observed else release.vector[None]
        return craft_updates(self.attack, release.vector[None], seen, self._attack_rng)[0]


def fl_app_class(fault: Any) -> type[FLApp]:
    """The application class a node with ``[fault]`` settings ``fault`` runs."""
    return WrongModelApp if fault.wrong_model else FLApp


def make_trainer(fault: Any, *args: Any, **kwargs: Any) -> Trainer:
    """The trainer a node with ``[fault]`` settings ``fault`` runs."""
    return AttackingTrainer(*args, attack=fault.attack, **kwargs) if fault.attack else Trainer(*args, **kwargs)
