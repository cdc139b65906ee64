"""Unit tests of gossip's small parts, with fake clocks where time matters."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

from gossip import Envelope, GossipConfig
from gossip.book import AddressBook
from gossip.codec import DecodeError, pack
from gossip.config import normalize_url
from gossip.crypto import KeyPair
from gossip.envelope import SEQ_PER_MS, SeqClock, is_fresh, now_ms
from gossip.limits import BoundedQueue, RateLimiter, TokenBucket
from gossip.metrics import DROP_REASONS, MetricsRecorder
from gossip.policy import FloodPolicy
from gossip.score import PeerScores
from gossip.seen import SeenCache
from gossip.wire import decode_frame, parse_hello, parse_peers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- envelopes and seqs

def test_envelope_signature_binds_every_field_and_the_chain() -> None:
    key = KeyPair.generate()
    env = Envelope.create(key, "chain-a", "t", 42, b"body")
    assert env.verify("chain-a")
    assert not env.verify("chain-b")
    for changed in (dict(topic="u"), dict(seq=43), dict(body=b"bodx"),
                    dict(sender=KeyPair.generate().node_id)):
        assert not Envelope(**{**env.__dict__, **changed}).verify("chain-a")
    assert env.msg_id("chain-a") != env.msg_id("chain-b")


def test_envelope_wire_round_trip_and_shape_checks() -> None:
    env = Envelope.create(KeyPair.generate(), "c", "topic", 7, b"\x00\x01")
    assert Envelope.from_wire(env.to_wire()) == env
    good = env.to_wire()
    bad_fields = [good[:4], [1, *good[1:]], ["", *good[1:]], ["x" * 129, *good[1:]],
                  [good[0], "zz", *good[2:]], [*good[:2], True, *good[3:]],
                  [*good[:2], 1 << 63, *good[3:]], [*good[:3], "str", good[4]],
                  [*good[:4], b"\x00" * 63]]
    for fields in bad_fields:
        with pytest.raises(DecodeError):
            Envelope.from_wire(fields)


def test_seq_clock_is_strictly_increasing_and_time_based() -> None:
    clock = SeqClock()
    seqs = [clock.next() for _ in range(5000)]
    assert all(b > a for a, b in itertools.pairwise(seqs))
    assert abs(seqs[0] // SEQ_PER_MS - now_ms()) < 1000
    # A restarted publisher (new clock) continues above the old one's seqs at realistic rates.
    time.sleep(0.002)
    assert SeqClock().next() > seqs[0]


def test_freshness_window_both_sides() -> None:
    now = 1_700_000_000_000
    assert is_fresh(now * SEQ_PER_MS, 120, now)
    assert is_fresh((now - 120_000) * SEQ_PER_MS, 120, now)
    assert not is_fresh((now - 120_001) * SEQ_PER_MS, 120, now)
    assert not is_fresh((now + 120_001) * SEQ_PER_MS, 120, now)


# ---------------------------------------------------------------- limits

def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert all(bucket.take() for _ in range(5))
    assert not bucket.take()
    clock.now += 0.25
    assert bucket.take() and bucket.take() and not bucket.take()
    clock.now += 100
    assert bucket.tokens == 5


def test_rate_limiter_needs_both_buckets_and_charges_nothing_on_refusal() -> None:
    clock = FakeClock()
    limiter = RateLimiter(msg_rate=100, msg_burst=100, byte_rate=1000, byte_burst=1000, clock=clock)
    assert limiter.admit(600)
    assert not limiter.admit(600)   # bytes short
    assert limiter.messages.tokens == 99  # the refused frame cost no message token
    assert limiter.admit(400)
    limiter2 = RateLimiter(msg_rate=1, msg_burst=1, byte_rate=1000, byte_burst=1000, clock=clock)
    assert limiter2.admit(1) and not limiter2.admit(1)  # messages short
    assert limiter2.bytes.tokens == 999


async def test_bounded_queue_drop_policies() -> None:
    oldest: BoundedQueue[int] = BoundedQueue(2, "oldest")
    assert oldest.put(1) == (True, None) and oldest.put(2) == (True, None)
    assert oldest.put(3) == (True, 1)
    assert [await oldest.get(), await oldest.get()] == [2, 3]
    newest: BoundedQueue[int] = BoundedQueue(2, "newest")
    newest.put(1), newest.put(2)
    assert newest.put(3) == (False, None)
    assert newest.take_all() == [1, 2] and len(newest) == 0
    waiter = asyncio.create_task(newest.get())
    await asyncio.sleep(0)
    newest.put(9)
    assert await asyncio.wait_for(waiter, 1) == 9


# ---------------------------------------------------------------- seen-cache and scores

def test_seen_cache_expires_evicts_and_forgets() -> None:
    clock = FakeClock()
    seen = SeenCache(ttl=10, max_entries=3, clock=clock)
    assert seen.add(b"a") and not seen.add(b"a") and b"a" in seen
    clock.now += 5
    seen.add(b"b")
    clock.now += 5.5  # a expired, b not
    assert b"a" not in seen and b"b" in seen
    assert seen.add(b"a")  # expired ids may come again
    seen.add(b"c"), seen.add(b"d")
    seen.add(b"e")  # full: the oldest live entry goes
    assert seen.evictions >= 1 and len(seen) == 3
    seen.discard(b"e")
    assert b"e" not in seen


def test_scores_decay_ban_and_recover() -> None:
    clock = FakeClock()
    scores = PeerScores({"bad": 30.0}, threshold=-100, half_life=10, ban_seconds=60, clock=clock)
    assert not scores.penalize("p", "harmless")  # no penalty for unlisted reasons
    assert scores.score("p") == 0
    assert not scores.penalize("p", "bad") and scores.score("p") == -30
    clock.now += 10
    assert scores.score("p") == pytest.approx(-15)
    assert [scores.penalize("p", "bad") for _ in range(3)] == [False, False, True]
    scores.ban("p")
    assert scores.is_banned("p") and "p" in scores.banned()
    assert not scores.penalize("p", "bad")  # already banned: no second ban
    clock.now += 61
    scores.prune()
    assert not scores.is_banned("p") and scores.score("p") == 0  # back with a clean slate


# ---------------------------------------------------------------- config, urls, wire

def test_normalize_url() -> None:
    assert normalize_url("HTTP://127.0.0.1:9000/") == "http://127.0.0.1:9000"
    assert normalize_url("http://LocalHost") == "http://localhost"
    for bad in ("", "ftp://x:1", "http://:80", "http://u:p@h:1", "http://h:1/path", "http://h:1?q",
                "http://h:99999", "x" * 300, 5):
        with pytest.raises(ValueError):
            normalize_url(bad)  # type: ignore[arg-type]


def test_config_checks_its_invariants() -> None:
    config = GossipConfig("c", "http://127.0.0.1:1/", bootstrap=["http://127.0.0.1:2/"])
    assert config.listen_url == "http://127.0.0.1:1" and config.bootstrap == ["http://127.0.0.1:2"]
    assert config.byte_burst >= config.max_message and config.frame_limit == 2 * config.max_message
    for bad in (dict(chain_id=""), dict(seen_ttl=100.0), dict(max_peers=0), dict(byte_burst=10.0),
                dict(score_threshold=1.0), dict(send_queue_drop="random"),
                dict(penalties={"x": -1.0})):
        with pytest.raises(ValueError):
            GossipConfig(**{"chain_id": "c", "listen_url": "http://127.0.0.1:1", **bad})


def test_wire_parsers_reject_bad_shapes() -> None:
    with pytest.raises(DecodeError):
        decode_frame(pack([1, 2]), 100)
    with pytest.raises(DecodeError):
        decode_frame(pack("x" * 200), 100)
    node = KeyPair.generate().node_id
    good = ["hello", 1, "c", node, "http://127.0.0.1:5/", b"n" * 32]
    assert parse_hello(good).listen_url == "http://127.0.0.1:5"
    for i, value in [(1, "1"), (2, ""), (3, "nope"), (4, "ftp://x"), (4, 7), (5, b"short")]:
        with pytest.raises(DecodeError):
            parse_hello([*good[:i], value, *good[i + 1:]])
    assert parse_peers(["peers", ["http://127.0.0.1:1", "junk", 5]], 10) == ["http://127.0.0.1:1"]
    with pytest.raises(DecodeError):
        parse_peers(["peers", ["http://127.0.0.1:1"] * 11], 10)


# ---------------------------------------------------------------- address book, policy, metrics

def test_address_book_backoff_forgetting_and_self() -> None:
    clock = FakeClock()
    book = AddressBook("http://127.0.0.1:1", 10, backoff_base=1, backoff_max=8, max_failures=3,
                       clock=clock, rng=random.Random(1))
    assert not book.add("http://127.0.0.1:1")  # never our own URL
    assert book.add("http://127.0.0.1:2", keep=True) and book.add("http://127.0.0.1:3")
    assert [e.url for e in book.due(set())] == ["http://127.0.0.1:2", "http://127.0.0.1:3"]
    book.dialing("http://127.0.0.1:2")
    assert book.dialing_count() == 1
    for _ in range(5):
        book.failed("http://127.0.0.1:2")
        book.failed("http://127.0.0.1:3")
    assert "http://127.0.0.1:3" not in book  # heard-of URL forgotten after 3 failures
    assert book.due(set()) == []  # the kept URL is backing off
    clock.now += 8  # capped at backoff_max
    assert [e.url for e in book.due(set())] == ["http://127.0.0.1:2"]
    book.connected("http://127.0.0.1:2", "node-2")
    clock.now += 100
    assert book.due({"node-2"}) == []  # connected by node id
    book.mark_self("http://127.0.0.1:2")
    assert not book.add("http://127.0.0.1:2") and len(book) == 0


def test_flood_policy_targets() -> None:
    policy = FloodPolicy()
    for nid in "abc":
        policy.add_peer(nid)
    policy.remove_peer("b")
    assert policy.publish_targets("t") == ["a", "c"]
    assert policy.forward_targets("t", {"a"}) == ["c"]


def test_metrics_snapshot_is_a_copy() -> None:
    recorder = MetricsRecorder()
    recorder.topic("t").msgs_in += 1
    recorder.sent("t", 10)
    recorder.sent(None, 5)
    recorder.drop("stale")
    snap = recorder.snapshot(peers_connected=2, peers_banned=0, seen_entries=1, seen_evictions=0)
    snap.topics["t"].msgs_in = 99
    assert recorder.topics["t"].msgs_in == 1
    data = snap.to_dict()
    assert set(data["drops"]) == set(DROP_REASONS) and data["drops"]["stale"] == 1
    assert data["topics"]["t"]["bytes_out"] == 10 and data["control_bytes_out"] == 5
