"""Choking on its own: who gets choked and when, what a choked link carries, and what undoes it."""

from __future__ import annotations

from gossip.codec import unpack
from gossip.mesh import GossipSubPolicy
from gossip.wire import CHOKE, UNCHOKE, ihave_frame, topic_frame
from tests.gossip.test_mesh_policy import IO, Clock, policy


def mid(k: int) -> bytes:
    return k.to_bytes(32, "big")


def deliver_round(p: GossipSubPolicy, clock: Clock, k: int, order: list[str], gap: float = 0.02) -> None:
    """Message ``k`` arrives from each peer of ``order`` in turn, ``gap`` seconds apart."""
    p.received(mid(k), order[0], "t")
    for node_id in order[1:]:
        clock.now += gap
        p.duplicate(mid(k), node_id, "t")


def choke_until(p: GossipSubPolicy, clock: Clock, mesh: list[str], choked: int) -> None:
    """Rounds of five messages in ``mesh`` order, a heartbeat after each, until ``choked`` are."""
    k = 0
    while len(p.choker.choking.get("t", ())) < choked:
        for _ in range(5):
            deliver_round(p, clock, k, mesh)
            k += 1
        p.heartbeat()


def controls(io: IO, kind: str) -> list[str]:
    return [nid for nid, f in io.sent if unpack(f)[0] == kind]


def meshed(peers: int = 20, **params: object) -> tuple[GossipSubPolicy, IO, Clock, list[str]]:
    p, io, clock = policy(peers, **params)
    p.heartbeat()
    io.sent.clear()
    return p, io, clock, sorted(p.mesh["t"])


def test_the_latest_mesh_peers_are_choked_one_a_heartbeat_down_to_d_eager() -> None:
    p, io, clock, mesh = meshed(d_eager=3)
    assert len(mesh) == 6
    k = 0
    for _ in range(8):  # mesh[0] always first, then the others in order, 20 ms apart
        for _ in range(5):
            deliver_round(p, clock, k, mesh)
            k += 1
        clock.now += 0.5
        p.heartbeat()
    assert controls(io, CHOKE) == [mesh[5], mesh[4], mesh[3]]  # latest first, one per heartbeat
    assert p.choker.choking["t"] == set(mesh[3:])
    assert controls(io, UNCHOKE) == []


def test_no_peer_is_choked_on_too_few_copies() -> None:
    p, io, clock, mesh = meshed(d_eager=3, choke_evidence=5.0)
    for k in range(4):  # four copies each: too little to judge
        deliver_round(p, clock, k, mesh)
    p.heartbeat()
    assert controls(io, CHOKE) == []
    deliver_round(p, clock, 4, mesh)  # decayed to 3.6, plus one: still short of 5
    p.heartbeat()
    assert controls(io, CHOKE) == []
    deliver_round(p, clock, 5, mesh)
    deliver_round(p, clock, 6, mesh)
    p.heartbeat()
    assert controls(io, CHOKE) == [mesh[5]]


def test_choking_off_and_flooding_networks_never_choke() -> None:
    for params in ({"d_eager": 0}, {"flood_peers": 30, "d_eager": 3}):
        p, io, clock, mesh = meshed(**params)  # type: ignore[arg-type]
        for k in range(50):
            deliver_round(p, clock, k, mesh)
            if k % 5 == 4:
                p.heartbeat()
        assert controls(io, CHOKE) == []


def test_a_peer_that_choked_us_gets_an_ihave_instead_of_the_message_until_it_unchokes() -> None:
    p, io, _, mesh = meshed()  # choking off here: being choked is the other side's choice
    chooser = mesh[2]
    p.on_control(chooser, unpack(topic_frame(CHOKE, "t")))
    targets = p.forward_targets("t", {mesh[0]}, mid(1))
    assert chooser not in targets and set(targets) == set(mesh[1:]) - {chooser}
    assert [(nid, f) for nid, f in io.sent] == [(chooser, ihave_frame("t", [mid(1)]))]
    p.on_control(chooser, unpack(topic_frame(UNCHOKE, "t")))
    assert chooser in p.forward_targets("t", set(), mid(2))


def test_only_a_mesh_peer_can_choke_us_and_a_prune_ends_it() -> None:
    p, _, _, mesh = meshed()
    outsider = next(f"p{i}" for i in range(20) if f"p{i}" not in mesh)
    p.on_control(outsider, unpack(topic_frame(CHOKE, "t")))
    assert outsider not in p.choker.choked_by.get("t", set())
    p.on_control(mesh[1], unpack(topic_frame(CHOKE, "t")))
    assert mesh[1] in p.choker.choked_by["t"]
    p.on_control(mesh[1], ["prune", "t", 60])
    assert mesh[1] not in p.choker.choked_by["t"]  # grafted again later, it starts unchoked


def test_a_choked_peer_that_delivers_first_is_unchoked() -> None:
    p, io, clock, mesh = meshed(d_eager=3)
    choke_until(p, clock, mesh, 3)
    io.sent.clear()
    slow = mesh[5]
    # its IHAVE beat every pushed copy: we ask for the message, and it is the first to arrive
    p.on_control(slow, unpack(ihave_frame("t", [mid(999)])))
    assert controls(io, "iwant") == [slow]
    p.received(mid(999), slow, "t")
    p.heartbeat()
    assert controls(io, UNCHOKE) == [slow] and slow not in p.choker.choking["t"]


def test_too_few_unchoked_peers_left_unchokes_one() -> None:
    p, io, clock, mesh = meshed(d_eager=3)
    choke_until(p, clock, mesh, 3)
    io.sent.clear()
    p.remove_peer(mesh[0])  # one of the three eager peers is gone
    p.remove_peer(mesh[1])
    p.heartbeat()  # the mesh refills; with only one old eager peer left, a choked one comes back
    assert len(controls(io, UNCHOKE)) == 1


def test_ihaves_of_a_choked_peer_are_not_held_to_the_gossip_budget() -> None:
    p, io, clock, mesh = meshed(d_eager=3, max_ihave_frames=2)
    choke_until(p, clock, mesh, 1)
    choked = next(iter(p.choker.choking["t"]))
    io.sent.clear()
    for j in range(5):
        p.on_control(choked, unpack(ihave_frame("t", [mid(5000 + j)])))
    assert controls(io, "iwant") == [choked] * 5
    stranger = next(f"p{i}" for i in range(20) if f"p{i}" not in mesh)
    for j in range(5):
        p.on_control(stranger, unpack(ihave_frame("t", [mid(6000 + j)])))
    assert controls(io, "iwant").count(stranger) == 2  # gossip IHAVE: two frames a heartbeat


def test_a_message_from_its_publisher_is_relayed_beyond_the_mesh() -> None:
    """What came straight from its signer goes to every subscriber outside the mesh as well (a
    second wide hop), but never back to a peer in ``exclude``; what came from anyone else goes
    to the mesh only; without ``relay`` nothing is relayed."""
    p, _, _, mesh = meshed()
    everyone = {f"p{i}" for i in range(20)}
    publisher = next(nid for nid in sorted(everyone) if nid not in mesh)
    assert set(p.forward_targets("t", {publisher}, mid(1), True)) == everyone - {publisher}
    assert set(p.forward_targets("t", {mesh[0]}, mid(2))) == set(mesh) - {mesh[0]}
    quiet, _, _, mesh = meshed(relay=False)
    assert set(quiet.forward_targets("t", set(), mid(3), True)) == set(mesh)


def relay_copies(p: GossipSubPolicy, clock: Clock, relayer: str, first: bool, count: int, k0: int = 0) -> None:
    """``count`` messages signed by ``p19`` that ``relayer`` (outside the mesh) relays to us,
    the first copy each time or a late one."""
    for k in range(k0, k0 + count):
        if first:
            p.received(mid(k), relayer, "t", "p19")
        else:
            p.received(mid(k), "p19", "t", "p19")
            clock.now += 0.02
            p.duplicate(mid(k), relayer, "t", "p19")


def test_a_relayer_whose_copies_come_late_is_choked_and_one_that_comes_first_is_not() -> None:
    """In a small network the publisher reaches us itself, so the relayed copies are late: after
    a few such copies we choke the relayer. A relayer whose copies come first is kept, and the
    publisher's own copies (flood publishing) are never judged as relays."""
    p, io, clock, mesh = meshed()
    late, early = [nid for nid in (f"p{i}" for i in range(19)) if nid not in mesh][:2]
    relay_copies(p, clock, late, False, 2)
    assert controls(io, CHOKE) == []                    # too few copies to judge
    relay_copies(p, clock, late, False, 6, 2)
    assert controls(io, CHOKE) == [late]
    relay_copies(p, clock, early, True, 20, 100)
    for k in range(200, 220):
        p.received(mid(k), "p19", "t", "p19")           # its publisher, not a relay
    assert controls(io, CHOKE) == [late]


def test_a_relay_choke_stops_our_relays_to_that_peer_until_it_lapses() -> None:
    """A peer outside the mesh can choke our relays into itself, not our mesh pushes, and only
    for ``relay_choke_ttl`` seconds; a late copy after that makes it choke again."""
    p, _, clock, mesh = meshed(relay_choke_ttl=60.0)
    outsider = next(nid for nid in (f"p{i}" for i in range(20)) if nid not in mesh)
    p.on_control(outsider, unpack(topic_frame(CHOKE, "t")))
    assert outsider not in p.forward_targets("t", set(), mid(1), True)
    assert outsider not in p.choker.choked_by.get("t", set())
    clock.now += 61.0
    p.heartbeat()
    assert outsider in p.forward_targets("t", set(), mid(2), True)
    p.on_control(outsider, unpack(topic_frame(CHOKE, "t")))
    p.on_control(outsider, unpack(topic_frame(UNCHOKE, "t")))
    assert outsider in p.forward_targets("t", set(), mid(3), True)
    for k in range(100):  # chokes on topics we do not relay leave nothing behind
        p.on_control(outsider, unpack(topic_frame(CHOKE, f"other{k}")))
    assert set(p.choker.relay_choked_by) <= {("t", outsider)}
