"""Unit tests of gossip's small parts, with fake clocks where time matters."""

from __future__ import annotations

import asyncio
import itertools
import random
import time

import pytest

from gossip import Envelope, GossipConfig
from gossip.admission import Admission
from gossip.book import AddressBook
from gossip.codec import DecodeError, pack, unpack_flat
from gossip.config import normalize_url
from gossip.crypto import KeyPair
from gossip.envelope import SEQ_PER_MS, SeqClock, is_fresh, now_ms
from gossip.limits import BoundedQueue, RateLimiter, TokenBucket
from gossip.metrics import DROP_REASONS, MetricsRecorder
from gossip.netpolicy import PolicyResolver
from gossip.policy import FloodPolicy
from gossip.score import PeerScores
from gossip.seen import SeenCache
from gossip.wire import (
    PROTOCOL_VERSION,
    decode_frame,
    identity_payload,
    opening_payload,
    parse_identity,
    parse_opening,
    parse_peers,
)


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
    assert oldest.put(1) == (True, 0) and oldest.put(2) == (True, 0)
    assert oldest.put(3) == (True, 1)
    assert [await oldest.get(), await oldest.get()] == [2, 3]
    newest: BoundedQueue[int] = BoundedQueue(2, "newest")
    newest.put(1), newest.put(2)
    assert newest.put(3) == (False, 1)
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


def test_seen_cache_evicts_from_the_peer_that_brought_most() -> None:
    seen = SeenCache(ttl=100, max_entries=4, clock=FakeClock())
    seen.add(b"honest", "h")
    for i in range(10):
        seen.add(b"flood%d" % i, "f")
    assert b"honest" in seen and len(seen) == 4 and seen.evictions == 7
    assert all(b"flood%d" % i in seen for i in (7, 8, 9))


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
    assert config.byte_burst >= config.max_message and config.max_peers == 64
    assert config.inbox_bytes == config.send_queue_bytes == 2 * config.max_message
    for bad in (dict(chain_id=""), dict(seen_ttl=100.0), dict(max_inbound=0, max_outbound=0),
                dict(max_inbound=-1), dict(byte_burst=10.0), dict(score_threshold=1.0),
                dict(send_queue_drop="random"), dict(penalties={"x": -1.0}),
                dict(dial_scope="everywhere"), dict(address_costs={"ban": -1.0}),
                dict(inbox_bytes=10)):
        with pytest.raises(ValueError):
            GossipConfig(**{"chain_id": "c", "listen_url": "http://127.0.0.1:1", **bad})


def test_wire_parsers_reject_bad_shapes() -> None:
    with pytest.raises(DecodeError):
        decode_frame(pack([1, 2]), 100, 4)
    with pytest.raises(DecodeError):
        decode_frame(pack("x" * 200), 100, 4)
    assert parse_opening(opening_payload("c")) == (PROTOCOL_VERSION, "c")
    assert parse_opening(pack([9, {"any": "layout"}][:1])) == (9, None)  # another version
    node = KeyPair.generate().node_id
    good = [PROTOCOL_VERSION, "c", node, b"s" * 64, "http://127.0.0.1:5/"]
    assert parse_identity(identity_payload("c", node, b"s" * 64, "http://127.0.0.1:5/")).listen_url \
        == "http://127.0.0.1:5"
    for i, value in [(1, ""), (2, "nope"), (3, b"short"), (4, "ftp://x"), (4, 7)]:
        with pytest.raises(DecodeError):
            parse_identity(pack([*good[:i], value, *good[i + 1:]]))
    for bad in (pack(good + [1, 2, 3, 4]), pack([good]), pack({"a": 1}), b"\x98" + b"\x80" * 8):
        with pytest.raises(DecodeError):
            parse_identity(bad)
    assert parse_peers(["peers", ["http://127.0.0.1:1", "junk", 5]], 10) == ["http://127.0.0.1:1"]
    with pytest.raises(DecodeError):
        parse_peers(["peers", ["http://127.0.0.1:1"] * 11], 10)


def test_flat_decoding_refuses_what_no_frame_holds() -> None:
    assert unpack_flat(pack(["peers", ["a", "b"]]), 100, 4) == ["peers", ["a", "b"]]
    empty_maps = b"\x98" + (b"\xdd" + (1 << 20).to_bytes(4, "big") + b"\x80" * (1 << 20)) * 8
    for bad in (pack(["a", [[1]]]), pack(["a", {}]), pack(["a"] * 5), pack(["a", [1] * 4]),
                pack(["a"]) + b"x", b"\x92\xa1a", empty_maps, b"", pack("x")):
        with pytest.raises(DecodeError):
            unpack_flat(bad, 16 << 20, 4)


# ---------------------------------------------------------------- address book, policy, metrics

def book(clock: FakeClock, **kw: object) -> AddressBook:
    settings = dict(new_buckets=8, tried_buckets=4, bucket_size=4, backoff_base=1, backoff_max=8,
                    max_failures=3, scope="local", clock=clock, rng=random.Random(1), secret=b"k")
    return AddressBook("http://127.0.0.1:1", **{**settings, **kw})  # type: ignore[arg-type]


def test_address_book_backoff_forgetting_and_self() -> None:
    clock = FakeClock()
    b = book(clock)
    assert not b.learn("http://127.0.0.1:1", "v4:127.0")  # never our own URL
    b.add_fixed("http://127.0.0.1:2")
    assert b.learn("http://127.0.0.1:3", "v4:127.0")
    assert [e.url for e in b.due(set())] == ["http://127.0.0.1:2", "http://127.0.0.1:3"]
    b.dialing("http://127.0.0.1:2")
    assert b.dialing_count() == 1
    for _ in range(5):
        b.failed("http://127.0.0.1:2")
        b.failed("http://127.0.0.1:3")
    assert "http://127.0.0.1:3" not in b  # heard-of URL forgotten after 3 failures
    assert b.due(set()) == []  # the fixed URL is backing off
    clock.now += 8  # capped at backoff_max
    assert [e.url for e in b.due(set())] == ["http://127.0.0.1:2"]
    b.connected("http://127.0.0.1:2", "node-2")
    clock.now += 100
    assert b.due({"node-2"}) == []  # connected by node id
    b.mark_self("http://127.0.0.1:2")
    assert not b.learn("http://127.0.0.1:2", "v4:127.0") and len(b) == 0


def test_address_book_scope_refuses_what_a_stranger_may_not_make_us_dial() -> None:
    clock = FakeClock()
    for scope, allowed in (("public", ["http://8.8.8.8:1", "http://node.example:1"]),
                           ("private", ["http://8.8.8.8:1", "http://10.0.0.5:1", "http://node.example:1"]),
                           ("local", ["http://8.8.8.8:1", "http://10.0.0.5:1", "http://127.0.0.1:9",
                                      "http://localhost:9", "http://node.example:1"])):
        b = book(clock, scope=scope, new_buckets=64, bucket_size=64)
        urls = ["http://8.8.8.8:1", "http://10.0.0.5:1", "http://127.0.0.1:9", "http://localhost:9",
                "http://0.0.0.0:9", "http://[::]:9", "http://169.254.169.254:80", "http://224.0.0.1:1",
                "http://[fe80::1]:1", "http://255.255.255.255:1", "http://node.example:1"]
        kept = [u for u in urls if b.learn(u, f"v4:{urls.index(u)}.0")]
        assert kept == allowed, scope
    b = book(clock, scope="public")
    b.add_fixed("http://127.0.0.1:7")  # the operator's own choice is kept whatever the scope
    assert "http://127.0.0.1:7" in b


def test_one_source_group_fills_only_its_own_buckets() -> None:
    clock = FakeClock()
    b = book(clock, new_buckets=64, tried_buckets=16, bucket_size=16)
    flood = [b.learn(f"http://8.8.{i // 250}.{i % 250}:1", "v4:6.6") for i in range(2000)]
    # One source group reaches at most SOURCE_SPREAD buckets of bucket_size positions.
    assert 0 < sum(flood) <= 4 * 16 and len(b) <= 4 * 16
    honest = [f"http://9.{i}.9.9:1" for i in range(10)]
    kept = [u for u in honest if b.learn(u, "v4:7.7")]
    assert len(kept) >= 8  # other sources are unaffected but for rare hash collisions
    # A tried entry that is reachable is never pushed out, and is dialled before new ones.
    b.add_fixed("http://9.9.8.8:1")
    b.dialing(kept[0])
    b.connected(kept[0], "honest")
    assert b.get(kept[0]).tried  # type: ignore[union-attr]
    for i in range(2000):
        url = f"http://9.9.{100 + i // 250}.{i % 250}:1"
        if b.learn(url, "v4:5.5"):
            b.dialing(url)
            b.connected(url, f"n{i}")
    assert b.get(kept[0]) is not None and b.get(kept[0]).tried  # type: ignore[union-attr]
    clock.now += 100
    order = [e.url for e in b.due(set())]
    assert order[0] == "http://9.9.8.8:1"
    assert order.index(kept[0]) < order.index(kept[1])


def test_terrible_entries_give_way() -> None:
    clock = FakeClock()
    b = book(clock, new_buckets=1, bucket_size=1)
    assert b.learn("http://8.8.8.8:1", "v4:6.6")
    assert not b.learn("http://8.8.8.9:1", "v4:6.6")  # the position is held
    for _ in range(3):
        b.dialing("http://8.8.8.8:1")
        b.failed("http://8.8.8.8:1")
    assert "http://8.8.8.8:1" not in b  # forgotten after max_failures
    assert b.learn("http://8.8.8.9:1", "v4:6.6")


def test_admission_caps_and_address_budgets() -> None:
    clock = FakeClock()
    adm = Admission(max_total=3, max_per_ip=2, rate=1.0, burst=4.0,
                    costs={"handshake": 2.0, "ban": 8.0}, clock=clock)
    assert adm.begin("1.1.1.1") is None and adm.begin("1.1.1.1") is None
    assert adm.begin("1.1.1.1") == "busy"            # per address
    assert adm.begin("2.2.2.2") is None
    assert adm.begin("3.3.3.3") == "busy"            # in all
    adm.end("1.1.1.1"), adm.end("1.1.1.1"), adm.end("2.2.2.2")
    assert adm.in_progress() == 0
    assert adm.begin("1.1.1.1") is None              # the third token of four
    adm.end("1.1.1.1")
    adm.charge("1.1.1.1", "ban")                     # 1 - 8: one burst of debt at most
    assert adm.tokens("1.1.1.1") == pytest.approx(-4.0)
    assert adm.begin("1.1.1.1") == "throttled"
    assert adm.begin("2.2.2.2") is None              # other addresses are not affected
    adm.end("2.2.2.2")
    clock.now += 5.0                                 # refilled to 1: a throttle, not a ban
    assert adm.begin("1.1.1.1") is None
    # An IPv6 host's fresh addresses share its /64 budget.
    adm.charge("2001:db8::1", "ban")
    assert adm.begin("2001:db8::ffff") == "throttled"
    assert adm.begin("2001:db8:0:1::1") is None


def test_flood_policy_targets() -> None:
    policy = FloodPolicy()
    for nid in "abc":
        policy.add_peer(nid)
    policy.remove_peer("b")
    assert policy.publish_targets("t") == ["a", "c"]
    assert policy.forward_targets("t", {"a"}, b"m" * 32) == ["c"]


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


async def test_policy_resolver_judges_names_by_what_they_resolve_to() -> None:
    """Real resolution of ``localhost`` (to loopback) through the dialling session's resolver."""
    for scope in ("public", "private"):
        resolver = PolicyResolver(scope, trusted=set())  # type: ignore[arg-type]
        with pytest.raises(OSError, match="outside the dial scope"):
            await resolver.resolve("localhost", 80)
        await resolver.close()
    allowed = PolicyResolver("local", trusted=set())
    assert {r["host"] for r in await allowed.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
    await allowed.close()
    trusted = PolicyResolver("public", trusted={"localhost"})  # a bootstrap host: the operator's choice
    assert await trusted.resolve("localhost", 80)
    await trusted.close()


async def test_queues_sharing_a_byte_budget() -> None:
    from gossip.limits import ByteBudget

    budget = ByteBudget(10)
    sizeof = len
    fresh: BoundedQueue[bytes] = BoundedQueue(8, "oldest", 8, sizeof, budget)
    strict: BoundedQueue[bytes] = BoundedQueue(8, "newest", 8, sizeof, budget)
    assert fresh.put(b"aaaa") == (True, 0) and strict.put(b"bbbb") == (True, 0) and budget.used == 8
    assert strict.put(b"ccc") == (False, 1)          # over the budget: refused, nothing lost
    assert fresh.put(b"ddd") == (True, 1)            # makes room in itself: its oldest goes
    assert budget.used == 7 and fresh.nbytes == 3
    assert fresh.put(b"eeeeeee") == (False, 1) and fresh.nbytes == 3  # emptying it would not help
    assert await strict.get() == b"bbbb" and budget.used == 3
    assert fresh.take_all() == [b"ddd"] and budget.used == 0
