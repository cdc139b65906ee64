"""What a running FL daemon of the default genesis imports, watched by Python itself
(``PYTHONPROFILEIMPORTTIME`` logs every import, lazy ones included, to the daemon's log) until it
has trained, sent updates, aggregated and evaluated. Each of these packages once cost every daemon
tens of MB of private memory: torch itself (218 MB resident for a model of 4,810 weights, which
numpy trains), ``torch._dynamo`` and sympy (torch's optimizers import them), opacus (the
accountant), sklearn (the digits file) and scipy (the accountant's and the clustering rule's
helpers)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.integration.harness import wait_for

pytestmark = pytest.mark.integration

UNWANTED = ("torch", "sympy", "opacus", "sklearn", "scipy")


def imported(log: str) -> set[str]:
    return set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", log, re.M))


def wait_trained_and_evaluated(net) -> None:
    me = net.node_id(0)

    def trained_and_evaluated() -> bool:
        model = net.get(0, "/fl/model")
        if "test_accuracy" not in model:
            return False
        return any(u["sender"] == me and u["accepted"] for h in range(1, model["height"] + 1)
                   for u in net.get(0, f"/fl/updates?height={h}")["updates"])

    wait_for(trained_and_evaluated, 150, "node 0's update in a final block and the model evaluated")


def thread_nice_levels(pid: int) -> list[int]:
    """The nice level of every thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    levels = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        levels.append(int(fields[16]))
    return levels


@pytest.mark.timeout(180)
def test_a_training_daemon_loads_no_package_it_does_not_use(make_testnet):
    net = make_testnet(2, slot_ms=2000, app="fl")
    net.rewrite_genesis()
    for i in range(2):
        net.start(i, env={"PYTHONPROFILEIMPORTTIME": "1"})
    wait_trained_and_evaluated(net)
    # training and the evaluation of new models (and threads they start, which inherit it) run
    # niced below the rest of the daemon: the event loop, block verification, the writers
    levels = thread_nice_levels(net.procs[0].pid)
    assert set(levels) == {0, 10} and levels.count(10) >= 2 and levels.count(0) >= 3, levels
    net.stop_all()
    modules = imported((net.home(0) / "daemon.out").read_text())
    assert {"numpy", "learning.optimizers", "node.fl.trainer"} <= modules  # the log is read right
    assert sorted(m for m in modules if any(m == u or m.startswith(u + ".") for u in UNWANTED)) == []
