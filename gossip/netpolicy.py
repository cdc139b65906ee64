"""Which addresses a node may dial when a stranger names them, and how addresses are grouped.

Peer exchange lets any peer put URLs in front of us; without a policy that turns every node into
a scanner of its own LAN, loopback services and cloud metadata endpoints (server-side request
forgery). The rule, as in Bitcoin's ``IsRoutable``: an address learned from the network is dialled
only if its class is within the node's ``dial_scope``:

* ``public`` (default): globally routable addresses only;
* ``private``: also private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7), for a LAN
  of devices;
* ``local``: also loopback (127/8, ::1), for testnets on one host.

Never, whatever the scope: unspecified (0.0.0.0/8, ::), link-local (169.254/16, fe80::/10, which
holds cloud metadata services), multicast, broadcast, and reserved or documentation ranges.
Host names are checked on the addresses they resolve to, at connection time
(:class:`PolicyResolver`), so a name cannot smuggle in what a literal could not. Bootstrap URLs
from the node's own config are the operator's choice and exempt.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult

from gossip.config import DialScope

_RANK = {"public": 0, "private": 1, "local": 2}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_PRIVATE = [ipaddress.ip_network(n) for n in
            ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")]


def address_class(ip: IPAddress) -> str:
    """``public``, ``private``, ``local`` (loopback) or ``never``."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "local"
    if any(ip in net for net in _PRIVATE if net.version == ip.version):
        return "private"
    if ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified):
        return "public"
    return "never"


def ip_allowed(ip: IPAddress, scope: DialScope) -> bool:
    kind = address_class(ip)
    return kind != "never" and _RANK[kind] <= _RANK[scope]


def host_of(url: str) -> str:
    """The host of a (normalised) base URL, without IPv6 brackets."""
    return (urlsplit(url).hostname or "").lower()


def parse_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def url_allowed(url: str, scope: DialScope) -> bool:
    """May a URL learned from the network be kept and dialled? Literal addresses are judged
    now; names are judged at connection time on what they resolve to (``localhost`` is
    loopback whatever a resolver says)."""
    host = host_of(url)
    if host == "localhost" or host.endswith(".localhost"):
        return _RANK["local"] <= _RANK[scope]
    ip = parse_ip(host)
    return ip is None or ip_allowed(ip, scope)


def address_group(host: str) -> str:
    """The network group of a host, as in Bitcoin's addrman: IPv4 /16, IPv6 /32; a name is
    grouped by its last two labels. Sources and tried entries are bucketed by group, so one
    network (or one domain) can only fill its own share of the address book."""
    ip = parse_ip(host)
    if ip is not None and isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        return "v4:" + ".".join(str(ip).split(".")[:2])
    if isinstance(ip, ipaddress.IPv6Address):
        return "v6:" + ip.exploded[:9]
    return "name:" + ".".join(host.rstrip(".").split(".")[-2:])


class PolicyResolver(AbstractResolver):
    """A resolver for the dialling session that drops resolved addresses outside the scope,
    so the policy holds for names too, at the moment of connecting (no rebinding window).
    Names in ``trusted`` (the bootstrap hosts from the operator's config) are not filtered."""

    def __init__(self, scope: DialScope, trusted: set[str], inner: AbstractResolver | None = None) -> None:
        from aiohttp.resolver import DefaultResolver

        self.scope = scope
        self.trusted = trusted
        self._inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host.lower() in self.trusted:
            return results
        allowed = [r for r in results if (ip := parse_ip(r["host"])) is not None
                   and ip_allowed(ip, self.scope)]
        if not allowed:
            raise OSError(f"{host} resolves only to addresses outside the dial scope {self.scope!r}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
