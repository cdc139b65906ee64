"""API floods from hostile clients against real daemons: each is throttled per source address
(429 JSON with Retry-After), the total cap holds against many addresses,
slow bodies are cut (and connections refused for concurrency closed), and the honest nodes keep
finalizing with a responsive ``/health``.

The victims run with tight limits (``LIMITS``) so that the attacks cross them quickly; the
attackers send from 127.0.0.2 and up, the monitor and the honest peers from 127.0.0.1.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from functools import partial
from threading import Thread

import pytest

from consensus.tx import Tx
from gossip.codec import pack
from gossip.crypto import KeyPair
from tests.hostile.harness import Bounds, run_hostile
from tests.hostile.webattack import (
    attacker_address,
    configure_api,
    describe,
    hammer,
    slow_bodies,
    slow_heads,
    start_victims,
)
from tests.integration.test_hostile import metric

pytestmark = pytest.mark.integration

LIMITS = dict(requests_per_s=20, request_burst=40, txs_per_s=2, tx_burst=4, max_inflight_per_client=4,
              max_inflight=16, request_timeout_ms=3000)
DURATION = 8.0
BOUNDS = Bounds(rss_growth_mb=40, health_p99_ms=250, health_max_ms=1500)


@pytest.fixture
def victims(make_testnet, request):
    """A testnet with LIMITS, updated by the test's ``limits`` marker if it has one."""
    marker = request.node.get_closest_marker("limits")
    net = make_testnet(4, slot_ms=1000)
    configure_api(net, **{**LIMITS, **(marker.kwargs if marker else {})})
    return start_victims(net)


def flood(victims, path: str, **hammer_args) -> tuple[dict, float]:
    """Hammer node0's ``path`` from the attacker address for DURATION under the monitor, check the
    invariants, and return what the attacker saw and how long it took."""
    with victims.monitor() as monitor:
        started = time.monotonic()
        stats = run_hostile(partial(hammer, victims.net.url(0), path, duration=DURATION, source=attacker_address(),
                                    **hammer_args), timeout=60)
        elapsed = time.monotonic() - started
        print(f"\n{hammer_args.get('method', 'GET')} {path} flood: {stats}\n{describe(monitor)}")
        victims.check(monitor, BOUNDS)
    return stats, elapsed


@pytest.mark.timeout(150)
def test_a_get_flood_from_one_address_is_throttled(victims):
    stats, elapsed = flood(victims, "/status", connections=16)
    served, refused = stats["statuses"].get(200, 0), stats["statuses"].get(429, 0)
    assert refused > 0, f"the flood was never throttled: {stats}"
    assert metric(victims.net, 0, "fedchain_api_refused_total", reason="rate") >= refused  # the victim counted them
    assert served <= LIMITS["requests_per_s"] * elapsed + LIMITS["request_burst"], stats
    assert stats["retry_after"] == refused, stats


@pytest.mark.timeout(150)
def test_a_tx_flood_is_held_to_the_stricter_tx_rate(victims):
    chain_id = victims.net.get(0, "/genesis")["chain_id"]
    bodies = [pack(Tx("transfer", chain_id, kp.node_id, 1, [kp.node_id, 1]).signed(kp).to_wire())
              for kp in (KeyPair.generate() for _ in range(64))]  # well formed, signed, from unknown accounts
    stats, elapsed = flood(victims, "/txs", connections=8, method="POST", bodies=bodies,
                           headers={"Content-Type": "application/msgpack"})
    judged, refused = stats["statuses"].get(422, 0), stats["statuses"].get(429, 0)
    assert refused > 0, f"the tx flood was never throttled: {stats}"
    assert judged <= LIMITS["txs_per_s"] * elapsed + LIMITS["tx_burst"], stats


@pytest.mark.timeout(150)
@pytest.mark.limits(tx_burst=100)  # every slow body passes the tx rate: only the concurrency caps stop them
def test_slow_bodies_from_many_addresses_hit_the_per_client_and_total_caps_and_are_cut(victims):
    net = victims.net
    sources = [attacker_address(i) for i in range(8)]
    with victims.monitor() as monitor:
        stats = run_hostile(slow_bodies, net.url(0), sources, 6, 8.0, timeout=60)
        print(f"\nslow bodies: {Counter(r[1] for r in stats['results'])}\n{describe(monitor)}")
        victims.check(monitor, BOUNDS)
    outcomes = Counter(r[1] for r in stats["results"])
    admitted = [r for r in stats["results"] if r[1].startswith("cut")]
    assert outcomes["held"] == 0, f"slow bodies held open past the request timeout: {outcomes}"
    assert len(admitted) <= LIMITS["max_inflight"], outcomes
    per_source = Counter(r[0] for r in admitted)
    assert max(per_source.values(), default=0) <= LIMITS["max_inflight_per_client"], per_source
    assert outcomes["429 closed"] >= len(stats["results"]) - LIMITS["max_inflight"], outcomes
    assert outcomes["429 open"] == 0, f"a connection refused for concurrency was left open: {outcomes}"
    assert all(r[2] < LIMITS["request_timeout_ms"] / 1000 + 2 for r in admitted), admitted


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(150)
@pytest.mark.limits(max_connections=48, max_connections_per_client=8, head_timeout_ms=3000)
def test_request_heads_that_never_end_are_cut_and_hold_few_connections(victims):
    """Slowloris: connections that start a request head and never finish it once stayed open for
    as long as the attacker liked (aiohttp has no deadline for a request head), each holding a
    socket of the victim. Now a head must be complete within ``api.head_timeout_ms``, and the
    connections one address and all addresses may hold are capped."""
    net = victims.net
    sources = [attacker_address(i) for i in range(8)]
    pid = net.procs[0].pid
    fds_before = open_fds(pid)
    with victims.monitor() as monitor:
        fds, outcome = [], []
        attack = Thread(target=lambda: outcome.append(run_hostile(slow_heads, net.url(0), sources, 24, 10.0,
                                                                  timeout=60)))
        attack.start()
        while attack.is_alive():
            fds.append(open_fds(pid))
            time.sleep(0.2)
        stats = outcome[0]
        print(f"\nslow heads: {stats['results'][:3]}..., victim fds {fds_before} -> max {max(fds)}\n{describe(monitor)}")
        victims.check(monitor, BOUNDS)
    held = [r for r in stats["results"] if r[1] is None or r[1] > 3.0 + 2.5]
    assert not held, f"{len(held)} of {len(stats['results'])} slow heads held open past the head deadline"
    assert max(fds) <= fds_before + 48 + 16, f"victim fds grew from {fds_before} to {max(fds)}"
    for reason in ("refused", "head_timeout"):  # over the per-address cap; past the deadline
        assert metric(net, 0, "fedchain_api_connections_closed_total", reason=reason) >= 1, reason
