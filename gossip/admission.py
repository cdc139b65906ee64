"""Who may start a handshake with us: caps on handshakes in progress, and per-address budgets.

Before a peer has authenticated it is just a TCP source address, so that is what limits key on:

* at most ``max_handshakes`` inbound connections in their handshake at once, and at most
  ``max_handshakes_per_ip`` from one address; only connections *still in the handshake* count,
  so honest nodes that share an address (all daemons of a test host, a NAT) are never kept apart
  by it once connected;
* a token bucket per address (``handshake_rate``/s, ``handshake_burst``): every inbound
  handshake takes one token, and misbehaviour from the address takes more (``address_costs``:
  a failed handshake, a frame that fails authentication, a node id banned). An address out of
  tokens is throttled (HTTP 429) until its bucket refills, not banned: fresh node ids cost
  nothing, but every one of them has to come through this budget.

Refusals happen before the WebSocket upgrade, so they cost a small HTTP response.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

from gossip.limits import TokenBucket

MAX_ADDRESSES = 4096
"""Budgets remembered at most; the least recently used is forgotten first."""


class Admission:
    def __init__(self, max_total: int, max_per_ip: int, rate: float, burst: float,
                 costs: dict[str, float], clock: Callable[[], float] = time.monotonic) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.rate = rate
        self.burst = burst
        self.costs = dict(costs)
        self._clock = clock
        self._pending: Counter[str] = Counter()
        self._budgets: OrderedDict[str, TokenBucket] = OrderedDict()

    def begin(self, ip: str) -> str | None:
        """Start an inbound handshake from ``ip``; returns None, or why it is refused
        (``busy``: too many handshakes in progress; ``throttled``: the address's budget is spent).
        A None must be matched by :meth:`end`."""
        key = source_key(ip)
        if sum(self._pending.values()) >= self.max_total or self._pending[key] >= self.max_per_ip:
            return "busy"
        if not self._budget(ip).take(1.0):
            return "throttled"
        self._pending[key] += 1
        return None

    def end(self, ip: str) -> None:
        """The handshake that :meth:`begin` admitted is over (whatever its outcome)."""
        key = source_key(ip)
        self._pending[key] -= 1
        if self._pending[key] <= 0:
            del self._pending[key]

    def charge(self, ip: str, what: str) -> None:
        """Misbehaviour from ``ip`` costs its budget ``address_costs[what]`` tokens."""
        cost = self.costs.get(what, 0.0)
        if ip and cost > 0:
            self._budget(ip).charge(cost)

    def tokens(self, ip: str) -> float:
        bucket = self._budgets.get(source_key(ip))
        return self.burst if bucket is None else bucket.tokens

    def in_progress(self) -> int:
        return sum(self._pending.values())

    def _budget(self, ip: str) -> TokenBucket:
        key = source_key(ip)
        bucket = self._budgets.get(key)
        if bucket is None:
            if len(self._budgets) >= MAX_ADDRESSES:
                self._budgets.popitem(last=False)  # least recently used
            bucket = self._budgets[key] = TokenBucket(self.rate, self.burst, self._clock)
        self._budgets.move_to_end(key)
        return bucket


def source_key(ip: str) -> str:
    """What one budget covers: an IPv4 address, or an IPv6 /64 (one host's usual allocation,
    where fresh addresses are as free as fresh keys)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr.ipv4_mapped or addr) if isinstance(addr, ipaddress.IPv6Address) else str(addr)
