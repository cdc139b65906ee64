"""node/api_limits.py: who a client is, and the token buckets its requests are counted in."""

from __future__ import annotations

import pytest

from node.api_limits import TokenBucket, client_key


@pytest.mark.parametrize("remote, key", [
    ("127.0.0.2", "127.0.0.2"),
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # one subscriber's /64 is one client
    ("::ffff:192.0.2.7", "192.0.2.7"),
    (None, "unknown"),
])
def test_client_key(remote, key):
    assert client_key(remote) == key


def test_bucket_refills_up_to_its_burst_and_says_how_long_to_wait():
    bucket = TokenBucket(rate=2, burst=3, tokens=3, stamp=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0 and bucket.tokens == 2  # never more than the burst


def test_a_charge_puts_the_bucket_in_debt_until_repaid():
    bucket = TokenBucket(rate=100, burst=100, tokens=100, stamp=0.0)
    bucket.charge(350, 0.0)
    assert bucket.debt(0.0) == pytest.approx(2.51)
    assert bucket.debt(2.0) > 0 and bucket.debt(2.6) == 0.0
