"""The consensus state machine on a simulated clock: proposals, polkas, locks and the unlock rule,
round changes, missed slots, equivocation, and decisions, one machine at a time and as a
cluster exchanging messages with delays, losses and a Byzantine member.

No real time passes: every input carries its simulated time, so each test runs in milliseconds.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

import pytest

from consensus.election import quorum
from consensus.header import EMPTY_HASH
from consensus.machine import (
    PREVOTE,
    PROPOSE,
    ArmTimeout,
    CastVote,
    Decide,
    Equivocation,
    FetchDecided,
    HeightMachine,
    Propose,
    Step,
    Timeouts,
)
from consensus.messages import Vote
from gossip.crypto import sha256
from tests.consensus.helpers import CHAIN, IDS, KEYS

H = 7
SLOT = 1000
TIMEOUTS = Timeouts.for_slot(SLOT)
VOTERS = IDS[:4]
KEY = dict(zip(IDS, KEYS))
A, B = sha256(b"block a"), sha256(b"block b")


def proposer_of(rnd: int) -> str:
    return VOTERS[rnd % len(VOTERS)]


def machine(me: str | None = IDS[0], lock: tuple[int, bytes] | None = None) -> HeightMachine:
    return HeightMachine(H, VOTERS, quorum(len(VOTERS)), proposer_of, me, TIMEOUTS, lock)


def vote(kind: str, i: int, rnd: int, block: bytes) -> Vote:
    return Vote(kind, CHAIN, H, rnd, block, IDS[i]).signed(KEYS[i])


def votes_of(actions: list) -> list[CastVote]:
    return [a for a in actions if isinstance(a, CastVote)]


def feed(m: HeightMachine, kind: str, rnd: int, block: bytes, who: range | list[int], now: int = 0) -> list:
    out = []
    for i in who:
        out += m.on_vote(vote(kind, i, rnd, block), now)
    return out


# ----- one machine ---------------------------------------------------------------------------------

def test_a_valid_fresh_proposal_is_prevoted_polka_precommitted_and_decided() -> None:
    m = machine(IDS[0])
    acts = m.start_round(1, 0)  # round 1's proposer is VOTERS[1]: we wait for its proposal
    assert acts == [ArmTimeout(PROPOSE, 1, TIMEOUTS.propose_ms)]
    assert m.on_proposal(1, A, -1, 10) == []  # validity not known yet: no vote
    assert votes_of(m.on_validity(A, True, 20)) == [CastVote(PREVOTE, 1, A)]
    acts = feed(m, "prevote", 1, A, [1, 2, 3], 30)
    assert CastVote("precommit", 1, A) in acts
    assert (m.locked_round, m.locked_hash, m.valid_round, m.valid_hash) == (1, A, 1, A)
    acts = feed(m, "precommit", 1, A, [0, 1, 2], 40)
    decide = [a for a in acts if isinstance(a, Decide)]
    assert len(decide) == 1 and decide[0].block_hash == A and decide[0].commit.round == 1
    assert decide[0].commit.verify(CHAIN, VOTERS, 3) is None
    assert m.start_round(2, 1000) == []  # decided: no more rounds


def test_our_slot_means_we_propose_fresh_then_our_valid_block() -> None:
    m = machine(IDS[2])
    assert Propose(2, None, -1) in m.start_round(2, 0)
    m.on_proposal(2, A, -1, 1)
    m.on_validity(A, True, 1)
    feed(m, "prevote", 2, A, [0, 1, 2, 3], 2)  # polka: A is our valid block (and our lock)
    assert m.valid_hash == A and m.valid_round == 2
    assert Propose(6, A, 2) in m.start_round(6, 4000)  # our next turn: A again, with its polka round


def test_no_proposal_in_time_means_a_nil_prevote() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    assert m.on_timeout(PROPOSE, 1, TIMEOUTS.propose_ms) == [CastVote(PREVOTE, 1, EMPTY_HASH)]
    assert m.on_timeout(PROPOSE, 1, TIMEOUTS.propose_ms) == []  # fires once
    assert m.on_timeout(PROPOSE, 0, TIMEOUTS.propose_ms) == []  # a stale round's timer is void


def test_an_invalid_proposal_gets_a_nil_prevote() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    m.on_proposal(1, A, -1, 1)
    assert votes_of(m.on_validity(A, False, 2)) == [CastVote(PREVOTE, 1, EMPTY_HASH)]


def test_split_prevotes_arm_the_prevote_timeout_then_precommit_nil() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    m.on_timeout(PROPOSE, 1, 500)
    acts = feed(m, "prevote", 1, A, [1], 600) + feed(m, "prevote", 1, B, [2], 610) + feed(m, "prevote", 1,
                                                                                         EMPTY_HASH, [0], 620)
    assert ArmTimeout(PREVOTE, 1, 620 + TIMEOUTS.prevote_ms) in acts
    assert m.on_timeout(PREVOTE, 1, 900) == [CastVote("precommit", 1, EMPTY_HASH)]


def test_a_nil_polka_precommits_nil_at_once() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    m.on_timeout(PROPOSE, 1, 500)
    acts = feed(m, "prevote", 1, EMPTY_HASH, [0, 1, 2], 600)
    assert CastVote("precommit", 1, EMPTY_HASH) in acts and m.step == Step.PRECOMMIT


def test_a_locked_delegate_prevotes_nil_for_another_fresh_block() -> None:
    m = machine(IDS[0], lock=(1, A))  # e.g. restored after a restart
    m.start_round(2, 0)
    m.on_proposal(2, B, -1, 1)
    assert votes_of(m.on_validity(B, True, 2)) == [CastVote(PREVOTE, 2, EMPTY_HASH)]


def test_a_locked_delegate_prevotes_its_own_lock_again() -> None:
    m = machine(IDS[0], lock=(1, A))
    m.start_round(2, 0)
    m.on_proposal(2, A, 1, 1)
    feed(m, "prevote", 1, A, [1, 2, 3], 1)
    assert votes_of(m.on_validity(A, True, 2)) == [CastVote(PREVOTE, 2, A)]


def test_unlock_on_a_newer_polka_keeps_the_chain_live() -> None:
    """Locked on A in round 1; B gathered a polka in round 2 that this delegate missed; round 3
    re-proposes B with pol_round 2: the delegate must prevote B (its lock is older than the
    polka), or a split precommit would stall the height for ever (the old never-unlock rule)."""
    m = machine(IDS[0], lock=(1, A))
    m.start_round(3, 0)
    m.on_proposal(3, B, 2, 1)
    assert votes_of(m.on_validity(B, True, 2)) == []  # no proof of the polka yet: wait
    acts = feed(m, "prevote", 2, B, [1, 2, 3], 3)
    assert CastVote(PREVOTE, 3, B) in acts


def test_a_reproposal_with_an_older_polka_than_the_lock_is_refused() -> None:
    m = machine(IDS[0], lock=(4, A))
    m.start_round(5, 0)
    m.on_proposal(5, B, 2, 1)
    feed(m, "prevote", 2, B, [1, 2, 3], 1)
    assert votes_of(m.on_validity(B, True, 2)) == [CastVote(PREVOTE, 5, EMPTY_HASH)]


def test_late_precommits_of_an_earlier_round_still_decide() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    m.on_proposal(1, A, -1, 1)
    m.on_validity(A, True, 1)
    m.start_round(2, 1000)
    acts = feed(m, "precommit", 1, A, [1, 2, 3], 1100)
    assert [a.block_hash for a in acts if isinstance(a, Decide)] == [A]


def test_precommits_for_a_block_we_lack_ask_for_it() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    acts = feed(m, "precommit", 1, B, [1, 2, 3], 10)
    fetch = [a for a in acts if isinstance(a, FetchDecided)]
    assert len(fetch) == 1 and fetch[0].block_hash == B and fetch[0].commit.verify(CHAIN, VOTERS, 3) is None
    assert feed(m, "precommit", 1, B, [0], 11) == []  # asked once
    m.on_proposal(1, B, -1, 20)
    assert [a.block_hash for a in m.on_validity(B, True, 21) if isinstance(a, Decide)] == [B]


def test_precommits_for_a_block_this_node_refused_still_decide_it() -> None:
    """A quorum's commit outranks this node's own payload check (it may lack what checking needs):
    the block goes to the driver, which applies it under the chain's rules alone."""
    m = machine(IDS[0])
    m.start_round(1, 0)
    m.on_proposal(1, B, -1, 1)
    m.on_validity(B, False, 2)
    acts = feed(m, "precommit", 1, B, [1, 2, 3], 10)
    fetch = [a for a in acts if isinstance(a, FetchDecided)]
    assert len(fetch) == 1 and fetch[0].block_hash == B and fetch[0].commit.verify(CHAIN, VOTERS, 3) is None
    assert not [a for a in acts if isinstance(a, CastVote) and a.kind == "precommit" and a.block_hash == B]
    assert feed(m, "precommit", 1, B, [0], 11) == []  # asked once


def test_double_votes_are_reported_as_evidence() -> None:
    m = machine(IDS[0])
    m.start_round(1, 0)
    m.on_vote(vote("prevote", 3, 1, A), 1)
    acts = m.on_vote(vote("prevote", 3, 1, B), 2)
    assert len(acts) == 1 and isinstance(acts[0], Equivocation) and acts[0].evidence.kind == "double_prevote"


def test_a_follower_never_votes_but_decides() -> None:
    m = machine(me=None)
    assert m.start_round(1, 0) == []
    m.on_proposal(1, A, -1, 1)
    assert m.on_validity(A, True, 1) == []
    assert [a.block_hash for a in feed(m, "precommit", 1, A, [0, 1, 2], 5) if isinstance(a, Decide)] == [A]


# ----- a cluster of machines on one simulated clock -------------------------------------------------

@dataclass(order=True)
class _Event:
    at: int
    seq: int
    node: str = field(compare=False)
    kind: str = field(compare=False)
    payload: tuple = field(compare=False)


class Cluster:
    """Four delegates running the machine for one height over a lossy, delaying network.

    A block's validity is known at once on receipt. ``byzantine`` delegates equivocate: each of
    their votes goes out twice, one copy for A-side peers with their choice, one with the other.
    """

    def __init__(self, seed: int, *, loss: float = 0.0, max_delay: int = 300, byzantine: frozenset[str] = frozenset(),
                 invalid: frozenset[bytes] = frozenset(), silent: frozenset[str] = frozenset()) -> None:
        self.rng = random.Random(seed)
        self.loss, self.max_delay = loss, max_delay
        self.byzantine, self.invalid, self.silent = byzantine, invalid, silent
        self.machines = {i: machine(i) for i in VOTERS if i not in silent}
        self.decisions: dict[str, bytes] = {}
        self.commits: dict = {}
        self.own: dict[str, list[Vote]] = {}
        self.evidence: list = []
        self.events: list[_Event] = []
        self.seq = 0
        self.now = 0

    def _push(self, at: int, node: str, kind: str, payload: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.events, _Event(at, self.seq, node, kind, payload))

    def _send(self, sender: str, kind: str, payload: tuple) -> None:
        for node in self.machines:
            if node == sender:
                self._push(self.now, node, kind, payload)
            elif self.rng.random() >= self.loss:
                self._push(self.now + self.rng.randint(1, self.max_delay), node, kind, payload)

    def _carry(self, node: str, actions: list) -> None:
        for a in actions:
            if isinstance(a, Propose):
                block = a.block_hash or sha256(b"block %d" % a.round)
                # a re-proposal carries the prevotes of its polka round as proof, as the engine does
                pol = self.machines[node].votes.for_block(PREVOTE, a.pol_round, block) if a.pol_round >= 0 else []
                self._send(node, "proposal", (a.round, block, a.pol_round, pol))
            elif isinstance(a, CastVote):
                own = vote(a.kind, IDS.index(node), a.round, a.block_hash)
                self.own[node] = [v for v in self.own.get(node, []) if v.kind != a.kind] + [own]
                self._send(node, "vote", (own,))
                if node in self.byzantine:
                    other = sha256(b"junk %d" % a.round)
                    self._send(node, "vote", (vote(a.kind, IDS.index(node), a.round, other),))
            elif isinstance(a, ArmTimeout):
                self._push(a.at_ms, node, "timeout", (a.kind, a.round))
            elif isinstance(a, Decide):
                self.decisions[node] = a.block_hash
                self.commits[node] = a.commit
            elif isinstance(a, Equivocation):
                self.evidence.append(a.evidence)
            elif isinstance(a, FetchDecided):  # the engine's syncer fetches the block by hash
                self._push(self.now + self.max_delay, node, "fetched", (a.block_hash,))

    def _rebroadcast(self, node: str) -> None:
        """What the engine re-sends mid-slot: this round's own votes; and what a decided node's
        next-height proposal carries: the commit, which decides the height for laggards."""
        if node in self.commits:
            self._send(node, "commit", (self.commits[node],))
        for v in self.own.get(node, []):
            if v.round == self.machines[node].round:
                self._send(node, "vote", (v,))

    def run(self, until_ms: int) -> None:
        for rnd in range(1, until_ms // SLOT + 1):
            for node in self.machines:
                self._push(rnd * SLOT, node, "round", (rnd,))
                self._push(rnd * SLOT + SLOT // 2, node, "rebroadcast", ())
        while self.events and self.events[0].at <= until_ms:
            ev = heapq.heappop(self.events)
            self.now = ev.at
            m = self.machines[ev.node]
            if ev.kind == "round":
                acts = m.start_round(ev.payload[0], self.now)
            elif ev.kind == "rebroadcast":
                self._rebroadcast(ev.node)
                acts = []
            elif ev.kind == "timeout":
                acts = m.on_timeout(*ev.payload, self.now)
            elif ev.kind == "commit":
                acts = m.on_commit(ev.payload[0], self.now)
            elif ev.kind == "fetched":
                acts = m.on_validity(ev.payload[0], ev.payload[0] not in self.invalid, self.now)
            elif ev.kind == "vote":
                acts = m.on_vote(ev.payload[0], self.now)
            else:
                rnd, block, pol, proof = ev.payload
                acts = m.on_proposal(rnd, block, pol, self.now, proof)
                acts += m.on_validity(block, block not in self.invalid, self.now)
            self._carry(ev.node, acts)


@pytest.mark.parametrize("seed", range(20))
def test_a_healthy_cluster_decides_one_block(seed: int) -> None:
    c = Cluster(seed)
    c.run(3 * SLOT)
    assert len(c.decisions) == 4 and len(set(c.decisions.values())) == 1


@pytest.mark.parametrize("seed", range(40))
def test_heavy_loss_long_delays_and_an_equivocator_never_split_the_decision(seed: int) -> None:
    """Safety needs no timing assumption: 40% loss and delays up to three slots."""
    c = Cluster(seed, loss=0.4, max_delay=3 * SLOT, byzantine=frozenset({IDS[3]}))
    c.run(30 * SLOT)
    assert len(set(c.decisions.values())) <= 1, c.decisions


@pytest.mark.parametrize("seed", range(40))
def test_with_delays_below_the_timeouts_every_honest_delegate_decides(seed: int) -> None:
    """Liveness once messages arrive within the timeouts, despite 20% loss and an equivocator."""
    c = Cluster(seed, loss=0.2, max_delay=TIMEOUTS.prevote_ms, byzantine=frozenset({IDS[3]}))
    c.run(30 * SLOT)
    assert len(set(c.decisions.values())) == 1, c.decisions
    assert all(n in c.decisions for n in c.machines if n != IDS[3]), c.decisions
    assert c.evidence and all(ev.offender == IDS[3] for ev in c.evidence)


@pytest.mark.parametrize("seed", range(10))
def test_a_silent_delegate_costs_only_its_slots(seed: int) -> None:
    c = Cluster(seed, silent=frozenset({IDS[1]}))  # round 1's proposer never speaks
    c.run(4 * SLOT)
    assert len(c.decisions) == 3 and len(set(c.decisions.values())) == 1
    assert sha256(b"block 1") not in c.decisions.values()


def test_an_invalid_fresh_block_is_never_decided() -> None:
    c = Cluster(1, invalid=frozenset({sha256(b"block 1")}))
    c.run(4 * SLOT)
    assert len(c.decisions) == 4 and sha256(b"block 1") not in c.decisions.values()
