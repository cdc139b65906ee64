"""Attacks by any TCP client before it has authenticated: huge or malformed first frames, and
floods of handshakes that never finish. The victim must spend almost nothing on them."""

import pytest

from gossip.config import GossipConfig
from tests.hostile.attacks import half_open_flood, oversized_hellos
from tests.hostile.harness import Bounds, run_hostile

pytestmark = pytest.mark.integration

DEFAULTS = GossipConfig("c", "http://127.0.0.1:1")


@pytest.mark.timeout(240)
def test_oversized_hello_of_empty_maps_is_cut_off_unread(victims):
    """8 MiB of empty maps as a first frame used to cost 1.8 s of event loop and 512 MiB."""
    net = victims.net
    before = victims.drops(0).get("handshake", 0)
    with victims.monitor() as monitor:
        cut_off = run_hostile(oversized_hellos, net.url(0), 3, 8 * 1024 * 1024, timeout=120)
        print(f"cut off after {[f'{s:.3f}' for s in cut_off]} s; {monitor.summary()}")
        victims.check(monitor, Bounds(rss_growth_mb=64, health_p99_ms=500, health_max_ms=1500))
    assert max(cut_off) < 1.0, f"the attacker was cut off only after {max(cut_off):.2f} s"
    assert victims.drops(0).get("handshake", 0) - before >= 3  # each one counted


@pytest.mark.timeout(240)
def test_flood_of_half_open_handshakes_is_capped(victims):
    """Waves of connections that stop mid-handshake, half of them announcing a 16 MiB first frame
    and sending 4 MiB of it: the victim buffers none of it, holds few at once, and drops the
    silent ones at the handshake timeout."""
    net = victims.net
    with victims.monitor() as monitor:
        report = run_hostile(half_open_flood, "127.0.0.1", net.base_port, 3, 48,
                             16 * 1024 * 1024 - 16, 4 * 1024 * 1024, 15.0, timeout=150)
        print(report, monitor.summary())
        victims.check(monitor, Bounds(rss_growth_mb=64))
    # The attacker sees a connection cut off a moment after the victim freed its slot, so its
    # count of open connections may run one ahead of the victim's.
    assert report["peak_concurrent"] <= DEFAULTS.max_handshakes_per_ip + 1
    assert report["refused"] > 0
    assert report["longest_big_s"] < 1.0
    assert report["longest_silent_s"] < DEFAULTS.handshake_timeout + 1.5
