"""The simulator: N virtual nodes, one process, synchronous rounds or asynchronous arrivals.

One pipeline serves both modes. A node's *job* is local training from the global model of some
version, followed by clipping and noise when differential privacy is on (the node does this
before anything leaves it). At aggregation time the Byzantine nodes' jobs are replaced by
crafted updates (model attacks see the honest updates of the same aggregation, as a gossiping
attacker would), every update goes through its node's compressor, the aggregate is computed
from what receivers decode, and the global model moves.

Sync: each round, ``clients_per_round`` nodes (all by default) train from the current model.
With DP the nodes are Poisson-sampled with rate ``clients_per_round / num_nodes``, which is
the participation model the privacy accountant assumes.

Async (FedAsync / FedBuff style): every node trains continuously at its own speed; updates
arrive in simulated-time order, and every ``clients_per_round`` arrivals are aggregated. An
update's staleness is how many global versions appeared since its base; updates older than
``max_staleness`` are dropped. Aggregation weights are ``samples * (1 + staleness)^-a`` and the
step is scaled by the weighted mean of ``(1 + staleness)^-a``, so a buffer of one reproduces
FedAsync's ``x <- x + alpha * s(staleness) * delta``.

Efficiency: one shared model object is reloaded from flat vectors for every job, node data
are pre-sliced contiguous arrays, and byte counts come from :func:`wire_size` without encoding.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from learning.aggregation import RULE_NAMES, AggregationResult, aggregate, staleness_weight
from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS, claimed_samples, craft_updates
from learning.compression import dense_bytes, densify, wire_size
from learning.models import build_model, get_flat, num_params, set_flat
from learning.privacy import clip_and_noise
from learning.sim.config import RoundStats, SimConfig, SimResult
from learning.sim.nodes import (
    STREAM_ATTACK,
    STREAM_NOISE,
    STREAM_SELECT,
    VirtualNode,
    build_nodes,
    load_federation,
    server_validation,
    stream,
)
from learning.train import evaluate, local_train, lr_at


@dataclass
class Job:
    """One finished local update, waiting to be aggregated."""

    node: VirtualNode
    delta: np.ndarray
    num_samples: int
    loss: float
    base_version: int


class Simulator:
    """Build with a :class:`SimConfig`, then :meth:`run`.

    ``aggregator`` stands in for :func:`learning.aggregation.aggregate` (same arguments, same
    result type): benchmarks pass another library's rule, or a wrapper around ours, so that it
    runs on exactly the updates this federation produces.
    """

    def __init__(self, cfg: SimConfig,
                 aggregator: Callable[..., AggregationResult] = aggregate) -> None:
        cfg.validate()
        if cfg.rule not in RULE_NAMES:
            raise ValueError(f"unknown aggregation rule {cfg.rule!r}; choose one of {', '.join(RULE_NAMES)}")
        if cfg.attack is not None and cfg.attack not in MODEL_ATTACKS and cfg.attack not in DATA_ATTACKS:
            raise ValueError(f"unknown attack {cfg.attack!r}; choose one of "
                             f"{', '.join(sorted(set(MODEL_ATTACKS) | set(DATA_ATTACKS)))}")
        self.cfg = cfg
        self._aggregator = aggregator
        self.fed = load_federation(cfg)
        self.model = build_model(cfg.model, self.fed.train.input_shape, self.fed.train.num_classes, cfg.seed)
        self.dim = num_params(self.model)
        self.global_flat = get_flat(self.model)
        self.version = 0
        self.nodes = build_nodes(cfg, self.fed, self.dim)
        self.val = server_validation(cfg, self.fed)
        self._select_rng = stream(cfg.seed, STREAM_SELECT)
        self._attack_rng = stream(cfg.seed, STREAM_ATTACK)
        self._noise_rng = stream(cfg.seed, STREAM_NOISE)
        self._model_attack = cfg.attack in MODEL_ATTACKS

    # ------------------------------------------------------------------ jobs

    def _can_release(self, node: VirtualNode) -> bool:
        return node.accountant is None or node.accountant.can_release()

    def _train(self, node: VirtualNode) -> Job:
        """Local training from the current global model, then clip and noise if DP is on."""
        cfg = self.cfg
        seed = int(np.random.SeedSequence([cfg.seed, node.node_id, self.version]).generate_state(1)[0])
        res = local_train(self.model, node.x, node.y, start=self.global_flat, epochs=cfg.local_epochs,
                          batch_size=cfg.batch_size, lr=lr_at(self.version, cfg.lr, cfg.lr_beta, cfg.lr_schedule),
                          optimizer=cfg.optimizer, momentum=cfg.momentum, prox_mu=cfg.prox_mu, seed=seed)
        delta = res.delta
        if node.accountant is not None:
            node.accountant.release()
            delta, _ = clip_and_noise(delta, cfg.clip_norm, cfg.noise_multiplier, self._noise_rng)
        return Job(node, delta, res.num_samples, res.loss, self.version)

    # ------------------------------------------------------------------ aggregation

    def _uploads(self, jobs: list[Job]) -> tuple[np.ndarray, int, int]:
        """What receivers decode from each job, and the bytes it took (compressed, dense)."""
        deltas = np.stack([j.delta for j in jobs])
        byz = np.array([j.node.byzantine for j in jobs])
        if self._model_attack and byz.any():
            observed = deltas[~byz] if (~byz).any() else deltas[byz]
            deltas[byz] = craft_updates(self.cfg.attack, deltas[byz], observed, self._attack_rng,
                                        **self.cfg.attack_params)
        sent = 0
        for row, job in enumerate(jobs):
            if job.node.compressor is None:
                sent += dense_bytes(self.dim)
            else:
                update = job.node.compressor.compress(deltas[row])
                sent += wire_size(update)
                deltas[row] = densify(update)
        return deltas.astype(np.float32, copy=False), sent, dense_bytes(self.dim) * len(jobs)

    def _score(self, candidate: np.ndarray, step: float) -> float:
        """Validation accuracy of the global model moved by ``step * candidate`` (for the rule)."""
        set_flat(self.model, self.global_flat + np.float32(step) * candidate)
        return evaluate(self.model, self.val.x, self.val.y)[0]

    def _aggregate(self, jobs: list[Job], sim_time: float, dropped: int, started: float) -> RoundStats:
        cfg = self.cfg
        updates, sent, dense = self._uploads(jobs)
        staleness = np.array([self.version - j.base_version for j in jobs], dtype=np.float64)
        decay = np.asarray(staleness_weight(staleness, cfg.staleness_a), dtype=np.float64)
        byz = np.array([j.node.byzantine for j in jobs])
        samples = claimed_samples([j.num_samples for j in jobs], byz, cfg.claimed_samples)
        weights = samples * decay
        step = cfg.server_lr * float(weights.sum() / samples.sum())
        f = cfg.assumed_byzantine if cfg.assumed_byzantine is not None \
            else math.ceil(cfg.byzantine_fraction * len(jobs))
        trust = np.array([j.node.trust for j in jobs], dtype=np.float64)
        result = self._aggregator(cfg.rule, updates, weights, trust=trust, f=f, seed=cfg.seed + self.version,
                                  evaluate=lambda cand: self._score(cand, step), **cfg.rule_params)
        accepted = np.asarray(result.accepted, dtype=bool)
        for job, ok in zip(jobs, accepted):
            job.node.trust = cfg.trust_decay * job.node.trust + (1.0 - cfg.trust_decay) * float(ok)
        self.global_flat = (self.global_flat + np.float32(step) * result.vector).astype(np.float32)
        self.version += 1
        acc = loss = None
        if self.version % cfg.eval_every == 0 or self.version == cfg.rounds:
            set_flat(self.model, self.global_flat)
            acc, loss = evaluate(self.model, self.fed.test.x, self.fed.test.y)
        rejected = ~accepted
        eps = [n.accountant.epsilon() for n in self.nodes if n.accountant is not None]
        return RoundStats(
            round=self.version, sim_time=sim_time, accuracy=acc, loss=loss,
            train_loss=float(np.mean([j.loss for j in jobs])), num_updates=len(jobs),
            num_accepted=int(accepted.sum()), num_byzantine=int(byz.sum()), bytes_sent=sent,
            dense_bytes=dense, true_pos=int((rejected & byz).sum()), false_pos=int((rejected & ~byz).sum()),
            false_neg=int((accepted & byz).sum()), true_neg=int((accepted & ~byz).sum()),
            mean_staleness=float(staleness.mean()), dropped_stale=dropped,
            max_epsilon=max(eps, default=0.0), wall_time=time.perf_counter() - started,
            nodes=[j.node.node_id for j in jobs], byzantine=byz.tolist(),
            scores=np.asarray(result.scores, dtype=np.float64).tolist())

    # ------------------------------------------------------------------ modes

    def run(self) -> SimResult:
        """Run all rounds (fewer if every node has spent its privacy budget)."""
        rounds = self._run_sync() if self.cfg.mode == "sync" else self._run_async()
        byz = [n.node_id for n in self.nodes if n.byzantine]
        return SimResult(self.cfg, byz, rounds)

    def _select(self) -> list[VirtualNode]:
        cfg = self.cfg
        k = cfg.clients_per_round or cfg.num_nodes
        if k == cfg.num_nodes:
            chosen = self.nodes
        elif cfg.clip_norm is not None:   # Poisson sampling, as the accountant assumes
            mask = self._select_rng.random(cfg.num_nodes) < k / cfg.num_nodes
            chosen = [n for n, m in zip(self.nodes, mask) if m]
        else:
            idx = np.sort(self._select_rng.choice(cfg.num_nodes, k, replace=False))
            chosen = [self.nodes[i] for i in idx]
        return [n for n in chosen if self._can_release(n)]

    def _run_sync(self) -> list[RoundStats]:
        stats = []
        for r in range(self.cfg.rounds):
            started = time.perf_counter()
            chosen = self._select()
            if not chosen:
                if not any(self._can_release(n) for n in self.nodes):
                    break                     # every privacy budget is spent
                continue                      # Poisson sampling picked nobody this round
            jobs = [self._train(n) for n in chosen]
            stats.append(self._aggregate(jobs, float(r), 0, started))
        return stats

    def _run_async(self) -> list[RoundStats]:
        cfg = self.cfg
        buffer_size = cfg.clients_per_round or 1
        queue: list[tuple[float, int, Job]] = []

        def start(node: VirtualNode, now: float) -> None:
            if self._can_release(node):
                heapq.heappush(queue, (now + node.speed, node.node_id, self._train(node)))

        started = time.perf_counter()
        for node in self.nodes:
            start(node, 0.0)
        stats: list[RoundStats] = []
        buffer: list[Job] = []
        dropped = 0
        while queue and len(stats) < cfg.rounds:
            now, _, job = heapq.heappop(queue)
            if self.version - job.base_version > cfg.max_staleness:
                dropped += 1
            else:
                buffer.append(job)
            if len(buffer) == buffer_size:
                stats.append(self._aggregate(buffer, now, dropped, started))
                buffer, dropped, started = [], 0, time.perf_counter()
            start(job.node, now)
        return stats
