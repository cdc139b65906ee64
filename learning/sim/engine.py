"""The simulator: N virtual nodes, one process, synchronous rounds or asynchronous arrivals.

Every node runs the product's client pipeline (:class:`learning.client.Client`) with the chain's
FL settings, and every aggregation is the product's round (:func:`learning.round.run_round`):
a simulation measures the code a chain runs. A node's *job* is local training from the global
model of some version, clipped and noised (its release). At aggregation time honest nodes send
their releases (top-k with error feedback within the norm bound); Byzantine nodes of a model
attack craft their vectors from what the honest nodes sent (as a gossiping attacker sees them)
and send those through the same pipeline; the round aggregates what receivers decode and the
global model moves. Trust is each node's stake share, and rounds reward and penalize stake as a
chain's blocks do (block rewards to producers aside). Holds, witnesses and standing
(:mod:`learning.standing`) follow each round's outcome as a chain's final blocks make them.

Sync: each round, ``clients_per_round`` nodes (all by default, else drawn at random) train from
the current model; a node whose privacy budget is spent (``local-dp``) no longer takes part. Or
each round has the nodes ``participants`` names (replaying which nodes a chain's blocks
aggregated). Which nodes take part is no secret on a chain, so no privacy accounting relies on it.

Async (FedAsync / FedBuff style): every node trains continuously at its own speed; updates
arrive in simulated-time order, and every ``clients_per_round`` arrivals are aggregated. An
update's staleness is how many global versions appeared since its base; updates older than
``max_staleness`` are dropped, as a chain's admission drops them.

Selection: when a round has more updates than ``fl.max_updates``, the genesis selection policy
(``fl.selection``: all, random, trust, PSO; :mod:`learning.selection`) picks which of them the
round aggregates, over the features a chain's update pool gives it (``node/fl/pool.py``): how long
after its base model each update arrived, its sender's trust, its claimed samples, its
staleness. Like the pool, it ranks candidates in sender order and is seeded by the round's
height, and keeps one update per sender (its newest), as the pool does. The others were still
uploaded (counted in ``uploaded_bytes``) but neither aggregated nor rewarded nor penalized; their
senders have started their next job, whose update supersedes them.

Adaptive attackers: ``adaptive`` gets the chain's rule (settings' rule and parameters, equal
weights, no validation callback: what an outsider can run) as its oracle. A sybil burst
(``byzantine_from_round``) keeps the Byzantine identities out of every round before it (async:
their first job starts at the first aggregation of that version), then they all join at once.

Efficiency: one shared model object is reloaded from flat vectors for every job, node data are
contiguous arrays, and byte counts come from :func:`learning.compression.wire_size`.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from learning.aggregation import AggregationResult, WitnessRows, aggregate
from learning.attacks import DATA_ATTACKS, MODEL_ATTACKS, craft_updates
from learning.client import Release, Sent
from learning.compression import dense_bytes
from learning.models import build_model, feature_groups, get_flat, num_params, set_flat
from learning.round import (Witnesses, drift, feature_norms, holds_after, run_round, stake_changes, witness_after,
                            witness_rows)
from learning.selection import selection_features, select_nodes
from learning.standing import Record, applies, round_factors, standing_after
from learning.sim.config import RoundStats, SimConfig, SimResult
from learning.sim.nodes import (
    STREAM_ATTACK,
    STREAM_SELECT,
    VirtualNode,
    build_nodes,
    load_federation,
    stream,
)
from learning.train import evaluate


@dataclass
class Job:
    """One finished local release, waiting to be sent and aggregated."""

    node: VirtualNode
    release: Release
    base_version: int
    waited: float         # simulated seconds from its base model's appearance to its arrival


class Simulator:
    """Build with a :class:`SimConfig`, then :meth:`run`.

    ``aggregator`` stands in for :func:`learning.aggregation.aggregate` (same arguments, same
    result type): benchmarks pass another library's rule, or a wrapper around ours, so that it
    runs on exactly the updates this federation produces.
    """

    def __init__(self, cfg: SimConfig,
                 aggregator: Callable[..., AggregationResult] = aggregate) -> None:
        cfg.validate()
        if cfg.attack is not None and cfg.attack not in MODEL_ATTACKS and cfg.attack not in DATA_ATTACKS:
            raise ValueError(f"unknown attack {cfg.attack!r}; choose one of "
                             f"{', '.join(sorted(set(MODEL_ATTACKS) | set(DATA_ATTACKS)))}")
        self.cfg = cfg
        self._aggregator = aggregator
        self.fed = load_federation(cfg)
        s = cfg.fl
        self.model = build_model(s.model, self.fed.pool.input_shape, self.fed.pool.num_classes, s.seed)
        self.dim = num_params(self.model)
        self.groups = feature_groups(self.model)
        self.global_flat = get_flat(self.model)
        self.version = 0
        self.bases = deque([self.global_flat], maxlen=cfg.fl.max_staleness + 1)
        """The global models updates may still build on, oldest first (a chain's window)."""
        self.version_time = [0.0]         # simulated time each global version appeared
        self.held: dict[int, int] = {}
        """Node id -> the version whose round last dropped it against the drift (a chain's holds)."""
        self._oracle_held: np.ndarray | None = None
        self.witness: Witnesses = {}
        """Node id -> (version, feature-group norms) of its last accepted update (a chain's witnesses)."""
        self._oracle_witness: WitnessRows | None = None
        self.standing: Record = {}
        """Node id -> (version, excess) of its last accepted updates (a chain's standing record)."""
        self.nodes = build_nodes(cfg, self.fed, self.dim)
        self.val = self.fed.public_eval
        self._select_rng = stream(s.seed, STREAM_SELECT)
        self._attack_rng = stream(s.seed, STREAM_ATTACK)
        self._model_attack = cfg.attack in MODEL_ATTACKS

    # ------------------------------------------------------------------ jobs

    def _train(self, node: VirtualNode) -> Job:
        """Local training from the current global model, clipped and noised (the node's release)."""
        return Job(node, node.client.release(self.model, self.global_flat), self.version, node.speed)

    def _send(self, jobs: list[Job]) -> list[Sent]:
        """What each job's node sends. Model attackers craft from what the honest nodes sent."""
        cap = self.cfg.fl.max_samples
        attacked = [self._model_attack and j.node.byzantine for j in jobs]
        sent: list[Sent | None] = [None if a else j.node.client.send(j.release, cap) for j, a in zip(jobs, attacked)]
        if any(attacked):
            mine = np.stack([j.release.vector for j, a in zip(jobs, attacked) if a])
            honest = [s.vector for s in sent if s is not None]
            params = dict(self.cfg.attack_params)
            if self.cfg.attack == "adaptive":
                params["accepts"] = self._rule_accepts
                # the holds are chain state: the oracle's rows are the honest updates, then the crafted ones
                order = [j for j, a in zip(jobs, attacked) if not a] + [j for j, a in zip(jobs, attacked) if a]
                self._oracle_held = self._held_mask(order)
                self._oracle_witness = witness_rows(self.witness, [j.node.node_id for j in order])
            crafted = craft_updates(self.cfg.attack, mine, np.stack(honest) if honest else mine, self._attack_rng,
                                    **params)
            rows = iter(crafted)
            sent = [s if s is not None else j.node.client.send(j.release, cap, next(rows)) for j, s in zip(jobs, sent)]
        return sent  # type: ignore[return-value]

    def _rule_accepts(self, observed: np.ndarray, crafted: np.ndarray) -> np.ndarray:
        """The adaptive attacker's oracle: which of ``crafted`` the chain's rule accepts next to
        ``observed`` (equal weights, no validation callback: what an outsider can run)."""
        s = self.cfg.fl
        rows = np.concatenate([observed, crafted]).astype(np.float32)
        res = self._aggregator(s.rule, rows, np.ones(len(rows)), trust=np.ones(len(rows)), seed=self.version + 1,
                               groups=self.groups, reference=self.reference(), held=self._oracle_held,
                               witness=self._oracle_witness, **s.rule_params)
        return np.asarray(res.accepted[len(observed):], dtype=bool)

    def _claims(self, jobs: list[Job], sent: list[Sent]) -> list[float]:
        """Claimed sample counts; Byzantine nodes lie with ``claimed_samples`` if set."""
        lie = self.cfg.claimed_samples
        return [lie if lie is not None and j.node.byzantine else float(s.num_samples) for j, s in zip(jobs, sent)]

    # ------------------------------------------------------------------ aggregation

    def _score(self, candidate_model: np.ndarray) -> float:
        """Public-evaluation accuracy of a candidate global model (the rule's ``evaluate``)."""
        set_flat(self.model, candidate_model)
        return evaluate(self.model, self.val.x, self.val.y)[0]

    def reference(self) -> np.ndarray | None:
        """The rule's reference: how the global model moved over the window (as a chain's)."""
        return drift(self.global_flat, self.bases[0])

    def _held_mask(self, jobs: list[Job]) -> np.ndarray:
        """Per job: is its node held (dropped against the drift and not accepted since)?"""
        return np.array([j.node.node_id in self.held for j in jobs], dtype=bool)

    def trust(self) -> dict[int, float]:
        """Each node's stake share (paper eq. 9)."""
        total = sum(n.stake for n in self.nodes)
        return {n.node_id: n.stake / total if total else 0.0 for n in self.nodes}

    def _selected(self, jobs: list[Job], sent: list[Sent]) -> list[int]:
        """Indices of the updates the round aggregates: all of them up to ``fl.max_updates``,
        else those the selection policy picks, ranked in sender order as a chain's pool ranks them."""
        s = self.cfg.fl
        if len(jobs) <= s.max_updates:
            return list(range(len(jobs)))
        # as the pool, one update per sender: its newest (a fast node's earlier one is superseded)
        newest = {j.node.node_id: i for i, j in sorted(enumerate(jobs), key=lambda ij: ij[1].base_version)}
        order = [newest[node] for node in sorted(newest)]
        if len(order) <= s.max_updates:
            return order
        trust = self.trust()
        claims = self._claims(jobs, sent)
        features = selection_features([jobs[i].waited for i in order], [trust[jobs[i].node.node_id] for i in order],
                                      [claims[i] for i in order], [self.version - jobs[i].base_version for i in order])
        return [order[i] for i in select_nodes(s.selection, features, s.max_updates, seed=self.version + 1)]

    def _aggregate(self, jobs: list[Job], sim_time: float, dropped: int, started: float) -> RoundStats:
        cfg = self.cfg
        sent = self._send(jobs)
        uploaded = [s.wire_bytes for s in sent]
        picked = self._selected(jobs, sent)
        jobs, sent = [jobs[i] for i in picked], [sent[i] for i in picked]
        staleness = np.array([self.version - j.base_version for j in jobs], dtype=np.float64)
        byz = np.array([j.node.byzantine for j in jobs])
        trust = self.trust()
        senders = [j.node.node_id for j in jobs]
        updates = np.stack([s.vector for s in sent])
        standing = round_factors(cfg.fl, self.standing, senders)
        claims = self._claims(jobs, sent)
        outcome = run_round(cfg.fl, self.global_flat, updates, claims,
                            staleness, [trust[j.node.node_id] for j in jobs], seed=self.version + 1,
                            evaluate=self._score, aggregator=self._aggregator, senders=senders,
                            groups=self.groups, reference=self.reference(), held=self._held_mask(jobs),
                            witness=witness_rows(self.witness, senders),
                            standing=standing)
        if applies(cfg.fl):
            self.standing = standing_after(self.standing, senders, outcome.accepted.tolist(), outcome.scores.tolist(),
                                           self.version)
        self.held = holds_after(self.held, senders, outcome.accepted.tolist(), outcome.reasons, self.version)
        self.witness = witness_after(self.witness, senders, feature_norms(updates, self.groups),
                                     outcome.accepted.tolist(), self.version)
        for job, change in zip(jobs, stake_changes(cfg.fl, outcome)):
            job.node.stake = max(0, job.node.stake + change)
        self.global_flat = outcome.model
        self.bases.append(self.global_flat)
        self.version += 1
        self.version_time.append(sim_time)
        acc = loss = None
        if self.version % cfg.eval_every == 0 or self.version == cfg.rounds:
            set_flat(self.model, self.global_flat)
            acc, loss = evaluate(self.model, self.fed.test.x, self.fed.test.y)
        accepted = outcome.accepted
        rejected = ~accepted
        eps = [e for e in (n.client.epsilon() for n in self.nodes) if e is not None]
        return RoundStats(
            round=self.version, sim_time=sim_time, accuracy=acc, loss=loss,
            train_loss=float(np.mean([j.release.loss for j in jobs])), num_updates=len(jobs),
            num_accepted=int(accepted.sum()), num_byzantine=int(byz.sum()),
            bytes_sent=sum(s.wire_bytes for s in sent), uploaded_bytes=sum(uploaded), candidates=len(uploaded),
            dense_bytes=dense_bytes(self.dim) * len(jobs),
            true_pos=int((rejected & byz).sum()), false_pos=int((rejected & ~byz).sum()),
            false_neg=int((accepted & byz).sum()), true_neg=int((accepted & ~byz).sum()),
            mean_staleness=float(staleness.mean()), dropped_stale=dropped,
            max_epsilon=max(eps, default=0.0), wall_time=time.perf_counter() - started, skipped=outcome.skipped,
            nodes=[j.node.node_id for j in jobs], byzantine=byz.tolist(), scores=outcome.scores.tolist(),
            standing=standing or [1.0] * len(jobs), verdicts=accepted.tolist(), claims=[float(c) for c in claims])

    # ------------------------------------------------------------------ modes

    def run(self) -> SimResult:
        """Run all rounds (fewer if every node has spent its privacy budget)."""
        rounds = self._run_sync() if self.cfg.mode == "sync" else self._run_async()
        byz = [n.node_id for n in self.nodes if n.byzantine]
        return SimResult(self.cfg, byz, rounds)

    def _select(self, r: int) -> list[VirtualNode]:
        cfg = self.cfg
        k = cfg.clients_per_round or cfg.num_nodes
        if cfg.participants is not None:
            chosen = [self.nodes[i] for i in sorted(set(cfg.participants[r]))]
        elif k == cfg.num_nodes:
            chosen = self.nodes
        else:
            idx = np.sort(self._select_rng.choice(cfg.num_nodes, k, replace=False))
            chosen = [self.nodes[i] for i in idx]
        return [n for n in chosen if n.client.can_release() and self._present(n)]

    def _present(self, node: VirtualNode) -> bool:
        """False for a Byzantine identity before the sybil burst (it does not exist yet)."""
        return not node.byzantine or self.version >= self.cfg.byzantine_from_round

    def _run_sync(self) -> list[RoundStats]:
        stats = []
        for r in range(self.cfg.rounds):
            started = time.perf_counter()
            chosen = self._select(r)
            if not chosen:
                if not any(n.client.can_release() for n in self.nodes):
                    break                     # every privacy budget is spent
                continue                      # nobody picked this round can take part
            jobs = [self._train(n) for n in chosen]
            stats.append(self._aggregate(jobs, float(r), 0, started))
        return stats

    def _run_async(self) -> list[RoundStats]:
        cfg = self.cfg
        buffer_size = cfg.clients_per_round or 1
        queue: list[tuple[float, int, Job]] = []

        def start(node: VirtualNode, now: float) -> None:
            if not self._present(node):     # joins at the burst: first job starts then
                late.append(node)
            elif node.client.can_release():
                heapq.heappush(queue, (now + node.speed, node.node_id, self._train(node)))

        started = time.perf_counter()
        late: list[VirtualNode] = []
        for node in self.nodes:
            start(node, 0.0)
        stats: list[RoundStats] = []
        buffer: list[Job] = []
        dropped = 0
        while queue and len(stats) < cfg.rounds:
            now, _, job = heapq.heappop(queue)
            job.waited = now - self.version_time[job.base_version]
            if self.version - job.base_version > cfg.fl.max_staleness:
                dropped += 1
            else:
                buffer.append(job)
            if len(buffer) == buffer_size:
                stats.append(self._aggregate(buffer, now, dropped, started))
                buffer, dropped, started = [], 0, time.perf_counter()
                if late and self.version >= cfg.byzantine_from_round:
                    joining, late[:] = list(late), []
                    for node in joining:
                        start(node, now)
            start(job.node, now)
        return stats

