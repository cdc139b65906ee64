"""Shared builders for the FL node tests: signed model updates over the real compression code."""

from __future__ import annotations

import numpy as np

from gossip.crypto import KeyPair, sha256
from learning.compression import k_for, sparsify
from node.fl.update import ModelUpdate
from tests.consensus.helpers import CHAIN

BASE = sha256(b"base model")
"""A stand-in global model hash for tests that need no real model."""


def make_update(key: KeyPair, delta: np.ndarray, *, base_hash: bytes = BASE, base_height: int = 0, seq: int = 1,
                samples: int = 10, loss: float = 0.5, chain_id: str = CHAIN, topk: float = 1.0,
                dtype: str = "float32") -> ModelUpdate:
    """``delta`` top-k sparsified as a trainer would send it, signed by ``key``."""
    sparse = sparsify(np.asarray(delta, dtype=np.float32), k_for(len(delta), topk), dtype)
    return ModelUpdate(chain_id, key.node_id, seq, base_hash, base_height, samples, loss, sparse).signed(key)


def honest_deltas(n: int, dim: int, seed: int, spread: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` updates scattered around a common direction (what honest clients send), and that
    direction."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=dim)
    return (mu + spread * rng.normal(size=(n, dim))).astype(np.float32), mu.astype(np.float32)
