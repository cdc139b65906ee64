"""Federated-learning misbehaviour for evaluation, chosen when a node is wired (``[fault]`` in its
config), kept out of the production classes: a lying application and an attacking trainer.

``WrongModelApp`` proposes payloads whose model hash is wrong (every other delegate proves it and
the block deciding the height punishes it). ``AttackingTrainer`` sends poisoned updates: model
attacks (sign flip, Gaussian, ALIE, IPM, min-max, scaling) craft the released vector from what
the node observes, data attacks (label flip, backdoor) poison its shard. Its updates stay within
the admitted norm and sample bounds, as a careful attacker's would, so the robust aggregation
rule is what has to stop them. ``LyingPartialApp`` is a proposer (the cluster head of every
cluster of its block) that lies about one cluster's partial aggregate of a hierarchical round,
consistently: only a delegate that re-runs that cluster can tell. All are logged loudly. Never
enable them on a real chain.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np

from consensus.app import BlockContext
from gossip.crypto import sha256
from learning.aggregation import aggregate
from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS, craft_updates, poison_data
from learning.client import Release
from learning.hierarchy import combine
from node.fl.app import FLApp
from node.fl.blobs import model_bytes, model_hash
from node.fl.round import Payload, RoundResult
from node.fl.verify import EvalLog
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


class LyingPartialApp(FLApp):
    """An FL application whose hierarchical proposals replace cluster ``lie_cluster``'s partial
    aggregate by its sign flip, three times as long. The combination, its evaluations and the
    model hash are recomputed from the lie and the lie is served by its hash like an honest
    partial, so the payload is consistent everywhere except in that one cluster."""

    lie_cluster = 0

    async def prepare_payload(self, ctx: BlockContext) -> bytes:
        honest = await super().prepare_payload(ctx)
        result = self._results[ctx.height][sha256(honest)]
        p, c = result.payload, self.lie_cluster
        if c >= len(result.partials) or result.partials[c] is None:
            return honest
        vectors = list(result.partials)
        vectors[c] = (-3.0 * vectors[c]).astype(np.float32)
        log.warning("FAULT lying_partial: proposing a wrong partial for cluster %d at height %d", c, ctx.height)
        used = [r for r in p.partials if r.hash and r.weight > 0]
        s = self.settings
        lr = np.float32(s.server_lr)
        recorder = EvalLog(self.model_evaluator())
        params = {k: v for k, v in s.rule_params.items() if k != "weight_cap"}
        vector, kept = combine(aggregate, s.hierarchy_rule.combine, s.rule, params,
                               np.stack([vectors[r.cluster] for r in used]), np.array([r.weight for r in used]),
                               ctx.height, lambda delta: recorder(self.model + lr * delta))
        model = (self.model + lr * vector).astype(np.float32)
        keeps = {r.cluster: k for r, k in zip(used, kept.tolist())}
        records = tuple(replace(r, hash=model_hash(vectors[c]) if r.cluster == c else r.hash,
                                kept=keeps.get(r.cluster, r.kept)) for r in p.partials)
        clusters_evals = sum(r.evaluations for r in p.partials)
        lie = replace(p, partials=records, new_hash=model_hash(model),
                      evals=p.evals[:clusters_evals] + tuple(recorder.values))
        self.blobs.put("model", model_bytes(vectors[c]), ctx.height)
        data = lie.encode()
        self._remember(ctx.height, sha256(data), RoundResult(lie, model, tuple(vectors)))
        return data


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
    return WrongModelApp if fault.wrong_model else LyingPartialApp if fault.lying_partial else FLApp


def make_trainer(fault: Any, *args: Any, **kwargs: Any) -> Trainer:
    """The trainer a node with ``[fault]`` settings ``fault`` runs."""
    return AttackingTrainer(*args, attack=fault.attack, **kwargs) if fault.attack else Trainer(*args, **kwargs)
