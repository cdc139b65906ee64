"""Runs a local testnet's daemons as child processes and shows their progress.

Each daemon is started as ``python -m cli.main node start --home HOME`` in a new session (so its
own process group: the terminal's Ctrl-C reaches only the supervisor, which then stops the nodes
in order instead of them dying mid-write). On Ctrl-C, SIGTERM or SIGHUP every group gets SIGTERM,
the supervisor waits up to ``grace`` seconds for clean exits, then SIGKILLs whatever is left of
each group, so no orphan survives. A second Ctrl-C during the wait skips straight to SIGKILL.

The daemon writes its own log to ``HOME/logs/node.log``; its stdout and stderr (which also catch
a crash before logging is set up) go to ``HOME/logs/console.log``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rich.live import Live
from rich.table import Table

from cli.client import NodeClient, NodeError
from cli.common import CliError, console
from node.home import HomePaths, load_home

STATUS_TIMEOUT = 0.8
REFRESH_S = 1.0


@dataclass
class NodeProc:
    """One child daemon and the last status it reported."""

    paths: HomePaths
    host: str
    port: int
    url: str
    proc: subprocess.Popen | None = None
    status: dict[str, Any] | None = None
    model: dict[str, Any] | None = None  # /fl/model on a federated-learning chain
    error: str = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the whole group has already exited


class _Stop(Exception):
    """SIGTERM or SIGHUP asked the supervisor to stop."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


class Supervisor:
    def __init__(self, homes: list[HomePaths], grace: float = 10.0) -> None:
        self.grace = grace
        self.nodes: list[NodeProc] = []
        self.fl = False
        for paths in homes:
            home = load_home(paths.root)
            net = home.config.network
            self.nodes.append(NodeProc(paths, net.host, net.port, net.url))
            self.fl = home.genesis.app.get("kind") == "fl"

    # --- processes ----------------------------------------------------------------------------

    def start_all(self) -> None:
        busy = [f"{n.host}:{n.port}" for n in self.nodes if not port_free(n.host, n.port)]
        if busy:
            raise CliError(f"port(s) already in use: {', '.join(busy)} (is another testnet running?)")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for node in self.nodes:
            node.paths.logs.mkdir(parents=True, exist_ok=True)
            with open(node.paths.logs / "console.log", "ab") as out:
                node.proc = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "node", "start", "--home", str(node.paths.root)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True)

    def stop_all(self) -> None:
        """SIGTERM every group, wait up to ``grace`` s, then SIGKILL what is left."""
        started = [n.proc for n in self.nodes if n.proc is not None]
        for proc in started:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        try:
            for proc in started:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        except KeyboardInterrupt:
            console.print("second interrupt: killing the nodes now")
        finally:
            for proc in started:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()

    # --- progress -----------------------------------------------------------------------------

    def poll(self, pool: ThreadPoolExecutor) -> None:
        def fetch(node: NodeProc) -> None:
            if not node.running:
                node.error = f"exited ({node.proc.returncode})" if node.proc else "not started"
                return
            try:
                client = NodeClient(node.url, timeout=STATUS_TIMEOUT)
                node.status = client.get_json("/status")
                node.error = ""
                if self.fl:
                    node.model = client.get_json("/fl/model")
            except NodeError as exc:
                node.error = "starting" if node.status is None else f"no answer: {exc}"

        list(pool.map(fetch, self.nodes))

    def table(self, elapsed: float) -> Table:
        columns = ["node", "pid", "state", "height", "final", "peers", "last block"]
        if self.fl:
            columns += ["model height", "test accuracy"]
        table = Table(*columns, "url", title=f"fedchain testnet, {len(self.nodes)} nodes, {elapsed:.0f} s",
                      title_justify="left")
        now_ms = time.time() * 1000
        for node in self.nodes:
            s = node.status or {}
            last = s.get("latest_block_time_ms")
            age = f"{(now_ms - last) / 1000:.1f} s ago" if s.get("final_height") and last else "-"
            state = f"[red]{node.error}[/]" if node.error else "[green]running[/]"
            cells = [node.paths.root.name, str(node.proc.pid if node.proc else "-"), state,
                     str(s.get("height", "-")), str(s.get("final_height", "-")), str(s.get("peers", "-")), age]
            if self.fl:
                m = node.model or {}
                cells += [str(m.get("height", "-")), accuracy_cell(m)]
            table.add_row(*cells, node.url)
        return table

    def run(self, duration: float | None = None) -> None:
        """Start the nodes, show progress until Ctrl-C/SIGTERM/SIGHUP or ``duration``, then stop them."""
        previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
        began = time.monotonic()
        pool = ThreadPoolExecutor(max_workers=min(16, len(self.nodes)), thread_name_prefix="status")
        reason = "duration reached"
        try:
            self.start_all()
            for node in self.nodes:
                console.print(f"{node.paths.root.name}: {node.url}/status  {node.url}/blocks/latest  "
                              f"{node.url}/metrics  logs: {node.paths.log_file}", highlight=False)
            with Live(self.table(0), console=console, refresh_per_second=4, transient=False) as live:
                while duration is None or time.monotonic() - began < duration:
                    self.poll(pool)
                    live.update(self.table(time.monotonic() - began))
                    if not any(n.running for n in self.nodes):
                        raise CliError("every node exited; see the console.log and node.log files in each home")
                    time.sleep(REFRESH_S)
        except KeyboardInterrupt:
            reason = "interrupted"
        except _Stop as stop:
            reason = str(stop)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            self.stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        finals = ", ".join(f"{n.paths.root.name}={(n.status or {}).get('final_height', '-')}" for n in self.nodes)
        console.print(f"stopped {len(self.nodes)} nodes ({reason}); final heights: {finals}", highlight=False)


def accuracy_cell(model: dict) -> str:
    """The newest model's test accuracy, or, while it is being evaluated, the newest evaluated
    model's with its height (a blank after every block told the operator nothing)."""
    acc = model.get("test_accuracy")
    if isinstance(acc, float):
        return f"{acc:.1%}"
    earlier = model.get("evaluated") or {}
    if isinstance(earlier.get("test_accuracy"), float):
        return f"{earlier['test_accuracy']:.1%} (h{earlier['height']})"
    return "-"
