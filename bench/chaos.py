"""Chaos: Byzantine delegates, and honest nodes killed, paused and restarted, on the FL testnet.

The default FL testnet (``fedchain testnet create 8 --app fl``: 8 daemons, every one a delegate,
2 s slots) with two Byzantine delegates switched on in ``[fault]`` (``node/faults.py``): node6
double-signs and withholds its votes, node7 lies about its height and floods the mempool. For
ten minutes a seeded schedule hits the six honest nodes, one at a time: SIGKILL then a restart,
SIGSTOP then SIGCONT, or a clean restart (SIGTERM, then start), and waits until the node has
caught up before the next fault.

Why one at a time: 8 voters need a quorum of floor(2*8/3)+1 = 6 precommits, so at most 2 may be
silent; the withholding delegate is one of them, which leaves one honest node that may be down
(the height liar and flooder still votes). Once the double-signer is jailed the voters are 7 and
the quorum 5, so a second honest fault would still be within budget, but the schedule keeps to
the stricter bound throughout. A node counts as down from the fault until it has caught up.

Measured, from the nodes themselves (see :mod:`bench.chaos_watch` and :mod:`bench.chaos_updates`):
final blocks reverted, heights at which honest nodes disagree, honest updates lost, slots from each
fault until the chain finalizes its next block (against the same measure at random instants of the
fault-free warm-up), memory per node (``/proc``), event-loop lag p99 (``/metrics``), machine load.
``--quick``: 4 daemons (node3 double-signs, lies about its height and floods the mempool, but votes,
since with 4 voters a withholder would leave no room for an honest fault), 40 s of chaos and at
least one fault of each kind.

Run: ``python -m bench chaos [--quick] [--seed N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import aiohttp

from bench.chaos_report import plot, report, table  # noqa: F401  (bench/report.py finds report here)
from bench.chaos_updates import account, sent_updates
from bench.chaos_watch import Watcher
from bench.common import finish, one_thread_children, parse_metrics, percentiles
from node.fl.settings import FLSettings
from tests.integration.harness import Testnet

KINDS = ("kill", "pause", "restart")
RECOVERY_TIMEOUT_S = 120.0
SLOT_MS = 2000
BACKOFFS = 'fedchain_consensus_events_total{event="sync_backoffs"}'
NOT_YET = (aiohttp.ClientError, OSError, asyncio.TimeoutError, KeyError, ValueError)
"""What asking a node that is starting, stopped or catching up may raise."""


@dataclass(frozen=True)
class Setup:
    nodes: int
    byzantine: dict[int, tuple[str, ...]]
    warmup_s: float
    chaos_s: float
    down_s: tuple[float, float]  # how long a killed node stays down, or a paused one paused
    gap_s: tuple[float, float]  # quiet time after a node has caught up, before the next fault
    min_faults: int = 0  # go on past chaos_s until this many faults were made (one of each kind: 3)


FULL = Setup(8, {6: ("double_sign", "withhold_votes"), 7: ("lie_height", "flood_mempool")}, 60, 600, (4, 20), (2, 8))
QUICK = Setup(4, {3: ("double_sign", "lie_height", "flood_mempool")}, 10, 40, (2, 6), (1, 2), min_faults=3)


def budget(setup: Setup) -> dict:
    """How many honest nodes may be down at once while the voters that still sign make a quorum."""
    n = setup.nodes
    quorum = 2 * n // 3 + 1
    silent = sum("withhold_votes" in f for f in setup.byzantine.values())
    return {"voters": n, "quorum": quorum, "withholding": silent, "honest_down_at_once": n - quorum - silent}


@dataclass
class Fault:
    node: int
    kind: str
    down_s: float
    at: float = 0.0
    height: int = 0
    resumed: float = 0.0
    recovered: float | None = None
    notes: list[str] = field(default_factory=list)


async def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        await asyncio.to_thread(proc.wait, timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


async def inject(net: Testnet, watcher: Watcher, fault: Fault) -> None:
    """Carry out one fault on its node, bring the node back, and wait until it has caught up."""
    i, proc = fault.node, net.procs[fault.node]
    fault.at, fault.height = time.time(), watcher.chain_top()
    if fault.kind == "pause":
        proc.send_signal(signal.SIGSTOP)
        await asyncio.sleep(fault.down_s)
        proc.send_signal(signal.SIGCONT)
    elif fault.kind == "kill":
        proc.send_signal(signal.SIGKILL)
        await _wait_exit(proc, 15)
        await asyncio.sleep(fault.down_s)
        net.start(i)
    else:
        await watcher.quiet(i)  # an open /subscribe holds a stopping daemon for tens of seconds
        proc.send_signal(signal.SIGTERM)
        if not await _wait_exit(proc, 20):
            fault.notes.append("did not stop within 20 s of SIGTERM: killed")
            proc.send_signal(signal.SIGKILL)
            await _wait_exit(proc, 15)
        fault.down_s = time.time() - fault.at
        net.start(i)
        watcher.resume(i)
    fault.resumed = time.time()
    if await catch_up(watcher, [i], fault.resumed + RECOVERY_TIMEOUT_S):
        fault.recovered = time.time()
    else:
        fault.notes.append(f"not caught up {RECOVERY_TIMEOUT_S:.0f} s after it resumed")


async def catch_up(watcher: Watcher, nodes: list[int], deadline: float, ahead: int = -1) -> bool:
    """Wait until every node in ``nodes`` holds the chain's top height plus ``ahead`` (by default
    one block behind it counts as caught up); False at ``deadline``."""
    target = watcher.chain_top() + ahead if ahead > 0 else None
    while time.time() < deadline:
        want = target if target is not None else watcher.chain_top() + ahead
        try:
            if min([(await watcher.get(i, "/status"))["final_height"] for i in nodes]) >= want:
                return True
        except NOT_YET:  # starting up, or still catching up
            pass
        await asyncio.sleep(0.5)
    return False


async def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.5)


def log_counts(net: Testnet, i: int, names: tuple[str, ...]) -> dict[str, int]:
    """How many ``FAULT <name>:`` lines node ``i`` logged, per fault name."""
    text = (net.home(i) / "logs" / "node.log").read_text(errors="replace")
    return {name: text.count(f"FAULT {name}:") for name in names}


async def run(net: Testnet, setup: Setup, seed: int) -> dict:
    """The run itself: warm-up, chaos, settling, and every read made while the daemons still run."""
    honest = [i for i in range(net.n) if i not in setup.byzantine]
    liars = [i for i, f in setup.byzantine.items() if "lie_height" in f]
    readable = [i for i in range(net.n) if i not in liars]
    rng = random.Random(seed)
    async with Watcher(net, honest, readable, seed) as w:
        began = time.time()
        await wait_until(lambda: w.chain_top() >= 1, 180, "the first final block")
        warm = time.time()
        await asyncio.sleep(setup.warmup_s)
        chaos = time.time()
        faults: list[Fault] = []
        kinds: list[str] = []
        stop_at = chaos + setup.chaos_s
        # one honest node down at a time: the next fault waits until every honest node has caught up
        while ((time.time() < stop_at or len(faults) < setup.min_faults)
               and await catch_up(w, honest, max(stop_at, time.time() + RECOVERY_TIMEOUT_S))):
            if not kinds:
                kinds = rng.sample(KINDS, len(KINDS))  # every kind once per three faults, in random order
            fault = Fault(rng.choice(honest), kinds.pop(), rng.uniform(*setup.down_s))
            print(f"[{time.time() - chaos:5.0f} s] {fault.kind} node{fault.node} ({fault.down_s:.1f} s)", flush=True)
            await inject(net, w, fault)
            faults.append(fault)
            await asyncio.sleep(rng.uniform(*setup.gap_s))
        chaos_end = time.time()
        if not await catch_up(w, honest, time.time() + 180, ahead=2):
            raise RuntimeError("honest nodes did not all finalize two more blocks within 180 s after the chaos")
        top = min([(await w.get(i, "/status"))["final_height"] for i in honest])
        for i in readable:
            await w.read_blocks(i, 1, top, "final")
        records = {h: {u["id"] for u in (await w.get(honest[0], f"/fl/updates?height={h}"))["updates"]}
                   for h in range(1, top + 1)}
        privacy = {i: (await w.get(i, "/fl/privacy"))["releases"] for i in range(net.n)}
        accounts = {i: await w.get(honest[0], f"/accounts/{net.node_id(i)}") for i in setup.byzantine}
        backoffs = {i: parse_metrics(await w.get(i, "/metrics")).get(BACKOFFS, 0.0) for i in honest}
        ended = time.time()
        return {"watcher": w, "faults": faults, "honest": honest, "readable": readable, "began": began,
                "warm": warm, "chaos": chaos, "chaos_end": chaos_end, "ended": ended, "records": records,
                "top": top, "privacy": privacy, "accounts": accounts, "backoffs": backoffs,
                "load": w.load_summary(ended - began)}


def liveness(w: Watcher, instants: list[float]) -> list[float | None]:
    """Slots from each instant until the chain finalized its next block (honest streams); None
    if it never did before the run ended."""
    out = []
    for at in instants:
        nxt = w.final_after(at)
        out.append((nxt[1] - at) * 1000 / SLOT_MS if nxt is not None else None)
    return out


def measured(values: list[float | None]) -> dict:
    """Percentiles of the values that exist, and how many did not."""
    return {**percentiles([v for v in values if v is not None]), "never": sum(v is None for v in values)}


def byzantine_activity(net: Testnet, setup: Setup, obs: dict) -> dict:
    """What each Byzantine delegate did, as the chain and its own log record it."""
    blocks = obs["watcher"].chain.blocks.values()
    out = {}
    for i, faults in setup.byzantine.items():
        me = net.node_id(i)
        acct = obs["accounts"][i]
        entry = {"faults": list(faults), "fault_log_lines": log_counts(net, i, faults),
                 "slashed_total": acct["slashed_total"], "jailed_at_end": acct["jailed"]}
        if "double_sign" in faults:
            entry["blocks_with_evidence_against_it"] = sum(me in b.offenders for b in blocks)
        if "withhold_votes" in faults:
            carried = [b for b in blocks if me in b.commit_signers]
            entry["commits_with_its_signature"] = len(carried)
            entry["of_which_in_its_own_blocks"] = sum(b.producer == me for b in carried)
        if "flood_mempool" in faults:
            per_block = [b.tx_senders.get(me, 0) for b in blocks]
            entry["flood_txs_in_blocks"] = sum(per_block)
            entry["flood_txs_per_block_max"] = max(per_block, default=0)
        if "lie_height" in faults:
            entry["honest_sync_backoffs_at_end"] = obs["backoffs"]
        out[f"node{i}"] = entry
    return out


def resources(w: Watcher, faults: list[Fault], n: int, since: float) -> dict:
    """Per daemon: resident memory when the chaos began, at the end and at its peak since (over
    every process the node ran), and the event-loop lag p99 its /metrics reported since."""
    out = {}
    for i in range(n):
        c = w.costs[i]
        before = [v for t, v in c.rss if t < since]
        rss = [v for t, v in c.rss if t >= since]
        lag = [v for t, v in c.lag_p99 if t >= since]
        out[f"node{i}"] = {"rss_start_mb": before[-1] if before else None, "rss_end_mb": rss[-1] if rss else None,
                           "rss_peak_mb": max(rss, default=None),
                           "restarts": sum(f.node == i and f.kind != "pause" for f in faults),
                           "loop_lag_p99_ms_max": max(lag, default=None),
                           "loop_lag_p99_ms_median": sorted(lag)[len(lag) // 2] if lag else None}
    return out


def analyse(net: Testnet, setup: Setup, obs: dict) -> dict:
    """Everything the JSON reports, from the observations and (daemons stopped) the blob stores."""
    w, faults, honest = obs["watcher"], obs["faults"], obs["honest"]
    blocks = w.chain.blocks
    chain_considered = {uid for b in blocks.values() for uid, _, _ in b.considered}
    records_differing = [h for h, ids in obs["records"].items() if ids != {uid for uid, _, _ in blocks[h].considered}]

    def final_at(h: int) -> float | None:
        if h in w.first_final:
            return w.first_final[h]
        return blocks[h].time_ms / 1000 if h in blocks else None

    down = {}
    for f in faults:
        down.setdefault(f.node, []).append((f.at, f.recovered or obs["ended"]))
    sent = {i: sent_updates(net.home(i) / "data" / "blobs.sqlite", net.node_id(i)) for i in range(net.n)}
    genesis = json.loads((net.home(0) / "genesis.json").read_text())
    max_staleness = FLSettings.from_app_state(genesis["app"]).max_staleness
    honest_updates = account({i: sent[i] for i in honest}, obs["privacy"], chain_considered, final_at, down,
                             max_staleness)
    byz_updates = account({i: sent[i] for i in setup.byzantine}, obs["privacy"], chain_considered, final_at, {},
                          max_staleness)
    rng = random.Random(1)
    baseline = [rng.uniform(obs["warm"] + 2, obs["chaos"]) for _ in range(200)]
    after = liveness(w, [f.at for f in faults])
    disagreeing = w.chain.disagreements(honest)
    return {
        "setup": {**asdict(setup), "byzantine": {f"node{i}": list(v) for i, v in setup.byzantine.items()},
                  "honest": [f"node{i}" for i in honest], "slot_ms": SLOT_MS, "kinds": list(KINDS)},
        "budget": budget(setup),
        "chain": {"final_height_end": obs["top"], "blocks_decoded": len(blocks),
                  "skipped_rounds": sum(bool(b.skipped) for b in blocks.values()),
                  "chaos_s": obs["chaos_end"] - obs["chaos"], "warmup_s": obs["chaos"] - obs["warm"]},
        "invariants": {"final_blocks_reverted": len(w.chain.reverts), "reverts": w.chain.reverts[:20],
                       "heights_disagreeing": len(disagreeing), "disagreeing_heights": disagreeing[:20],
                       "heights_compared": w.chain.common_heights(honest), "block_reports": w.chain.reads,
                       "fl_records_differing_from_blocks": len(records_differing)},
        "faults": [{"node": f"node{f.node}", "kind": f.kind, "at_s": f.at - obs["chaos"], "down_s": f.down_s,
                    "height": f.height, "recovery_s": (f.recovered - f.resumed) if f.recovered else None,
                    "slots_to_next_final": s, "notes": f.notes}
                   for f, s in zip(faults, after)],
        "liveness_slots": {"after_fault": measured(after), "baseline_no_fault": measured(liveness(w, baseline))},
        "recovery_s": percentiles([f.recovered - f.resumed for f in faults if f.recovered]),
        "updates": {"honest": honest_updates, "byzantine_nodes_trainers": byz_updates, "max_staleness": max_staleness},
        "byzantine": byzantine_activity(net, setup, obs),
        "resources": resources(w, faults, net.n, obs["chaos"]),
        "load": obs["load"],
        "heights_over_time": sorted((h, t - obs["chaos"]) for h, t in w.first_final.items()),
        "fault_windows": [(f.node, f.kind, f.at - obs["chaos"], (f.recovered or obs["ended"]) - obs["chaos"])
                          for f in faults],
        "rss_over_time": {f"node{i}": [(t - obs["chaos"], v) for t, v in w.costs[i].rss[::5]] for i in range(net.n)},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 daemons, 40 s of chaos, one fault of each kind")
    parser.add_argument("--seed", type=int, default=7, help="seed of the fault schedule")
    parser.add_argument("--seconds", type=float, default=None, help="length of the chaos phase")
    args = parser.parse_args(argv)
    setup = QUICK if args.quick else FULL
    if args.seconds is not None:
        setup = replace(setup, chaos_s=args.seconds)
    if budget(setup)["honest_down_at_once"] < 1:
        raise SystemExit("no honest node may be down while a quorum still signs: the schedule would stall the chain")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, one_thread_children():
        net = Testnet(Path(tmp) / "net", setup.nodes, slot_ms=SLOT_MS, app="fl")
        for i, names in setup.byzantine.items():
            net.enable_faults(i, *names)
        net.start_all()
        try:
            obs = asyncio.run(run(net, setup, args.seed))
        finally:
            for proc in net.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)  # a run cut short mid-pause must still stop cleanly
            net.stop_all()
        result = analyse(net, setup, obs)
    result.update(quick=args.quick, seed=args.seed)
    return finish("chaos", result, started, plot, table)


if __name__ == "__main__":
    main()
