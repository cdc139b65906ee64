"""The simulator against real daemons: the same genesis settings, test accuracy per global model.

A benchmark of the simulator is a claim about the product only if the simulator runs what the
daemons run. Here both start from the same genesis FL settings (the defaults ``fedchain testnet
create`` writes: digits, 64-unit MLP, clip, top-10% float16 with error feedback, clustering):

* chain: N daemons as separate processes on 127.0.0.1 (2 s slots). After ``--blocks`` final
  blocks, the model of every height (its hash is the next block header's ``app_hash``, its
  weights ``/fl/model/{hash}``) is evaluated on the common test set, and the height's round record
  (``/fl/updates``) says how many updates it accepted. Each model that differs from the previous
  one is a *version*: version k is the model after the chain's k-th aggregation.
* simulator: ``SimConfig(fl=<the genesis settings>, num_nodes=N)``, synchronous rounds, the
  chain's own data split (node i holds the shard of genesis account i); round k's model is
  version k, and round k's nodes are those the chain's k-th aggregation considered (a block holds
  the updates that reached its proposer in time: while daemons start, fewer). Repeated with
  ``--seeds`` noise seeds (the update-noise stream; a daemon draws its noise from OS entropy), so
  the spread says what noise alone moves; a genesis without update noise (the default) makes
  them one run, and the spread is the chain runs' (``--chains``: which updates reach a block in
  time differs from run to run). For reference also with every node in every round.

What remains different by design: a chain update may be one model stale, where the simulator
trains every round's nodes on the newest model.

Run: ``python -m bench fidelity [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, finish, md_table
from bench.simruns import RunSpec, mean_std, pyplot, run_all
from learning.federation import split
from learning.models import build_model, set_flat
from learning.settings import FLSettings
from learning.train import evaluate
from node.fl.blobs import parse_model
from tests.integration.harness import Testnet

SLOT_MS = 2000


def chain_run(n: int, blocks: int, root: Path) -> dict[str, Any]:
    """Run N daemons for ``blocks`` final blocks; every height's model hash and round record."""
    net = Testnet(root, n, slot_ms=SLOT_MS, app="fl")
    net.start_all()
    try:
        net.wait_height(blocks + 1, nodes=[0], timeout=120 + 6 * blocks)
        genesis = json.loads((net.home(0) / "genesis.json").read_text())
        settings = FLSettings.from_app_state(genesis["app"])
        accounts = [a["id"] for a in genesis["accounts"]]   # node i holds shard i (node/fl/data.py)
        genesis_model = net.get(0, "/blocks/1")["app_hash"]
        heights = []
        for h in range(1, blocks + 1):
            model = net.get(0, f"/blocks/{h + 1}")["app_hash"]   # the model after block h
            record = net.get(0, f"/fl/updates?height={h}")
            heights.append({"height": h, "model": model, "accepted": record["accepted"],
                            "considered": record["considered"], "skipped": record["skipped"],
                            "senders": sorted(accounts.index(u["sender"]) for u in record["updates"]),
                            "stale": sum(u["base_height"] < h - 1 for u in record["updates"])})
        weights = {}
        for hx in dict.fromkeys(r["model"] for r in heights):
            with urllib.request.urlopen(f"{net.url(0)}/fl/model/{hx}", timeout=10) as resp:
                weights[hx] = resp.read()
    finally:
        net.stop_all()
    return {"settings": settings, "genesis_model": genesis_model, "heights": heights, "weights": weights}


def evaluate_chain(run: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The chain's versions: each model that differs from the one before, with its test accuracy."""
    settings: FLSettings = run["settings"]
    test = split(settings, n).test
    net = build_model(settings.model, test.input_shape, test.num_classes, settings.seed)
    versions, previous = [], run["genesis_model"]
    for row in run["heights"]:
        if row["model"] == previous:
            continue
        previous = row["model"]
        set_flat(net, parse_model(run["weights"][row["model"]], 1 << 26))
        versions.append({**{k: row[k] for k in ("height", "accepted", "considered", "senders", "stale")},
                         "accuracy": evaluate(net, test.x, test.y)[0]})
    return versions


def _sim_spec(settings: FLSettings, n: int, rounds: int, noise_seed: int,
              participants: list[list[int]] | None = None) -> RunSpec:
    """A simulator run with the chain's settings and node count (and each round's participants,
    if given); its record's ``accuracy`` is the test accuracy after each round."""
    fl = {k: v for k, v in settings.to_app_state().items() if k != "kind"}
    return RunSpec("fidelity", {**fl, "num_nodes": n, "rounds": rounds, "noise_seed": noise_seed,
                                "participants": participants})


def measure(n: int, chains: int, seeds: int, blocks: int, root: Path, workers: int = 2) -> dict[str, Any]:
    runs = [chain_run(n, blocks, root / f"n{n}c{c}") for c in range(chains)]
    settings = runs[0]["settings"]
    chain_versions = [evaluate_chain(r, n) for r in runs]
    k = min(len(v) for v in chain_versions)
    # the simulator replays who took part in each version of each chain run...
    specs = [_sim_spec(settings, n, k, s, [v["senders"] for v in versions[:k]])
             for versions in chain_versions for s in range(seeds)]
    # ...and, for reference, runs every node every round
    specs += [_sim_spec(settings, n, k, s) for s in range(seeds)]
    records = [r["accuracy"] for r in run_all(specs, workers, verbose=False)]
    replayed, everyone = records[:-seeds], records[-seeds:]
    rows = []
    for i in range(k):
        chain = mean_std([v[i]["accuracy"] for v in chain_versions])
        sim = mean_std([s[i] for s in replayed])
        diff = chain["mean"] - sim["mean"]
        noise = 2 * max(np.hypot(chain["std"], sim["std"]), 0.005)   # two std, at least one point
        rows.append({"version": i + 1, "heights": [v[i]["height"] for v in chain_versions],
                     "senders": chain_versions[0][i]["senders"], "stale": [v[i]["stale"] for v in chain_versions],
                     "accepted": mean_std([v[i]["accepted"] for v in chain_versions]), "chain": chain, "sim": sim,
                     "sim_every_node": mean_std([s[i] for s in everyone]),
                     "difference": float(diff), "within_noise": bool(abs(diff) <= noise)})
    return {"nodes": n, "chains": chains, "seeds": seeds, "blocks": blocks, "versions": k,
            "settings": settings.to_app_state(), "rows": rows,
            "mean_abs_difference": float(np.mean([abs(r["difference"]) for r in rows])),
            "within_noise": int(sum(r["within_noise"] for r in rows))}


def _plot(result: dict[str, Any]) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(result["sizes"]), figsize=(6 * len(result["sizes"]), 4), squeeze=False)
    for ax, size in zip(axes[0], result["sizes"]):
        rows = size["rows"]
        k = [r["version"] for r in rows]
        for key, label in (("chain", f"{size['chains']} chain(s) of {size['nodes']} daemons"),
                           ("sim", f"simulator, {size['seeds']} noise seeds")):
            mean = np.array([100 * r[key]["mean"] for r in rows])
            std = np.array([100 * r[key]["std"] for r in rows])
            ax.plot(k, mean, marker="o", label=label)
            ax.fill_between(k, mean - std, mean + std, alpha=0.2)
        ax.set(xlabel="global model version", ylabel="test accuracy (%)", title=f"{size['nodes']} nodes, same genesis")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "fidelity.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 daemons, one chain, 6 blocks, 2 seeds")
    parser.add_argument("--sizes", help="daemon counts, comma-separated (default 4,8)")
    parser.add_argument("--chains", type=int, help="chain runs per size (default 2)")
    parser.add_argument("--seeds", type=int, help="simulator noise seeds per chain run (default 5)")
    parser.add_argument("--blocks", type=int, help="final blocks per chain run (default 15)")
    parser.add_argument("--workers", type=int, default=2, help="simulator processes (one thread each)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sizes, chains, seeds, blocks = ((4,), 1, 2, 6) if args.quick else ((4, 8), 2, 5, 15)
    sizes = tuple(int(x) for x in args.sizes.split(",")) if args.sizes else sizes
    chains, seeds, blocks = args.chains or chains, args.seeds or seeds, args.blocks or blocks
    with tempfile.TemporaryDirectory() as tmp:
        result = {"quick": args.quick, "command": " ".join(["python -m bench fidelity", *(argv or [])]),
                  "slot_ms": SLOT_MS,
                  "sizes": [measure(n, chains, seeds, blocks, Path(tmp), args.workers) for n in sizes]}
    return finish("fidelity", result, started, _plot, _tables)


def _tables(r: dict[str, Any]) -> str:
    out = []
    for size in r["sizes"]:
        rows = [[row["version"], ", ".join(map(str, row["heights"])), f"{row['accepted']['mean']:.1f}",
                 ", ".join(map(str, row["stale"])), _pm(row["chain"]), _pm(row["sim"]),
                 f"{100 * row['difference']:+.2f}", "yes" if row["within_noise"] else "no", _pm(row["sim_every_node"])]
                for row in size["rows"]]
        out.append(f"{size['nodes']} nodes ({size['chains']} chain run(s), {size['seeds']} simulator noise seeds "
                   "per run):\n\n"
                   + md_table(["version", "chain heights", "updates accepted (chain)", "stale updates (chain)",
                               "chain accuracy (%)", "simulator, the chain's participants (%)",
                               "chain - simulator (points)", "within noise", "simulator, every node (%)"], rows))
    return "\n\n".join(out)


def _one_chain_note(r: dict[str, Any]) -> str:
    if all(size["chains"] > 1 for size in r["sizes"]):
        return ""
    return (" With one chain run per size the chain's own spread is unknown, so \"within noise\" rests on the "
            "simulator's spread alone: stricter than with several chain runs.")


def _pm(stat: dict[str, Any]) -> str:
    return f"{100 * stat['mean']:.2f} ± {100 * stat['std']:.2f}"


def report(r: dict[str, Any]) -> str:
    verdicts = "; ".join(f"{s['nodes']} nodes: {s['within_noise']} of {s['versions']} versions within noise, "
                         f"mean |difference| {100 * s['mean_abs_difference']:.2f} points" for s in r["sizes"])
    return f"""## The simulator against real daemons: same genesis, accuracy per model version

The simulator and the daemons run one client pipeline (`learning/client.py`) and one round
function (`learning/round.py`) with one settings type, so the simulator's numbers elsewhere in this
report are claims about the product. Here both run the genesis defaults on digits: real daemons
on 127.0.0.1 ({r['slot_ms']} ms slots; the model of every height fetched from a node and evaluated
on the common test set) and the simulator with the same settings, node count and data split.
A chain's version k is its model after its k-th aggregation; the simulator's is its model after
round k, in which the nodes take part that the chain's k-th aggregation considered (a block
aggregates the updates that reached its proposer in time, so the first blocks, while daemons
start, hold fewer). Left over by design: a chain update may be one model stale (counted per
version) where the simulator trains it on the newest model, and daemons draw update noise (none
by default: then the simulator's seeds repeat one run) from OS entropy. "Within noise": the
difference is at most two standard deviations of chain runs and simulator runs together (and at
least one point). The last column runs every node in every round.

Command: `{r.get('command') or 'python -m bench fidelity' + (' --quick' if r['quick'] else '')}` (wall time {r['wall_time_s']:.0f} s).

{_tables(r)}

Summary: {verdicts}.{_one_chain_note(r)}

![simulator against daemons](results/fidelity.png)
"""


if __name__ == "__main__":
    main()
