"""Simulator settings and results.

One :class:`SimConfig` describes a whole experiment (data, partition, model, local training,
aggregation rule, attack, compression, privacy, sync or async timing, seed); the simulator is a
pure function of it, so a JSON dump of the config reproduces a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from learning.compression import DTYPES
from learning.models import MODEL_NAMES
from learning.partition import SCHEMES
from learning.train import LR_SCHEDULES, OPTIMIZERS

DATASETS = ("digits", "fashion_mnist", "synthetic", "cifar10")
MODES = ("sync", "async")


@dataclass
class SimConfig:
    """Everything that defines one simulated federation (defaults: 20 nodes, digits, FedAvg)."""

    # data and partition
    dataset: str = "digits"
    data_dir: str | None = None               # folder for fashion_mnist / cifar10
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    partition: str = "iid"                    # "natural" is the default sensible choice for synthetic
    dirichlet_alpha: float = 0.5              # also the quantity-skew concentration
    shards_per_client: int = 2
    min_samples: int = 2
    val_fraction: float = 0.1
    # model and local training
    model: str = "logreg"
    num_nodes: int = 20
    rounds: int = 20
    clients_per_round: int | None = None      # sync: nodes per round; async: updates per aggregation
    local_epochs: int = 1
    batch_size: int | None = 32               # None = full batch
    lr: float = 0.1
    lr_schedule: str = "constant"             # or "inv_sqrt": lr / sqrt(round + lr_beta)
    lr_beta: float = 1.0
    optimizer: str = "sgd"
    momentum: float = 0.0
    prox_mu: float = 0.0
    server_lr: float = 1.0                    # global model += server_lr * aggregate
    # aggregation
    rule: str = "fedavg"
    rule_params: dict[str, Any] = field(default_factory=dict)
    assumed_byzantine: int | None = None      # f given to the rule; None = ceil(fraction * updates)
    trust_decay: float = 0.8                  # trust <- decay * trust + (1 - decay) * accepted
    # attack
    attack: str | None = None
    byzantine_fraction: float = 0.0
    attack_params: dict[str, Any] = field(default_factory=dict)
    claimed_samples: float | None = None      # weight lie: the sample count Byzantine nodes report
    # compression (None = dense float32)
    topk_fraction: float | None = None
    compress_dtype: str = "float16"
    error_feedback: bool = True
    # differential privacy (None = off)
    clip_norm: float | None = None
    noise_multiplier: float = 0.0
    epsilon_budget: float | None = None       # None = track epsilon without a cap
    dp_delta: float = 1e-5
    # timing
    mode: str = "sync"
    staleness_a: float = 0.5                  # FedAsync polynomial: weight (1 + staleness)^-a
    max_staleness: int = 4                    # older updates are dropped
    speed_sigma: float = 0.5                  # lognormal spread of node speeds (async)
    # evaluation
    seed: int = 0
    eval_every: int = 1
    server_val_size: int = 500                # validation samples the rule's evaluate() uses

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent setting."""
        checks: list[tuple[bool, str]] = [
            (self.dataset in DATASETS, f"dataset must be one of {DATASETS}"),
            (self.partition in SCHEMES, f"partition must be one of {SCHEMES}"),
            (self.partition != "natural" or self.dataset == "synthetic", "only synthetic data has a natural partition"),
            (self.model in MODEL_NAMES, f"model must be one of {MODEL_NAMES}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.mode in MODES, f"mode must be one of {MODES}"),
            (self.compress_dtype in DTYPES, f"compress_dtype must be one of {DTYPES}"),
            (self.num_nodes >= 1 and self.rounds >= 1, "num_nodes and rounds must be >= 1"),
            (self.clients_per_round is None or 1 <= self.clients_per_round <= self.num_nodes,
             "clients_per_round must be in [1, num_nodes]"),
            (self.local_epochs >= 1 and self.eval_every >= 1, "local_epochs and eval_every must be >= 1"),
            (self.lr > 0 and self.server_lr > 0, "lr and server_lr must be > 0"),
            (0.0 <= self.byzantine_fraction < 1.0, "byzantine_fraction must be in [0, 1)"),
            (self.attack is not None or self.byzantine_fraction == 0, "byzantine_fraction needs an attack"),
            (self.claimed_samples is None or (math.isfinite(self.claimed_samples) and self.claimed_samples > 0),
             "claimed_samples must be a positive finite number"),
            (self.attack is not None or self.claimed_samples is None, "claimed_samples needs an attack"),
            (self.topk_fraction is None or 0 < self.topk_fraction <= 1, "topk_fraction must be in (0, 1]"),
            (self.clip_norm is None or self.clip_norm > 0, "clip_norm must be > 0"),
            (self.noise_multiplier >= 0, "noise_multiplier must be >= 0"),
            (self.epsilon_budget is None or self.epsilon_budget > 0, "epsilon_budget must be > 0"),
            (self.clip_norm is not None or self.noise_multiplier == 0, "noise needs a clip_norm"),
            (self.max_staleness >= 0 and self.staleness_a >= 0, "max_staleness and staleness_a must be >= 0"),
            (0.0 <= self.trust_decay < 1.0, "trust_decay must be in [0, 1)"),
            (self.server_val_size >= 1, "server_val_size must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid simulation config: {message}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RoundStats:
    """Metrics of one aggregation (one round in sync mode, one buffer flush in async mode)."""

    round: int
    sim_time: float              # simulated clock (async) or round index (sync)
    accuracy: float | None       # test accuracy of the new global model (None between evaluations)
    loss: float | None
    train_loss: float            # mean local training loss of the updates in this round
    num_updates: int
    num_accepted: int
    num_byzantine: int
    bytes_sent: int              # exact msgpack bytes of the updates' to_wire() form (4 * d each if dense)
    dense_bytes: int             # the same updates as raw dense float32, 4 * d each
    true_pos: int                # rejected and Byzantine
    false_pos: int               # rejected but honest
    false_neg: int               # accepted but Byzantine
    true_neg: int
    mean_staleness: float
    dropped_stale: int
    max_epsilon: float           # largest epsilon spent by any node so far (0 without DP)
    wall_time: float             # seconds of real time this round took
    nodes: list[int] = field(default_factory=list)        # sender of each update, in order
    byzantine: list[bool] = field(default_factory=list)   # ground truth per update
    scores: list[float] = field(default_factory=list)     # the rule's suspicion per update (for ROC)


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
