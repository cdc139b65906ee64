"""Simulator settings and results.

A :class:`SimConfig` is the chain's FL settings (:class:`learning.settings.FLSettings`, with the
product's defaults) plus what only a simulation has: how many nodes, how many rounds, how fast
each is, who attacks and how. The simulator is a pure function of it, so a JSON dump of the
config reproduces a run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from learning.settings import FLSettings

MODES = ("sync", "async")
INITIAL_STAKE = 100
"""Stake of every node at the start (``consensus.genesis.make_genesis``'s default for testnets)."""


@dataclass
class SimConfig:
    """A simulated federation: the FL settings every node runs, and the simulation's own knobs."""

    fl: FLSettings = field(default_factory=FLSettings)
    num_nodes: int = 20
    rounds: int = 20
    clients_per_round: int | None = None      # sync: nodes per round; async: updates per aggregation
    participants: list[list[int]] | None = None   # sync: the nodes of each round, replaying a chain's blocks
    mode: str = "sync"
    speed_sigma: float = 0.5                  # lognormal spread of node speeds (async)
    # data heterogeneity the FL settings leave to the data set
    synthetic_alpha: float = 1.0              # FedProx Synthetic(alpha, beta)
    synthetic_beta: float = 1.0
    shards_per_client: int = 2
    min_samples: int = 2
    # attack
    attack: str | None = None
    byzantine_fraction: float = 0.0
    attack_params: dict[str, Any] = field(default_factory=dict)
    claimed_samples: float | None = None      # weight lie: what Byzantine nodes claim, past any declared cap
    byzantine_from_round: int = 0             # sybil burst: Byzantine identities stay silent until this round
    # chain state, noise and evaluation
    initial_stake: int = INITIAL_STAKE        # trust = stake share; rounds reward and penalize as a chain does
    noise_seed: int | None = None             # DP noise stream (None: fl.seed); vary it alone to see what noise moves
    eval_every: int = 1

    @classmethod
    def of(cls, **fields: Any) -> SimConfig:
        """A config from one flat mapping: :class:`FLSettings` fields go to ``fl`` (the rest of the
        FL settings keep the product's defaults), every other key is a simulation knob."""
        fl_names = {f.name for f in dataclasses.fields(FLSettings)}
        fl = FLSettings(**{k: v for k, v in fields.items() if k in fl_names})
        return cls(fl=fl, **{k: v for k, v in fields.items() if k not in fl_names})

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        self.fl.validate()
        checks: list[tuple[bool, str]] = [
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.num_nodes >= 1 and self.rounds >= 1, "num_nodes and rounds must be >= 1"),
            (self.fl.clients in (0, self.num_nodes), "fl.clients must be 0 or num_nodes (one shard per node)"),
            (self.clients_per_round is None or 1 <= self.clients_per_round <= self.num_nodes,
             "clients_per_round must be in [1, num_nodes]"),
            (self.eval_every >= 1, "eval_every must be >= 1"),
            (self.participants is None or (self.mode == "sync" and len(self.participants) == self.rounds and all(
                p and all(0 <= i < self.num_nodes for i in p) for p in self.participants)),
             "participants must name, for each of the rounds of a sync run, nodes in [0, num_nodes)"),
            (0.0 <= self.byzantine_fraction < 1.0, "byzantine_fraction must be in [0, 1)"),
            (self.attack is not None or self.byzantine_fraction == 0, "byzantine_fraction needs an attack"),
            (self.claimed_samples is None or (math.isfinite(self.claimed_samples) and self.claimed_samples > 0),
             "claimed_samples must be a positive finite number"),
            (self.attack is not None or self.claimed_samples is None, "claimed_samples needs an attack"),
            (self.initial_stake >= 1, "initial_stake must be >= 1"),
            (0 <= self.byzantine_from_round < self.rounds, "byzantine_from_round must be in [0, rounds)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid simulation config: {message}")

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-ready: what :meth:`of` reads back."""
        out = asdict(self)
        return {**out.pop("fl"), **out}


@dataclass
class RoundStats:
    """Metrics of one aggregation (one round in sync mode, one buffer flush in async mode)."""

    round: int
    sim_time: float              # simulated clock (async) or round index (sync)
    accuracy: float | None       # test accuracy of the new global model (None between evaluations)
    loss: float | None
    train_loss: float            # mean local training loss of the updates in this round
    num_updates: int             # updates aggregated (selected, if more arrived than fl.max_updates)
    num_accepted: int
    num_byzantine: int
    bytes_sent: int              # exact msgpack bytes of the aggregated updates' to_wire() form (4 * d each if dense)
    uploaded_bytes: int          # the same for every update that arrived this round, selected or not
    candidates: int              # updates that arrived this round (>= num_updates)
    dense_bytes: int             # the same updates as raw dense float32, 4 * d each
    true_pos: int                # rejected and Byzantine
    false_pos: int               # rejected but honest
    false_neg: int               # accepted but Byzantine
    true_neg: int
    mean_staleness: float
    dropped_stale: int
    max_epsilon: float           # largest epsilon spent by any node so far (0 without DP)
    wall_time: float             # seconds of real time this round took
    skipped: str = ""            # why the round was skipped (model unchanged), '' if it was not
    nodes: list[int] = field(default_factory=list)        # sender of each update, in order
    byzantine: list[bool] = field(default_factory=list)   # ground truth per update
    scores: list[float] = field(default_factory=list)     # the rule's suspicion per update (for ROC)
    standing: list[float] = field(default_factory=list)   # each sender's standing factor (1 when not applied)
    verdicts: list[bool] = field(default_factory=list)    # accepted, per update
    claims: list[float] = field(default_factory=list)     # claimed sample count, per update


@dataclass
class SimResult:
    """A finished run: its config, the Byzantine node ids, and one :class:`RoundStats` per round."""

    config: SimConfig
    byzantine: list[int]
    rounds: list[RoundStats]

    def final_accuracy(self) -> float:
        accs = [r.accuracy for r in self.rounds if r.accuracy is not None]
        if not accs:
            raise ValueError("no round was evaluated")
        return accs[-1]

    def summary(self) -> dict[str, Any]:
        """Totals over the run: accuracy, bytes, detection precision/recall, wall time."""
        tp = sum(r.true_pos for r in self.rounds)
        fp = sum(r.false_pos for r in self.rounds)
        fn = sum(r.false_neg for r in self.rounds)
        sent = sum(r.bytes_sent for r in self.rounds)
        dense = sum(r.dense_bytes for r in self.rounds)
        accs = [r.accuracy for r in self.rounds if r.accuracy is not None]
        return {
            "rounds": len(self.rounds),
            "final_accuracy": accs[-1] if accs else None,
            "best_accuracy": max(accs) if accs else None,
            "bytes_sent": sent,
            "dense_bytes": dense,
            "compression_ratio": dense / sent if sent else None,
            "detection_precision": tp / (tp + fp) if tp + fp else None,
            "detection_recall": tp / (tp + fn) if tp + fn else None,
            "wall_time": sum(r.wall_time for r in self.rounds),
        }

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON-ready (an infinite suspicion score, i.e. excluded outright, becomes None)."""
        rounds = []
        for r in self.rounds:
            row = asdict(r)
            row["scores"] = [s if math.isfinite(s) else None for s in r.scores]
            rounds.append(row)
        return {"config": self.config.to_dict(), "byzantine": self.byzantine, "rounds": rounds,
                "summary": self.summary()}
