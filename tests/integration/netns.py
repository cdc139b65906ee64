"""Hosts for integration tests: one Linux network namespace per daemon, joined by a switch.

Every host gets its own network stack and one address on a private LAN (10.213.0.0/24) that
exists only inside the namespaces this module makes: a daemon there sees its peers as other
machines (their own addresses, their own connection limits), and a partition is a real cut of
the LAN, not a flag in the code. The switch is a namespace of its own holding two bridges; a
partition moves some hosts' ports to the second bridge, a heal moves them back. Nothing is
added to the caller's namespace. The test process reaches each host's API from a thread that
has entered that host's namespace (``setns`` applies to the calling thread only).

Needs root (CAP_SYS_ADMIN) and iproute2; :func:`available` says whether this machine has both.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.harness import Testnet

T = TypeVar("T")

SUBNET = "10.213.0"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@functools.cache
def available() -> str:
    """'' if namespaces can be made here, else why not (for a skip message); probed once."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's ip"
    probe = f"fcprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return ""


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")


def _enter(namespace: str) -> None:
    """Move the calling thread into ``namespace``'s network stack."""
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _remove_orphans() -> None:
    """Delete namespaces an earlier test process made and could not remove (it was killed)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    for name in re.findall(r"^(fc(\d+)(?:sw|h\d+))\b", listing, flags=re.M):
        ns, pid = name
        if not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class Lan:
    """``n`` hosts on one switch; :meth:`partition` and :meth:`heal` cut and mend it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.prefix = f"fc{os.getpid()}"
        self.switch = f"{self.prefix}sw"
        self._made: list[str] = []
        self._threads: dict[int, ThreadPoolExecutor] = {}
        _remove_orphans()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def host(self, i: int) -> str:
        """Namespace name of host ``i``."""
        return f"{self.prefix}h{i}"

    def address(self, i: int) -> str:
        return f"{SUBNET}.{i + 1}"

    def _port(self, i: int) -> str:
        return f"p{i}"

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        for bridge in ("br0", "br1"):
            _ip("-n", self.switch, "link", "add", bridge, "type", "bridge")
            _ip("-n", self.switch, "link", "set", bridge, "up")
        for i in range(self.n):
            ns = self.host(i)
            _ip("netns", "add", ns)
            self._made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", self._port(i), "netns", self.switch)
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.switch, "link", "set", self._port(i), "master", "br0", "up")

    def command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run on host ``i`` (``ip netns exec`` execs it: the process is the command)."""
        return ["ip", "netns", "exec", self.host(i), *argv]

    def partition(self, side: Iterable[int]) -> None:
        """Cut the hosts of ``side`` off from the others (each side still reaches its own)."""
        for i in side:
            _ip("-n", self.switch, "link", "set", self._port(i), "master", "br1")

    def heal(self) -> None:
        for i in range(self.n):
            _ip("-n", self.switch, "link", "set", self._port(i), "master", "br0")

    def on_host(self, i: int, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on a thread inside host ``i``'s network stack (sockets it opens are there)."""
        pool = self._threads.get(i)
        if pool is None:
            pool = self._threads[i] = ThreadPoolExecutor(1, initializer=_enter, initargs=(self.host(i),))
        return pool.submit(fn, *args).result()

    def close(self) -> None:
        for pool in self._threads.values():
            pool.shutdown(wait=True)
        for ns in reversed(self._made):  # deleting a namespace deletes its veth ends and bridges
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self._made.clear()


class LanTestnet(Testnet):
    """A :class:`~tests.integration.harness.Testnet` whose node ``i`` runs on host ``i`` of ``lan``:
    it listens on that host's LAN address, bootstraps from the others' and dials private
    addresses (the LAN is 10/8), as a daemon on a site's network would."""

    def __init__(self, root: Path, lan: Lan, **kwargs: Any) -> None:
        super().__init__(root, lan.n, **kwargs)
        self.lan = lan
        loopback = re.compile(r"http://127\.0\.0\.1:(\d+)")
        for i in range(self.n):
            path = self.home(i) / "config.toml"
            text = loopback.sub(lambda m: self._lan_url(int(m.group(1)) - self.base_port), path.read_text())
            for old, new in (('host = "127.0.0.1"', f'host = "{lan.address(i)}"'),
                             ('dial_scope = "local"', 'dial_scope = "private"')):
                assert old in text, f"{path} has no {old!r}"
                text = text.replace(old, new)
            path.write_text(text)

    def _lan_url(self, i: int) -> str:
        return f"http://{self.lan.address(i)}:{self.base_port + i}"

    def url(self, i: int) -> str:
        return self._lan_url(i)

    def launch(self, i: int, argv: list[str]) -> list[str]:
        return self.lan.command(i, argv)

    def on_host(self, i: int, fn: Callable[..., Any], *args: Any) -> Any:
        return self.lan.on_host(i, fn, *args)
