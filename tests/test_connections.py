"""The HTTP server's connection guard on its own (node/connections.py), on a hand-driven clock."""

from __future__ import annotations

from node.config_api import ApiConfig
from node.connections import ConnectionGuard


class FakeTransport:
    """A transport with a peer address that records being aborted (the guard's only calls)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.aborted = False

    def get_extra_info(self, name: str) -> object:
        return (self.host, 40000) if name == "peername" else None

    def abort(self) -> None:
        self.aborted = True


class Inner:
    """aiohttp's side of a connection: what reached it."""

    def __init__(self) -> None:
        self.made = self.lost = False

    def connection_made(self, transport: object) -> None:
        self.made = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def guard(**api: int) -> tuple[ConnectionGuard, list[float]]:
    now = [0.0]
    return ConnectionGuard(ApiConfig(**api), clock=lambda: now[0]), now


def connect(g: ConnectionGuard, host: str) -> tuple[object, FakeTransport, Inner]:
    inner = Inner()
    conn = g.wrap(lambda: inner)()
    transport = FakeTransport(host)
    conn.connection_made(transport)
    return conn, transport, inner


def test_per_address_cap_refuses_before_aiohttp_sees_the_connection() -> None:
    g, _ = guard(max_connections_per_client=2, max_connections=10)
    got = [connect(g, "10.0.0.1") for _ in range(3)]
    assert [t.aborted for _, t, _ in got] == [False, False, True]
    assert [i.made for _, _, i in got] == [True, True, False]
    assert connect(g, "10.0.0.2")[1].aborted is False  # another address is not affected
    assert g.stats["refused"] == 1


def test_a_full_server_evicts_the_crowded_address_s_longest_idle_connection() -> None:
    g, now = guard(max_connections_per_client=10, max_connections=4)
    crowd = []
    for _ in range(4):
        crowd.append(connect(g, "10.0.0.9"))
        now[0] += 1
    g.conns[crowd[1][1]].busy = 1  # a request in progress is never evicted
    _, t, inner = connect(g, "10.0.0.1")
    assert not t.aborted and inner.made
    assert [c[1].aborted for c in crowd] == [True, False, False, False]  # the oldest idle one
    crowd[0][0].connection_lost(None)  # asyncio reports the abort: nothing counted twice
    assert crowd[0][2].lost and len(g.conns) == 4 and g.per_client["10.0.0.9"] == 3
    # an address as crowded as the newcomer's would become keeps its connections: refuse instead
    g2, _ = guard(max_connections_per_client=10, max_connections=2)
    connect(g2, "10.0.0.1"), connect(g2, "10.0.0.2")
    assert connect(g2, "10.0.0.3")[1].aborted and g2.stats == {"refused": 1}


def test_a_connection_without_a_request_head_is_closed_after_the_deadline() -> None:
    g, now = guard(head_timeout_ms=3000)
    idle = connect(g, "10.0.0.1")
    busy = connect(g, "10.0.0.2")
    g.conns[busy[1]].busy = 1
    now[0] = 2.9
    g.sweep()
    assert not idle[1].aborted
    now[0] = 3.1
    g.sweep()
    assert idle[1].aborted and not busy[1].aborted and g.stats["head_timeout"] == 1
    assert g.per_client == {"10.0.0.2": 1}


def test_many_addresses_holding_equal_shares_cannot_lock_out_a_busier_honest_address() -> None:
    """Found in CI: eight attacker addresses evicting each other settle at an equal share of the
    server (6 each of 48). An honest address that already held as many (a site's peers' sessions)
    then found no address more crowded than itself and was refused until the head deadline.
    What a flood holds is idle connections, and they are what is counted."""
    g, _ = guard(max_connections_per_client=8, max_connections=48, head_timeout_ms=3000)
    honest = [connect(g, "10.0.0.1") for _ in range(6)]
    for c, _, _ in honest:
        g.conns[c.transport].busy = 1  # gossip sessions in progress
    slow = [connect(g, f"10.0.1.{i % 7}") for i in range(42)]
    assert not any(t.aborted for _, t, _ in slow) and len(g.conns) == 48
    _, t, inner = connect(g, "10.0.0.1")
    assert not t.aborted and inner.made
    assert sum(s[1].aborted for s in slow) == 1 and slow[0][1].aborted  # the longest idle gave way
    assert g.stats["evicted"] == 1 and not any(h[1].aborted for h in honest)


def test_a_connection_that_has_just_opened_is_never_evicted() -> None:
    """Found in CI: the monitor's /health connection, just opened, was the only idle connection
    of its address (the others carried gossip sessions) and was evicted for a flooding newcomer
    before its request head arrived."""
    g, now = guard(max_connections_per_client=8, max_connections=8, head_timeout_ms=3000)
    for _ in range(6):
        c, _, _ = connect(g, "10.0.0.1")
        g.conns[c.transport].busy = 1  # sessions in progress
    slow = connect(g, "10.0.1.1")
    now[0] = 5.0
    fresh = connect(g, "10.0.0.1")  # an honest request about to be sent
    assert not fresh[1].aborted and len(g.conns) == 8
    newcomer = connect(g, "10.0.1.2")
    assert not fresh[1].aborted and slow[1].aborted and not newcomer[1].aborted
    assert connect(g, "10.0.1.3")[1].aborted  # nothing settled is idle: refused
