"""Full block validation (what a voting delegate and a syncing node both run).

A real chain of signed CounterApp blocks is grown in process; each test builds the genuine next
block and then one variant that breaks exactly one rule, and checks the reason given for it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from consensus.equivocation import Evidence
from consensus.messages import Commit
from consensus.validation import check_header, validate_block
from gossip.codec import pack
from gossip.crypto import sha256
from tests.consensus.chain import KEY_OF, Chain
from tests.consensus.helpers import (
    IDS,
    KEYS,
    OUTSIDER,
    commit_for,
    double_precommit,
    tx,
)


@pytest.fixture
async def chain() -> Chain:
    """A chain with its first block final (slot 0); the next block is height 2."""
    c = Chain()
    first = await c.propose(0)
    assert await c.validate(first) is None
    c.finalize(first)
    return c


def other_than(producer: str) -> str:
    return next(i for i in IDS[:4] if i != producer)


async def test_genuine_blocks_validate_and_chain(chain: Chain) -> None:
    for slot in (1, 2, 3):
        block = await chain.propose(slot)
        assert check_header(block, chain.tip(), block.header.timestamp_ms) is None
        assert await chain.validate(block) is None
        chain.finalize(block)
    assert chain.state.height == 4


async def test_block_with_txs_and_evidence_validates(chain: Chain) -> None:
    txs = (tx(KEYS[1], "transfer", [IDS[2], 5]), tx(KEYS[2], "stake", [7]))
    block = await chain.propose(1, txs=txs, evidence=(double_precommit(KEYS[3], 1),))
    assert await chain.validate(block) is None
    chain.finalize(block)
    assert chain.state.account(IDS[3]).jailed_until > 2


async def test_skipped_slots_count_as_missed_turns(chain: Chain) -> None:
    block = await chain.propose(3)
    tip = chain.tip()
    assert tip.missed(3) == [tip.schedule.proposer(1), tip.schedule.proposer(2)]
    assert await chain.validate(block) is None
    # a halt of many slots charges at most one cycle of turns
    assert tip.missed(40) == [tip.schedule.proposer(s) for s in range(36, 40)]


BAD_BLOCKS: dict[str, tuple[Any, str]] = {
    # name: (function of the chain returning propose() keyword arguments, expected reason)
    "wrong chain id": (lambda c: {"chain_id": "other-chain"}, "wrong chain id"),
    "wrong height": (lambda c: {"height": 3}, "height 3 is not the next height 2"),
    "wrong parent": (lambda c: {"parent_hash": sha256(b"elsewhere")}, "parent hash is not the last final block"),
    "slot not advancing": (lambda c: {"slot": 0}, "slot does not advance past the parent's"),
    "wrong producer": (lambda c: {"producer": other_than(c.proposer(1))}, "is not the proposer of slot 1"),
    "timestamp early": (lambda c: {"timestamp": c.start(1) - c.genesis.max_clock_drift_ms - 1},
                        "timestamp outside its slot"),
    "timestamp late": (lambda c: {"timestamp": c.start(2) + c.genesis.max_clock_drift_ms},
                       "timestamp outside its slot"),
    "bad signature": (lambda c: {"key": KEY_OF[other_than(c.proposer(1))]}, "bad producer signature"),
    "txs hash": (lambda c: {"txs_hash": sha256(b"x")}, "txs_hash does not match transactions"),
    "payload hash": (lambda c: {"payload_hash": sha256(b"x")}, "payload_hash does not match payload"),
    "evidence hash": (lambda c: {"evidence_hash": sha256(b"x")}, "evidence_hash does not match evidence"),
    "last commit hash": (lambda c: {"last_commit_hash": sha256(b"x")},
                         "last_commit_hash does not match last commit"),
    "state root": (lambda c: {"state_root": sha256(b"x")}, "state root mismatch"),
    "app hash": (lambda c: {"app_hash": sha256(b"x")}, "app hash mismatch"),
    "missing last commit": (lambda c: {"last_commit": None}, "last commit: missing commit for height 1"),
    "short last commit": (lambda c: {"last_commit": commit_for(c.blocks[-1], KEYS[:2])},
                          "last commit: commit has 2 signatures, needs 3"),
    "last commit for another block": (
        lambda c: {"last_commit": replace(c.commit, block_hash=sha256(b"x"))},
        "last commit: commit is for another block"),
    "last commit by outsider": (lambda c: {"last_commit": commit_for(c.blocks[-1], [KEYS[0], KEYS[1], OUTSIDER])},
                                "last commit: commit signed by non-delegate"),
    "forged last commit": (
        lambda c: {"last_commit": replace(c.commit, signatures=tuple((v, b"\x00" * 64) for v, _ in c.commit.signatures))},
        "last commit: bad commit signature"),
    "tx with wrong nonce": (lambda c: {"txs": (tx(KEYS[1], "stake", [1], nonce=5),)},
                            "nonce 5 is not the sender's next nonce 1"),
    "tx with bad signature": (lambda c: {"txs": (replace(tx(KEYS[1], "stake", [1]), signature=b"\x01" * 64),)},
                              ": bad signature"),
    "tx over balance": (lambda c: {"txs": (tx(KEYS[1], "transfer", [IDS[2], 10**6]),)}, "balance 1000 is less"),
    "evidence of outsider": (lambda c: {"evidence": (double_precommit(OUTSIDER, 1),)},
                             "evidence: offender"),
    "evidence not a double sign": (
        lambda c: {"evidence": (Evidence("double_precommit", double_precommit(KEYS[3], 1).first,
                                         double_precommit(KEYS[3], 1).first),)},
        "evidence: precommits are for the same block"),
    "evidence from the future": (lambda c: {"evidence": (double_precommit(KEYS[3], 9),)},
                                 "evidence: evidence from height 9 is ahead of block 2"),
    "payload off the chain": (lambda c: {"payload": pack([2, sha256(b"wrong")])},
                              "payload: counter payload does not extend the digest chain"),
    "payload for another height": (lambda c: {"payload": pack([3, sha256(b"wrong")])},
                                   "payload: counter payload does not extend"),
    "payload not msgpack": (lambda c: {"payload": b"\xc1"}, "payload: counter payload: "),
}


@pytest.mark.parametrize("name", list(BAD_BLOCKS))
async def test_each_broken_rule_is_reported(chain: Chain, name: str) -> None:
    make_kwargs, reason = BAD_BLOCKS[name]
    kwargs = make_kwargs(chain)
    slot = kwargs.pop("slot", 1)
    block = await chain.propose(slot, **kwargs)
    state_before, app_before = chain.state.to_bytes(), chain.app.app_hash()
    got = await chain.validate(block)
    assert got is not None and reason in got, got
    assert chain.state.to_bytes() == state_before and chain.app.app_hash() == app_before  # no trace left


async def test_timestamp_in_the_future(chain: Chain) -> None:
    block = await chain.propose(1)
    drift = chain.genesis.max_clock_drift_ms
    assert await chain.validate(block, now_ms=block.header.timestamp_ms - drift) is None
    reason = await chain.validate(block, now_ms=block.header.timestamp_ms - drift - 1)
    assert reason == "timestamp too far in the future"


async def test_timestamp_not_after_the_parent() -> None:
    c = Chain()
    late = c.start(1) + c.genesis.max_clock_drift_ms - 100   # slot 0's block, stamped late within the drift
    first = await c.propose(0, timestamp=late)
    assert await c.validate(first) is None
    c.finalize(first)
    early = await c.propose(1, timestamp=late)               # inside slot 1's window, but not after the parent
    assert await c.validate(early) == "timestamp not after the parent's"


async def test_first_block_must_not_carry_a_commit() -> None:
    c = Chain()
    stray = Commit(0, 0, sha256(b"x"), ())
    block = await c.propose(0, last_commit=stray)
    assert await c.validate(block) == "first block carries a commit"


async def test_block_too_large() -> None:
    c = Chain(max_block_bytes=1024, max_tx_bytes=1024, max_votes=10)
    block = await c.propose(0, payload=b"\x00" * 1100)
    assert await c.validate(block) == "block too large"


async def test_too_many_transactions() -> None:
    c = Chain(max_block_txs=1)
    block = await c.propose(0, txs=(tx(KEYS[1], "stake", [1]), tx(KEYS[2], "stake", [1])))
    assert await c.validate(block) == "too many transactions"


async def test_own_block_skips_only_the_payload_check(chain: Chain) -> None:
    block = await chain.propose(1, payload=pack([2, sha256(b"wrong")]))
    assert await chain.validate(block, own=True) is None
    broken = await chain.propose(1, state_root=sha256(b"x"))
    assert await chain.validate(broken, own=True) == "state root mismatch"


async def test_verified_tx_signatures_are_not_rechecked(chain: Chain) -> None:
    forged = replace(tx(KEYS[1], "stake", [1]), signature=b"\x01" * 64)
    block = await chain.propose(1, txs=(forged,))
    tip = chain.tip()
    tip.is_verified = lambda h: h == forged.hash  # the mempool already checked this signature
    assert await validate_block(block, tip, block.header.timestamp_ms) is None


async def test_context_carries_the_signed_header(chain: Chain) -> None:
    block = await chain.propose(1)
    ctx = chain.tip().context(block)
    assert (ctx.height, ctx.slot, ctx.producer, ctx.parent_hash) == (2, 1, block.header.producer,
                                                                     chain.blocks[-1].hash)
    assert ctx.state is chain.state and ctx.signed_header.verify_signature()
