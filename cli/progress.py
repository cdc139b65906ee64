"""Progress of a node that is catching up: ``fedchain join`` shows it while its daemon syncs.

A thread polls the joining node's own ``/status`` (its final height, and whether it still syncs)
and the height of the node it joined, and shows the difference as a rich progress bar with blocks,
rate and time left, until the node has caught up. On a terminal the daemon's log lines scroll
above the bar (the bar is started before the daemon sets up logging, so its handler writes
through rich's stderr proxy); elsewhere (a log file, a supervisor) it prints one plain line every
few seconds instead, so logs stay one line per record.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cli.client import NodeClient, NodeError

POLL_S = 0.5
IN_FLIGHT = 1  # a node that follows live may be a block behind the one it joined at any instant
PLAIN_EVERY_S = 5.0


class SyncProgress:
    """Shows how far the node at ``local_url`` has synced towards the chain at ``remote_url``."""

    def __init__(self, local_url: str, remote_url: str, console: Console) -> None:
        self.local = NodeClient(local_url, timeout=2.0)
        self.remote = NodeClient(remote_url, timeout=2.0)
        self.console = console
        self.progress: Progress | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sync-progress", daemon=True)

    def start(self) -> None:
        if self.console.is_interactive:
            self.progress = Progress(
                TextColumn("[bold]sync[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("blocks"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
                console=self.console, redirect_stderr=True, redirect_stdout=True)
            self.progress.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.progress is not None:
            self.progress.stop()

    def _heights(self) -> tuple[int, bool, int] | None:
        """(this node's final height, still syncing?, the joined node's final height), or None
        while either does not answer (the daemon is still starting)."""
        try:
            theirs = self.remote.get_json("/status")  # first: by the time ours answers, it may have that block
            mine = self.local.get_json("/status")
            return int(mine["final_height"]), bool(mine["syncing"]), int(theirs["final_height"])
        except (NodeError, KeyError, TypeError, ValueError):
            return None

    def _run(self) -> None:
        began = time.monotonic()
        task = self.progress.add_task("sync", total=None, rate="") if self.progress else None
        start_height: int | None = None
        last_plain = 0.0
        while not self._stop.wait(POLL_S):
            heights = self._heights()
            if heights is None:
                continue
            height, syncing, target = heights
            start_height = height if start_height is None else start_height
            elapsed = time.monotonic() - began
            rate = (height - start_height) / elapsed if elapsed > 0 else 0.0
            if self.progress is not None and task is not None:
                self.progress.update(task, completed=height, total=max(target, height), rate=f"{rate:.1f}/s")
            elif time.monotonic() - last_plain >= PLAIN_EVERY_S:
                last_plain = time.monotonic()
                left = f", {(target - height) / rate:.0f} s left" if rate > 0 and target > height else ""
                self.console.print(f"sync: {height}/{target} blocks ({rate:.1f} blocks/s{left})", highlight=False)
            if not syncing and height >= target - IN_FLIGHT:
                if self.progress is not None:
                    self.progress.stop()
                    self.progress = None
                self.console.print(f"synced: final height {height} ({height - start_height} blocks in "
                                   f"{elapsed:.1f} s); the node keeps running (Ctrl-C stops it)", highlight=False)
                return
