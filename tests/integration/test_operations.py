"""Operator comforts against real daemons: JSON log lines, ``fedchain status --watch`` and the sync
progress of ``fedchain join``, each run as the separate process an operator would run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from tests.integration.harness import CLI, REPO, default_sigint, free_port_block, wait_for

pytestmark = pytest.mark.integration

# rich draws its live views only on a terminal; these make a pipe count as one
TERMINAL = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}


def plain(text: str) -> str:
    """Terminal output without its colour and cursor codes."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def spawn(args: list[str], out, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})}, preexec_fn=default_sigint)


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    proc.send_signal(sig)
    return proc.wait(timeout=20)


@pytest.mark.timeout(90)
def test_json_log_format(make_testnet):
    net = make_testnet(1, slot_ms=300)
    net.edit_config(0, 'log_format = "text"', 'log_format = "json"')
    net.start_all()
    net.wait_height(2, timeout=30)
    net.stop_all()
    for path in (net.home(0) / "logs" / "node.log", net.home(0) / "daemon.out"):  # the file and stderr
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert records, path
        assert all({"time", "level", "logger", "message"} <= set(r) for r in records), path
        messages = [r["message"] for r in records]
        assert any(m.startswith("node ") and "serving" in m for m in messages), messages
        assert records[-1]["message"] == "node stopped"


@pytest.mark.timeout(90)
def test_status_watch_refreshes_until_ctrl_c(make_testnet, tmp_path):
    net = make_testnet(1, slot_ms=300)
    net.start_all()
    net.wait_height(1, timeout=30)
    # without a terminal (a pipe, a log): one JSON object per refresh with --json ...
    with open(tmp_path / "json.out", "w") as out:
        watch = spawn(["status", "--watch", "--json", "--interval", "0.3", "--node", net.url(0)], out)
        wait_for(lambda: len((tmp_path / "json.out").read_text().splitlines()) >= 4, 20, "4 refreshes")
        assert stop(watch) == 0  # Ctrl-C is how a watch ends: no error
    heights = [json.loads(line)["final_height"] for line in (tmp_path / "json.out").read_text().splitlines()]
    assert heights == sorted(heights) and heights[-1] > heights[0]
    # ... and on a terminal a table redrawn in place, with the block rate
    with open(tmp_path / "tty.out", "w") as out:
        watch = spawn(["status", "--watch", "--interval", "0.3", "--node", net.url(0)], out, TERMINAL)
        wait_for(lambda: (tmp_path / "tty.out").read_text().count("blocks / min") >= 3, 20, "3 redraws")
        assert stop(watch) == 0
    text = (tmp_path / "tty.out").read_text()
    assert "\x1b[1A" in text  # cursor movements: redrawn in place, not appended
    text = plain(text)
    assert "final height" in text
    rates = [float(r) for r in re.findall(r"blocks / min\s+([\d.]+)", text)]
    assert rates[-1] > 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log"])
def test_join_shows_sync_progress(make_testnet, tmp_path, terminal):
    net = make_testnet(1, slot_ms=200)
    net.start_all()
    net.wait_height(40, timeout=60)
    port = free_port_block(1)
    with open(tmp_path / "join.out", "w") as out:
        join = spawn(["join", net.url(0), "--home", str(tmp_path / "joiner"), "--port", str(port),
                      "--trust-genesis"], out, TERMINAL if terminal else None)
        try:
            wait_for(lambda: "synced: final height" in (tmp_path / "join.out").read_text(), 60, "the node to sync")
        finally:
            assert stop(join, signal.SIGTERM) == 0
    raw = (tmp_path / "join.out").read_text()
    text = plain(raw)
    synced = int(re.search(r"synced: final height (\d+)", text).group(1))
    assert synced >= 40
    if terminal:  # a bar with blocks done of the chain's height
        bars = re.findall(r"sync .*? (\d+)/(\d+) blocks", text)
        assert bars, text[-2000:]
        done, total = map(int, bars[-1])
        assert total >= 40 and done <= total
    else:  # no bar, no terminal codes: the daemon's log lines stay one per line
        assert "\x1b[" not in raw
        assert re.search(r"^\S+ \S+ INFO fedchain\.node: node \w+ serving http://127\.0\.0\.1:\d+$", raw, re.M)
