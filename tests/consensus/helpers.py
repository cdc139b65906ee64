"""Shared builders for the chain-state tests: deterministic keys, signed txs, blocks, evidence."""

from __future__ import annotations

from consensus.block import Block
from consensus.equivocation import Evidence
from consensus.genesis import Genesis, make_genesis
from consensus.header import EMPTY_HASH, BlockHeader, merkle_root
from consensus.messages import Commit, Vote
from consensus.state import ChainState
from consensus.tx import Tx
from gossip.crypto import KeyPair, sha256

CHAIN = "test-chain"
KEYS = sorted((KeyPair.from_seed(bytes([i + 1]) * 32) for i in range(8)), key=lambda k: k.node_id)
"""Eight deterministic key pairs, sorted by node id (so KEYS[0] has the smallest id)."""
IDS = [k.node_id for k in KEYS]
OUTSIDER = KeyPair.from_seed(b"\x77" * 32)
"""A key that has no account in any test genesis."""


def genesis(n: int = 4, **overrides) -> Genesis:
    """The first ``n`` keys as accounts with stake 100 and balance 1000."""
    return make_genesis(CHAIN, IDS[:n], **overrides)


def state(n: int = 4, **overrides) -> ChainState:
    return ChainState.from_genesis(genesis(n, **overrides))


def tx(key: KeyPair, kind: str, args: list, nonce: int = 1, chain_id: str = CHAIN) -> Tx:
    return Tx(kind, chain_id, key.node_id, nonce, args).signed(key)


def block_hash(height: int, salt: bytes = b"") -> bytes:
    return sha256(b"block-%d-" % height + salt)


def run_block(st: ChainState, producer: str | None = None, txs: tuple[Tx, ...] | list[Tx] = (),
              missed: list[str] | None = None, evidence: tuple[Evidence, ...] = (),
              stake_changes: list | None = None) -> bool:
    """Apply one block through the engine's call sequence; returns end_block's verdict."""
    height = st.height + 1
    st.begin_block(height, block_hash(height), producer or st.delegates[0], missed or [])
    for ev in evidence:
        assert st.apply_evidence(ev) is None
    for t in txs:
        st.apply_tx(t)
    st.apply_stake_changes(stake_changes or [])
    return st.end_block()


def double_precommit(key: KeyPair, height: int, chain_id: str = CHAIN) -> Evidence:
    a = Vote("precommit", chain_id, height, 0, sha256(b"a%d" % height), key.node_id).signed(key)
    b = Vote("precommit", chain_id, height, 0, sha256(b"b%d" % height), key.node_id).signed(key)
    return Evidence("double_precommit", a, b)


def history(st: ChainState, amount: int = 30) -> ChainState:
    """Three blocks that touch every part of the state (a transfer opening an account, votes,
    a missed slot, unbonding, stake changes, evidence); ``amount`` varies the transfer."""
    a, b, c, d = KEYS[:4]
    run_block(st, txs=[tx(a, "transfer", [OUTSIDER.node_id, amount]), tx(b, "vote", [[IDS[2], IDS[3]]])])
    run_block(st, producer=IDS[1], missed=[IDS[2]], txs=[tx(c, "unstake", [10])],
              stake_changes=[(IDS[3], 7, "update"), (IDS[0], -2, "rejected")])
    run_block(st, producer=IDS[2], evidence=(double_precommit(d, 2),))
    return st


def make_block(st: ChainState, key: KeyPair, txs: tuple[Tx, ...] = (), payload: bytes = b"",
               slot: int | None = None) -> Block:
    """A signed block extending ``st`` (the state after the parent) by ``key``."""
    height = st.height + 1
    header = BlockHeader(
        chain_id=st.chain_id, height=height, slot=height if slot is None else slot, timestamp_ms=1000 * height,
        parent_hash=st.last_block_hash, producer=key.node_id, txs_hash=merkle_root([t.hash for t in txs]),
        payload_hash=sha256(payload), evidence_hash=EMPTY_HASH, last_commit_hash=EMPTY_HASH,
        state_root=st.root(), app_hash=b"")
    return Block(header, key.sign(header.signed_bytes()), tuple(txs), payload)


def commit_for(block: Block, keys: list[KeyPair], rnd: int = 0) -> Commit:
    sigs = []
    for k in sorted(keys, key=lambda k: k.node_id):
        vote = Vote("precommit", block.header.chain_id, block.height, rnd, block.hash, k.node_id).signed(k)
        sigs.append((k.node_id, vote.signature))
    return Commit(block.height, rnd, block.hash, tuple(sigs))


def finalize(st: ChainState, block: Block) -> ChainState:
    """The state after ``block`` (a copy; ``st`` is unchanged)."""
    nxt = st.copy()
    nxt.begin_block(block.height, block.hash, block.header.producer, [])
    for t in block.txs:
        nxt.apply_tx(t)
    nxt.end_block()
    return nxt
