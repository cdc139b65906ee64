"""Real testnets for integration tests: daemons as separate processes on 127.0.0.1.

Homes are made by the real CLI (`fedchain testnet create`), daemons are started with
`fedchain node start`, and everything is observed over the nodes' HTTP APIs, exactly as a user
would. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

CLI = [sys.executable, "-m", "cli.main"]
REPO = Path(__file__).resolve().parents[2]


def _outside_ephemeral(count: int) -> range:
    """Bases for ``count`` consecutive ports outside the kernel's ephemeral range.

    The kernel hands ports of that range to outgoing connections, and every daemon dials its
    peers: a port checked free here could be taken by some connection before the daemon that
    was given it binds (seen with 24 daemons: "address already in use")."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    below = range(max(1024, lo - 12000), lo - count)
    return below if len(below) >= 1000 else range(hi + 1, 65536 - count)


def free_port_block(count: int) -> int:
    """A base port such that ``count`` consecutive ports on 127.0.0.1 are free right now, outside
    the range outgoing connections take theirs from."""
    bases = _outside_ephemeral(count)
    for _ in range(200):
        base = random.choice(bases)
        try:
            socks = []
            for p in range(base, base + count):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no free block of {count} ports on 127.0.0.1 in {bases}")


def default_sigint() -> None:
    """``preexec_fn`` of a child a test will send Ctrl-C (SIGINT): restore its default action.
    Shells start background jobs with SIGINT ignored, children inherit that, and Python then
    installs no KeyboardInterrupt handler: a test run started in the background (``make test &``)
    would otherwise see every Ctrl-C it sends ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


class Testnet:
    """N node homes and their daemon processes."""

    def __init__(self, root: Path, n: int, *, slot_ms: int | None = 1000, genesis: dict | None = None,
                 app: str = "counter", create_args: tuple[str, ...] = (), create_timeout: float = 60) -> None:
        self.root = root
        self.n = n
        self.base_port = free_port_block(n + 2)
        self.procs: dict[int, subprocess.Popen] = {}
        slot = () if slot_ms is None else ("--slot-ms", str(slot_ms))  # None: the CLI's default for the data set
        res = cli("testnet", "create", str(n), "--dir", str(root), "--base-port", str(self.base_port),
                  *slot, "--app", app, *create_args, timeout=create_timeout)
        assert res.returncode == 0, res.stderr + res.stdout
        self.overrides = genesis or {}

    def home(self, i: int) -> Path:
        return self.root / f"node{i}"

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.base_port + i}"

    def node_id(self, i: int) -> str:
        return json.loads((self.home(i) / "node_key.json").read_text())["node_id"]

    def edit_config(self, i: int, old: str, new: str) -> None:
        """Replace the line ``old`` of node ``i``'s config.toml (which must hold it) by ``new``."""
        path = self.home(i) / "config.toml"
        text = path.read_text()
        assert old in text, f"{path} has no {old!r}"
        path.write_text(text.replace(old, new))

    def enable_faults(self, i: int, *names: str) -> None:
        """Switch on boolean ``[fault]`` keys (``node/faults.py``, ``node/fl/faults.py``) of node ``i``."""
        for name in names:
            self.edit_config(i, f"{name} = false", f"{name} = true")

    def rewrite_genesis(self, start_in_ms: int = 2500) -> None:
        """Apply genesis overrides and move the genesis time just ahead, identically in every home."""
        path = self.home(0) / "genesis.json"
        genesis = json.loads(path.read_text())
        genesis.update(self.overrides)
        genesis["genesis_time_ms"] = int(time.time() * 1000) + start_in_ms
        text = json.dumps(genesis, indent=2, sort_keys=True)
        for i in range(self.n):
            (self.home(i) / "genesis.json").write_text(text)

    def start(self, i: int, home: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start node ``i``'s daemon; ``env`` adds to the environment (a CPU kind, a skewed clock)."""
        home = home or self.home(i)
        log = open(home / "daemon.out", "ab")
        proc = subprocess.Popen(self.launch(i, [*CLI, "node", "start", "--home", str(home)]), cwd=REPO, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **env} if env else None)
        self.procs[i] = proc
        return proc

    def launch(self, i: int, argv: list[str]) -> list[str]:
        """The command that runs ``argv`` for node ``i`` (on this host; a subclass may place it elsewhere)."""
        return argv

    def start_all(self) -> None:
        self.rewrite_genesis()
        for i in range(self.n):
            self.start(i)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        proc.send_signal(sig)
        proc.wait(timeout=15)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    def on_host(self, i: int, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` where node ``i``'s address is reachable (here: anywhere on this host)."""
        return fn(*args)

    def get(self, i: int, path: str, timeout: float = 3.0) -> Any:
        return self.on_host(i, get_json, self.url(i) + path, timeout)

    def heights(self, nodes: list[int] | None = None) -> list[int]:
        return [self.get(i, "/status")["final_height"] for i in (nodes if nodes is not None else range(self.n))]

    def wait_height(self, height: int, nodes: list[int] | None = None, timeout: float = 60) -> list[int]:
        return wait_for(lambda: (h := self.heights(nodes)) and min(h) >= height and h, timeout,
                        f"final height {height} on nodes {nodes}")

    def last_final(self, i: int) -> int | None:
        """The newest "final N" height node ``i`` logged (None if none)."""
        path = self.home(i) / "daemon.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        found = re.findall(r"fedchain\.consensus: final (\d+) ", text)
        return int(found[-1]) if found else None

    def log_tail(self, i: int, lines: int = 40) -> str:
        path = self.home(i) / "daemon.out"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def get_json(url: str, timeout: float = 3.0, tries: int = 30) -> Any:
    """GET ``url`` as JSON, as :func:`get_bytes` does."""
    return json.loads(get_bytes(url, timeout, tries))


def get_bytes(url: str, timeout: float = 3.0, tries: int = 30) -> bytes:
    """GET ``url`` as an honest client does: over the node's limits (429) it waits as long as
    ``Retry-After`` says and asks again. On a local testnet every peer, the CLI and the tests share
    127.0.0.1, so a test's read can meet the limits its peers' traffic has used up."""
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 429 or attempt == tries - 1:
                raise
            time.sleep(float(exc.headers.get("Retry-After", "1")))
    raise AssertionError("unreachable")


def http_status(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, Any]:
    """(status, parsed JSON body) for a request that may fail with 4xx."""
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
