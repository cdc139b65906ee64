"""UpdatePool: one update per sender per base model, equivocations kept as evidence, bounded,
pruned by base height, and the selection a proposer makes (which verifiers re-run in the same
order)."""

from __future__ import annotations

import numpy as np
import pytest

from gossip.crypto import sha256
from learning.selection import select_nodes
from node.fl.pool import EQUIVOCATION, EQUIVOCATION_KNOWN, UpdatePool
from node.fl.update import ModelUpdate
from tests.consensus.helpers import IDS, KEYS
from tests.node.helpers import make_update

DIM = 8
B0, B1, B2 = (sha256(b"model %d" % h) for h in range(3))
RECENT = {0: B0, 1: B1, 2: B2}


def upd(i: int, base_height: int = 2, seq: int = 1, samples: int = 10) -> ModelUpdate:
    delta = np.full(DIM, float(i + 1) + seq / 100, dtype=np.float32)
    return make_update(KEYS[i], delta, base_hash=RECENT.get(base_height, sha256(b"unknown")),
                       base_height=base_height, seq=seq, samples=samples)


def everyone(node_id: str) -> bool:
    return True


def NONE_BANNED(key: tuple) -> bool:
    return False


def test_add_and_get() -> None:
    pool = UpdatePool()
    u = upd(0)
    assert pool.add(u) is None
    assert len(pool) == 1 and pool.get(u.id) is u and pool.get(sha256(b"none")) is None


def test_duplicate_is_refused() -> None:
    pool = UpdatePool()
    u = upd(0)
    pool.add(u)
    assert pool.add(u) == "duplicate"
    assert pool.add(ModelUpdate.from_wire(u.to_wire(), DIM)) == "duplicate"  # same bytes from a peer
    assert len(pool) == 1


def test_second_update_for_one_base_is_evidence_not_admitted() -> None:
    pool = UpdatePool()
    first, second = upd(0, seq=1), upd(0, seq=2)
    pool.add(first)
    assert pool.add(second) == EQUIVOCATION
    assert pool.add(upd(0, seq=3)) == EQUIVOCATION_KNOWN and pool.add(second) == EQUIVOCATION_KNOWN
    assert pool.evidence() == [((IDS[0], 2), first.id, second)] and pool.get(second.id) is second
    assert pool.add(upd(0, base_height=1)) is None  # another base is fine
    assert pool.add(upd(1)) is None                 # another sender too
    assert len(pool) == 3
    # the equivocator's update for that base is not eligible; its update for another base is
    assert [p.update.base_key for p in pool.eligible(RECENT, everyone, NONE_BANNED)] == [(IDS[0], 1), (IDS[1], 2)]


def test_an_update_for_a_base_a_final_block_already_used() -> None:
    pool = UpdatePool()
    used, late = upd(0, seq=1), upd(0, seq=2)
    assert pool.add(used, claimed=used.id) == "duplicate"
    assert pool.add(late, claimed=used.id) == EQUIVOCATION
    assert pool.evidence() == [((IDS[0], 2), used.id, late)]


def test_capacity() -> None:
    pool = UpdatePool(capacity=2)
    first = upd(0)
    assert pool.add(first) is None and pool.add(upd(1)) is None
    assert pool.add(upd(2)) == "full"
    pool.settle({first.base_key: first.id}, set())
    assert pool.add(upd(2)) is None
    assert len(pool) == 2


def test_settle_drops_what_a_block_used_and_turns_a_different_pending_update_into_evidence() -> None:
    pool = UpdatePool()
    mine, theirs, other = upd(0), upd(1, seq=1), upd(2)
    for u in (mine, theirs, other):
        pool.add(u)
    considered_instead = upd(1, seq=2)  # the block considered another update of sender 1 for base 2
    pool.settle({mine.base_key: mine.id, theirs.base_key: considered_instead.id}, set())
    assert [p.update for p in pool.eligible(RECENT, everyone, NONE_BANNED)] == [other]
    assert pool.evidence() == [((IDS[1], 2), considered_instead.id, theirs)]
    pool.settle({}, {(IDS[1], 2)})  # punished: the evidence is used up
    assert pool.evidence() == []


def test_prune_by_base_height() -> None:
    pool = UpdatePool()
    old, mid, new = upd(0, base_height=0), upd(1, base_height=1), upd(2, base_height=2)
    for u in (old, mid, new):
        pool.add(u)
    pool.prune(1)
    assert pool.get(old.id) is None and pool.get(mid.id) is mid and pool.get(new.id) is new
    assert pool.add(upd(0, base_height=0, seq=9)) is None  # the pruned update's slot is free again
    pool.add(upd(1, base_height=1, seq=9))
    assert pool.evidence() != []
    pool.prune(2)
    assert pool.evidence() == []  # evidence goes with its base


def test_on_base() -> None:
    pool = UpdatePool()
    a, b, c = upd(0, base_height=1), upd(1, base_height=1), upd(2, base_height=2)
    for u in (a, b, c):
        pool.add(u)
    assert {u.id for u in pool.on_base(B1)} == {a.id, b.id}
    assert pool.on_base(sha256(b"nothing")) == []


def test_eligible_is_newest_recent_base_per_member() -> None:
    pool = UpdatePool()
    a_old, a_new = upd(0, base_height=0), upd(0, base_height=2)
    b_old = upd(1, base_height=1)
    c_unknown_height = upd(2, base_height=3)                              # a base this node never saw
    d_wrong_hash = make_update(KEYS[3], np.ones(DIM), base_hash=sha256(b"fork"), base_height=2)
    e_outsider = upd(4, base_height=2)
    for u in (a_new, a_old, b_old, c_unknown_height, d_wrong_hash, e_outsider):
        assert pool.add(u) is None
    members = set(IDS[:4])
    chosen = pool.eligible(RECENT, members.__contains__, NONE_BANNED)
    assert [p.update.id for p in chosen] == [u.id for u in sorted([a_new, b_old], key=lambda u: u.sender)]
    # a sender punished for equivocating on a base is not aggregated on it
    assert [p.update.id for p in pool.eligible(RECENT, members.__contains__, {(IDS[0], 2)}.__contains__)] == \
        [a_old.id, b_old.id]
    # a base that left the recent window makes its updates ineligible
    assert [p.update.id for p in pool.eligible({2: B2}, members.__contains__, NONE_BANNED)] == [a_new.id]


def test_select_takes_all_eligible_under_the_limit_sorted_by_sender() -> None:
    pool = UpdatePool()
    ups = [upd(i) for i in (3, 0, 2, 1)]
    for u in ups:
        pool.add(u)
    chosen = pool.select(RECENT, everyone, NONE_BANNED, 2, 10, "random", lambda s: 0.0, seed=1, model_since_s={})
    assert [u.sender for u in chosen] == sorted(IDS[:4])


def test_select_with_a_limit_follows_the_trust_policy() -> None:
    pool = UpdatePool()
    for i in range(6):
        pool.add(upd(i))
    trust = {IDS[i]: t for i, t in enumerate([0.1, 0.5, 0.05, 0.3, 0.4, 0.2])}
    chosen = pool.select(RECENT, everyone, NONE_BANNED, 2, 3, "trust", trust.__getitem__, seed=0, model_since_s={})
    assert [u.sender for u in chosen] == sorted([IDS[1], IDS[4], IDS[3]])


def _limited_pick(pool: UpdatePool, policy: str, seed: int) -> list[bytes]:
    """Three of the pool's updates chosen by ``policy``; always in sender order."""
    chosen = pool.select(RECENT, everyone, NONE_BANNED, 2, 3, policy, lambda s: IDS.index(s) / 10, seed, model_since_s={})
    assert len(chosen) == 3 and [u.sender for u in chosen] == sorted(u.sender for u in chosen)
    return [u.id for u in chosen]


@pytest.fixture
def full_pool() -> UpdatePool:
    pool = UpdatePool()
    for i in range(8):
        pool.add(upd(i, base_height=i % 3, samples=10 * (i + 1)))
    return pool


@pytest.mark.parametrize("policy", ["random", "pso"])
def test_select_with_a_limit_is_deterministic(full_pool: UpdatePool, policy: str) -> None:
    assert _limited_pick(full_pool, policy, 5) == _limited_pick(full_pool, policy, 5)


def test_random_selection_depends_on_the_seed(full_pool: UpdatePool) -> None:
    assert len({tuple(_limited_pick(full_pool, "random", seed)) for seed in range(6)}) > 1


def test_select_random_matches_the_selection_policy() -> None:
    pool = UpdatePool()
    for i in range(8):
        pool.add(upd(i))
    eligible = pool.eligible(RECENT, everyone, NONE_BANNED)
    features = {"speed": np.ones(8), "trust": np.zeros(8), "data_size": np.full(8, 10.0), "staleness": np.zeros(8)}
    expected = [eligible[i].update.id for i in select_nodes("random", features, 3, 42)]
    chosen = pool.select(RECENT, everyone, NONE_BANNED, 2, 3, "random", lambda s: 0.0, 42, model_since_s={})
    assert [u.id for u in chosen] == expected
