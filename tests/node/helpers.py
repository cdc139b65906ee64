"""Shared builders for the FL node tests: signed model updates over the real compression code, and
the chain context several in-process FLApps (the delegates of a 4-node chain) share."""

from __future__ import annotations

import numpy as np

from consensus.app import BlockContext
from consensus.header import EMPTY_HASH, BlockHeader, SignedHeader
from consensus.state import ChainState
from gossip import Envelope, Verdict
from gossip.crypto import KeyPair, sha256
from learning.attacks import craft_updates
from learning.compression import k_for, sparsify
from node.fl.app import TOPIC_UPDATE, FLApp
from node.fl.settings import FLSettings
from node.fl.update import ModelUpdate
from tests.consensus.helpers import CHAIN, IDS, KEYS, genesis

BASE = sha256(b"base model")
"""A stand-in global model hash for tests that need no real model."""

SETTINGS = FLSettings()
GENESIS = genesis(4, app=SETTINGS.to_app_state())
STATE = ChainState.from_genesis(GENESIS)


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


def ctx(height: int = 1, producer: int = 0, *, slot: int | None = None, state: ChainState = STATE,
        header: SignedHeader | None = None, attempt: int = 0, retry: bool = False) -> BlockContext:
    """Block ``height`` in slot ``height - 1 + attempt`` unless told otherwise."""
    return BlockContext(height, height - 1 + attempt if slot is None else slot, IDS[producer], state.last_block_hash,
                        10 * height, state, header, attempt=attempt, retry=retry)


def signed_header(key: KeyPair, payload: bytes, *, height: int = 1, slot: int = 0, chain_id: str = CHAIN,
                  state: ChainState = STATE) -> SignedHeader:
    """A proposal header naming ``payload``, signed by ``key``."""
    header = BlockHeader(chain_id, height, slot, 10 * height, state.last_block_hash, key.node_id, EMPTY_HASH,
                         sha256(payload), EMPTY_HASH, EMPTY_HASH, state.root(), b"")
    return SignedHeader(header, key.sign(header.signed_bytes()))


def round_updates(app: FLApp, flipped: bool = True) -> list[ModelUpdate]:
    """Updates from the four members on the app's current model, each of norm 1 (clipped as a
    trainer clips); the last one sign-flipped and of norm 1.9 (an outlier, yet within the norm bound
    admission allows, twice the clip with no update noise)."""
    honest, _ = honest_deltas(4, app.dim, seed=app.model_height, spread=0.5)
    deltas = honest / np.linalg.norm(honest, axis=1, keepdims=True)
    if flipped:
        flip = craft_updates("sign_flip", deltas[3:], deltas[:3], np.random.default_rng(0), scale=3.0)[0]
        deltas[3] = flip * (1.9 / np.linalg.norm(flip))
    return [make_update(KEYS[i], d, base_hash=app.model_hash, base_height=app.model_height, samples=50 + i,
                        topk=SETTINGS.topk_fraction, dtype=SETTINGS.encoding) for i, d in enumerate(deltas)]


def admit_all(apps: list[FLApp], updates: list[ModelUpdate]) -> None:
    for app in apps:
        for u in updates:
            assert app.admit(u) is None


async def screen(app: FLApp, update: ModelUpdate | bytes) -> Verdict:
    """What ``app``'s gossip validator makes of ``update`` relayed by member 1."""
    body = update if isinstance(update, bytes) else update.encode()
    return await app.validate_update_msg(Envelope(TOPIC_UPDATE, IDS[1], 1, body, b""))


async def advance_empty(app: FLApp, heights: range) -> None:
    """Finalize blocks that aggregate nothing (no update waits)."""
    for h in heights:
        app.finalize_block(ctx(h), await app.prepare_payload(ctx(h)))
