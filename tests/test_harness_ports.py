"""Test daemons get ports that no outgoing connection can take before they bind."""

from pathlib import Path

from tests.integration.harness import free_port_block


def test_port_blocks_lie_outside_the_kernels_ephemeral_range() -> None:
    lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for count in (1, 26, 50):
        base = free_port_block(count)
        assert base + count <= lo or base > hi, (base, count, lo, hi)
