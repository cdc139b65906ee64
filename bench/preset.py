"""The Fashion-MNIST CNN preset on real daemons: how long to 80, 85 and 88 % test accuracy.

What a user runs: ``fedchain testnet create 8 --app fl --dataset fashion_mnist`` cuts
Fashion-MNIST into one file per node and pins the CNN task (and the preset's settings) in the
genesis; each daemon (``fedchain node start``, a separate process on 127.0.0.1) reads only its
own file and trains, gossips, aggregates and finalizes over real sockets. Nothing here shortcuts
that: the benchmark only watches the daemons through their HTTP API.

Two accuracies are recorded. The one the verdict uses is the official Fashion-MNIST test set
(10 000 images no node has seen): at most every ``--eval-every`` seconds the newest final global
model's weights are fetched from node 0 (``/fl/model/{hash}``, checked against the hash the chain
committed) and evaluated here. Beside it, what the nodes themselves report for every model they
evaluated (``/telemetry``): accuracy on the public evaluation set the genesis pins (a few hundred
images carved from the training pool; the robust rule tunes itself on it, so it is not held out).

The run ends when the test accuracy reaches ``--target`` or the ``--budget`` (minutes) is spent.

Run: ``python -m bench preset [--quick] [--nodes 8] [--budget 55] [--target 0.88]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import RESULTS, finish, md_table, one_thread_children, parse_metrics
from tests.integration.harness import Testnet, get_bytes

MILESTONES = (0.80, 0.85, 0.88)
CREATE_TIMEOUT_S = 600  # cutting 60 000 images into files on a busy 2-core machine
START_TIMEOUT_S = 600


def machine() -> dict[str, Any]:
    """What the run was measured on (the load average says how shared the machine was)."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) / 1024 ** 2 for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "load_average_1_5_15m": list(os.getloadavg()),
            "platform": platform.platform()}


class TestScorer:
    """Accuracy of a global model on the official Fashion-MNIST test set, with the genesis task's
    model (built as every node builds it)."""

    def __init__(self, task: dict, seed: int, samples: int) -> None:
        import torch

        from learning.data import load_fashion_mnist
        from node.fl.task import Task

        torch.set_num_threads(1)  # leave the cores to the daemons
        self.net = Task.from_dict(task).build(seed)
        _, test = load_fashion_mnist()
        self.test = test.subset(slice(0, samples)) if samples < len(test) else test

    def __call__(self, weights: bytes) -> tuple[float, float]:
        from learning.models import set_flat
        from learning.train import evaluate
        from node.fl.blobs import parse_model

        set_flat(self.net, parse_model(weights, len(weights) + 1))
        return evaluate(self.net, self.test.x, self.test.y)


def fetch_model(net: Testnet, model_hash: str) -> bytes:
    """Node 0's weights of a final global model, checked against the hash the chain committed."""
    from gossip.crypto import sha256

    raw = get_bytes(f"{net.url(0)}/fl/model/{model_hash}", timeout=60)
    if sha256(raw).hex() != model_hash:
        raise RuntimeError(f"node 0 served weights that do not hash to model {model_hash[:12]}")
    return raw


def fl_events(net: Testnet, i: int) -> dict[str, int]:
    """Node ``i``'s FL counters (``/metrics``)."""
    metrics = parse_metrics(get_bytes(net.url(i) + "/metrics", timeout=60).decode())
    return {key.split('"')[1]: round(value) for key, value in metrics.items()
            if key.startswith('fedchain_fl_events_total{event="')}


def updates(net: Testnet) -> dict[str, int]:
    """Updates every node sent, and the chain's decisions on them (node 0's count of what final
    blocks accepted and rejected, the same on every node)."""
    decided = fl_events(net, 0)
    sent = sum(fl_events(net, i).get("updates_sent", 0) for i in range(net.n))
    return {"sent": sent, **{k: decided.get(k, 0) for k in ("updates_accepted", "updates_rejected", "rounds_skipped")}}


def decisions(net: Testnet, height: int) -> dict[str, Any]:
    """What the final blocks decided on each update (node 0's round records): rejections by
    reason, by staleness (block height minus the update's base height) and by sender, so an
    honest node the rule keeps rejecting shows up by name."""
    by_reason: Counter[str] = Counter()
    by_lag: Counter[str] = Counter()
    considered_by_lag: Counter[str] = Counter()
    by_sender: dict[str, list[int]] = {}
    for h in range(1, height + 1):
        try:
            record = net.get(0, f"/fl/updates?height={h}", timeout=60)
        except OSError:  # a height without a record (the first blocks) or a late answer: skip it
            continue
        for u in record["updates"]:
            lag = str(h - 1 - u["base_height"])
            considered_by_lag[lag] += 1
            counts = by_sender.setdefault(u["sender"][:12], [0, 0])
            counts[0] += 1
            if not u["accepted"]:
                by_reason[u["reason"]] += 1
                by_lag[lag] += 1
                counts[1] += 1
    return {"rejected_by_reason": dict(by_reason), "rejected_by_staleness": dict(sorted(by_lag.items())),
            "considered_by_staleness": dict(sorted(considered_by_lag.items())),
            "considered_rejected_by_sender": by_sender}


def watch(net: Testnet, scorer: TestScorer, started: float, budget_s: float, target: float, poll_s: float,
          eval_every_s: float) -> list[dict[str, Any]]:
    """Score the newest final model at most every ``eval_every_s`` until ``target`` or the budget."""
    curve: list[dict[str, Any]] = []
    scored_hash, scored_at = "", -eval_every_s
    while time.monotonic() - started < budget_s:
        try:
            model = net.get(0, "/fl/model", timeout=30)
            now = time.monotonic()
            weights = (fetch_model(net, model["hash"])
                       if model["hash"] != scored_hash and now - scored_at >= eval_every_s else None)
        except OSError as exc:  # a busy node answers late now and then: ask again at the next poll
            print(f"  node 0 did not answer ({exc}); asking again", flush=True)
            time.sleep(poll_s)
            continue
        if weights is not None:
            accuracy, loss = scorer(weights)
            scored_hash, scored_at = model["hash"], now
            curve.append({"t_s": now - started, "height": model["height"], "test_accuracy": accuracy,
                          "test_loss": loss, "public_eval_accuracy": model.get("test_accuracy")})
            print(f"  {curve[-1]['t_s'] / 60:5.1f} min  height {model['height']:>5}  test {accuracy:.4f}  "
                  f"public eval {model.get('test_accuracy') or float('nan'):.4f}", flush=True)
            if accuracy >= target:
                break
        time.sleep(poll_s)
    return curve


def reached(curve: list[dict[str, Any]], level: float) -> dict[str, Any] | None:
    """The first point of ``curve`` at or above ``level`` (its time and height), or None."""
    point = next((p for p in curve if p["test_accuracy"] >= level), None)
    return None if point is None else {"t_s": point["t_s"], "height": point["height"]}


def measure(nodes: int, budget_s: float, target: float, poll_s: float, eval_every_s: float, test_samples: int,
            root: Path) -> dict[str, Any]:
    at_start = machine()
    t0 = time.monotonic()
    with one_thread_children():
        net = Testnet(root, nodes, slot_ms=None, app="fl", create_args=("--dataset", "fashion_mnist"),
                      create_timeout=CREATE_TIMEOUT_S)
    create_s = time.monotonic() - t0
    genesis = json.loads((net.home(0) / "genesis.json").read_text())
    settings = {k: v for k, v in genesis["app"].items() if k not in ("kind", "task")}
    slot_ms = genesis["slot_ms"]
    scorer = TestScorer(genesis["app"]["task"], settings["seed"], test_samples)
    with one_thread_children():
        net.start_all()
    started = time.monotonic()
    try:
        net.wait_height(1, timeout=START_TIMEOUT_S)  # torch loads slowly in many processes at once
        curve = watch(net, scorer, started, budget_s, target, poll_s, eval_every_s)
        elapsed = time.monotonic() - started
        height = net.get(0, "/status", timeout=60)["final_height"]
        nodes_saw = net.get(0, "/telemetry", timeout=60)["model"]
        counts = updates(net)
        counts.update(decisions(net, height))
    finally:
        net.stop_all()
    best = max(curve, key=lambda p: p["test_accuracy"], default=None)
    return {
        "nodes": nodes, "slot_ms": slot_ms, "target": target, "budget_s": budget_s, "elapsed_s": elapsed, "create_s": create_s,
        "test_samples": len(scorer.test), "reached_target": best is not None and best["test_accuracy"] >= target,
        "best": best, "milestones": {f"{m:.2f}": reached(curve, m) for m in MILESTONES},
        "blocks": height, "updates": counts,
        "curve": curve, "node0_public_eval": nodes_saw, "task": genesis["app"]["task"], "settings": settings,
        "machine": {"at_start": at_start, "at_end": machine()},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench preset", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 daemons for 4 minutes (a smoke run)")
    parser.add_argument("--nodes", type=int, default=None, help="daemons (default 8)")
    parser.add_argument("--budget", type=float, default=None, help="minutes before giving up (default 55)")
    parser.add_argument("--target", type=float, default=0.88, help="test accuracy to reach")
    parser.add_argument("--eval-every", type=float, default=None, help="seconds between test-set scorings")
    parser.add_argument("--test-samples", type=int, default=10_000, help="official test images scored")
    args = parser.parse_args(argv)
    nodes = args.nodes or (4 if args.quick else 8)
    budget = 60 * (args.budget or (4 if args.quick else 55))
    eval_every = args.eval_every or (30.0 if args.quick else 60.0)
    started = time.perf_counter()
    # a long run stopped with SIGTERM still stops its daemons (the finally blocks run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    with tempfile.TemporaryDirectory(prefix="fedchain-preset-") as tmp:
        result = measure(nodes, budget, args.target, 5.0, eval_every, args.test_samples, Path(tmp))
    result["quick"] = args.quick
    return finish("preset", result, started, _plot, _table)


def _plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve, seen = result["curve"], result["node0_public_eval"]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot([p["t_s"] / 60 for p in curve], [p["test_accuracy"] for p in curve], marker=".", label="test set (10k)")
    ax[0].set(xlabel="minutes since the daemons started", ylabel="accuracy",
              title=f"{result['nodes']} daemons, Fashion-MNIST CNN preset")
    ax[1].plot([p["height"] for p in curve], [p["test_accuracy"] for p in curve], marker=".", label="test set (10k)")
    ax[1].plot([p["height"] for p in seen], [p["test_accuracy"] for p in seen], lw=0.8, alpha=0.7,
               label="public evaluation set (node 0)")
    ax[1].set(xlabel="height (final blocks)", ylabel="accuracy", title="accuracy per height")
    for a in ax:
        a.axhline(result["target"], ls=":", c="k")
        a.set_ylim(0.5, 0.95)
        a.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "preset.png", dpi=110)
    plt.close(fig)


def _minutes(point: dict[str, Any] | None) -> str:
    return "not reached" if point is None else f"{point['t_s'] / 60:.1f} min (height {point['height']})"


def _table(result: dict[str, Any]) -> str:
    rows = [[f"{float(level):.0%}", _minutes(point)] for level, point in result["milestones"].items()]
    return md_table(["test accuracy", "first reached after"], rows)


def _rejections(u: dict[str, Any]) -> str:
    """Why the rejected updates were rejected (absent from results recorded before the breakdown)."""
    if "rejected_by_reason" not in u:
        return ""
    reasons = ", ".join(f"{n} {r.removeprefix('clustering: ')}" for r, n in
                        sorted(u["rejected_by_reason"].items(), key=lambda kv: -kv[1])) or "none"
    lags = ", ".join(f"{u['rejected_by_staleness'].get(k, 0)} of {n} at staleness {k}"
                     for k, n in u["considered_by_staleness"].items())
    senders = ", ".join(f"{r} of {n}" for n, r in sorted(u["considered_rejected_by_sender"].values()))
    return f"""
Rejections by reason: {reasons}. By staleness (the block's height minus 1 minus the update's
base height): {lags}. Per node (rejected of considered): {senders}."""


def verdict(result: dict[str, Any]) -> str:
    best, target = result["best"], result["target"]
    if best is None:
        return f"**Not measured**: no global model was scored within {result['elapsed_s'] / 60:.0f} minutes."
    if result["reached_target"]:
        point = result["milestones"].get(f"{target:.2f}") or reached(result["curve"], target)
        return (f"**Reached**: {best['test_accuracy']:.2%} test accuracy after {point['t_s'] / 60:.1f} minutes "
                f"(height {point['height']}) >= the {target:.0%} goal.")
    return (f"**Not reached**: the best test accuracy in {result['elapsed_s'] / 60:.0f} minutes was "
            f"{best['test_accuracy']:.2%} (height {best['height']}, {best['t_s'] / 60:.1f} min), "
            f"{100 * (target - best['test_accuracy']):.1f} points short of the {target:.0%} goal.")


def report(result: dict[str, Any]) -> str:
    s, u, m = result["settings"], result["updates"], result["machine"]["at_start"]
    load = result["machine"]["at_end"]["load_average_1_5_15m"]
    label = " (reduced profile, --quick)" if result.get("quick") else ""
    curve_rows = [[f"{p['t_s'] / 60:.1f}", p["height"], p["test_accuracy"], p["public_eval_accuracy"]]
                  for p in result["curve"]]
    return f"""## The Fashion-MNIST CNN preset on {result['nodes']} real daemons{label}

`fedchain testnet create {result['nodes']} --app fl --dataset fashion_mnist` and one `fedchain node
start` per home (separate processes, real sockets on 127.0.0.1, {result['slot_ms'] / 1000:.0f} s slots); the benchmark only
reads the nodes' HTTP API. Test accuracy: the newest final global model, fetched from node 0 by
the hash its block committed, scored on the official Fashion-MNIST test set ({result['test_samples']}
images no node holds) at most once a minute, so a level is first seen up to a minute after the
block that reached it. Public evaluation: what node 0 reports itself, on the
{result['task']['eval_set_samples']} images the genesis pins (part of the training pool).
Preset (the genesis `fedchain testnet create` wrote): the task's {result['task']['model']}, local epochs
{s['local_epochs']}, batch {s['batch_size']}, lr {s['lr']} ({s['lr_schedule']}), clip {s['clip_norm']},
noise multiplier {s['noise_multiplier']}, top-k {s['topk_fraction']} ({s['encoding']}), rule
{s['rule']}, Dirichlet alpha {s['dirichlet_alpha']}. Machine: {m['cpu']}, {m['cores']} cores shared
with other work (load average {m['load_average_1_5_15m'][0]:.1f} at the start, {load[0]:.1f} at the end).
Command: `python -m bench preset` (measured {result['measured_at']}; creating the testnet took
{result['create_s']:.0f} s).

{verdict(result)}

{_table(result)}

Over {result['elapsed_s'] / 60:.0f} minutes: {result['blocks']} final blocks, {u['sent']} updates sent
(all nodes), {u['updates_accepted']} accepted and {u['updates_rejected']} rejected by final blocks,
{u['rounds_skipped']} rounds skipped.{_rejections(u)}

{md_table(["minutes", "height", "test accuracy", "public eval (node 0)"], curve_rows)}

![preset](results/preset.png)
"""


if __name__ == "__main__":
    main()
