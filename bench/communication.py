"""Uplink bytes per round of fedchain's update encoding against dense float32 (paper 1, Table 3).

Every node uploads one update per round. Dense FedAvg sends 4 bytes per parameter; fedchain
sends the top-k coordinates of (update + residual) with error feedback, values in float16, int8
with one scale, or as signs times one scale (1 bit each), and the indices as varint gaps (about a
byte each), in the msgpack wire form whose exact size ``learning.compression.wire_size`` gives. Both use the FedAvg rule and the same step, so the only
difference is the encoding; accuracy is compared at equal rounds (and bytes at a common target).

Also: the bytes of the same encodings for the larger models of the zoo (exact wire size, no
training), and the update messages of the real daemons measured by ``bench fl_chain``
(``bench/results/fl_chain.json``) when that file exists.

Run: ``python -m bench communication [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from bench.common import RESULTS, finish
from bench.simruns import (
    PRODUCT,
    by_label,
    curve_stats,
    fedavg,
    first_reaching,
    mean_std,
    pm,
    pyplot,
    run_all,
    with_seeds,
)
from learning.compression import dense_bytes, k_for, sparsify, wire_size
from learning.models import build_model, num_params

# (label, top-k fraction, value dtype); None = dense float32
GENESIS = f"top-{100 * PRODUCT.topk_fraction:g}% {PRODUCT.encoding} (genesis default)"
ENCODINGS: dict[str, tuple[float, str] | None] = {
    "dense float32": None,
    "top-5% sign": (0.05, "sign"),
    "top-10% sign": (0.10, "sign"),
    GENESIS: (PRODUCT.topk_fraction, PRODUCT.encoding),
    "top-5% int8": (0.05, "int8"),
    "top-5% float16": (0.05, "float16"),
    "top-2% int8": (0.02, "int8"),
}
HEADLINE = "top-5% sign"
ACROSS_SIZES = ("dense float32", HEADLINE, "top-10% sign")
"""Run at every node count; the others only at ``extra_at``."""
GOAL_RATIO, GOAL_POINTS = 30.0, 1.0
ZOO = (("mlp", (1, 28, 28)), ("cnn", (1, 28, 28)), ("cnn", (3, 32, 32)))


def _setup(quick: bool) -> dict[str, Any]:
    if quick:
        return {"dataset": "digits", "batch_size": 32, "lr": 0.3, "rounds": 5, "seeds": 2, "sizes": (50,),
                "extra_at": 50, "extra": (), "target": 0.6}
    return {"dataset": "fashion_mnist", "batch_size": 64, "lr": 0.3, "rounds": 20, "seeds": 3,
            "sizes": (50, 100, 200), "extra_at": 100, "extra": (GENESIS, "top-5% int8", "top-5% float16", "top-2% int8"),
            "target": 0.75}


def _config(s: dict[str, Any], nodes: int, encoding: str) -> dict[str, Any]:
    cfg = fedavg({"dataset": s["dataset"], "partition": "iid", "num_nodes": nodes, "model": "logreg",
                  "batch_size": s["batch_size"], "lr": s["lr"], "rounds": s["rounds"], "local_epochs": 1})
    enc = ENCODINGS[encoding]
    if enc is not None:
        cfg.update(topk_fraction=enc[0], encoding=enc[1], error_feedback=True)
    return cfg


def _specs(s: dict[str, Any]) -> list:
    specs = []
    for n in s["sizes"]:
        names = list(ACROSS_SIZES) + (list(s["extra"]) if n == s["extra_at"] else [])
        for name in names:
            specs += with_seeds(f"{n}/{name}", _config(s, n, name), s["seeds"], nodes=n, encoding=name)
    return specs


def _rows(records: list[dict[str, Any]], target: float) -> list[dict[str, Any]]:
    rows = []
    for runs in by_label(records).values():
        tags = runs[0]["tags"]
        per_round = [b for r in runs for b in r["bytes_sent"]]
        reached = [first_reaching(r["accuracy"], target) for r in runs]
        rows.append({**tags, "dim": runs[0]["dim"],
                     "bytes_per_round": float(np.mean(per_round)),
                     "bytes_per_update": float(np.mean(per_round)) / tags["nodes"],
                     "final_accuracy": mean_std([r["final_accuracy"] for r in runs]),
                     "bytes_to_target": mean_std([None if k is None else sum(r["bytes_sent"][:k])
                                                  for r, k in zip(runs, reached)]),
                     "reached": sum(k is not None for k in reached),
                     "accuracy_mean": curve_stats(runs, "accuracy")[0].tolist()})
    dense = {r["nodes"]: r for r in rows if r["encoding"] == "dense float32"}
    for r in rows:
        d = dense[r["nodes"]]
        r["reduction"] = d["bytes_per_round"] / r["bytes_per_round"]
        r["drop_points"] = 100 * (d["final_accuracy"]["mean"] - r["final_accuracy"]["mean"])
        tb, db = r["bytes_to_target"]["mean"], d["bytes_to_target"]["mean"]
        r["reduction_to_target"] = db / tb if tb and db else None
        r["goal_met"] = r["reduction"] >= GOAL_RATIO and r["drop_points"] <= GOAL_POINTS
    return rows


def zoo_bytes() -> list[dict[str, Any]]:
    """Exact wire bytes of one update of each larger model in every encoding (no training needed)."""
    rng = np.random.default_rng(0)
    out = []
    for name, shape in ZOO:
        dim = num_params(build_model(name, shape, 10))
        vec = rng.standard_normal(dim).astype(np.float32)
        row = {"model": name, "input": "x".join(map(str, shape)), "params": dim, "dense float32": dense_bytes(dim)}
        for label, enc in ENCODINGS.items():
            if enc is not None:
                row[label] = wire_size(sparsify(vec, k_for(dim, enc[0]), enc[1]))
        out.append(row)
    return out


def daemon_bytes() -> list[dict[str, Any]] | None:
    """Per-update bytes measured on real daemons by ``bench fl_chain``, if its result exists."""
    path = RESULTS / "fl_chain.json"
    if not path.exists():
        return None
    runs = json.loads(path.read_text()).get("runs", [])
    keys = ("nodes", "params", "update_bytes", "dense_float32_bytes", "update_compression_vs_dense",
            "gossip_fl_bytes_out_per_node_per_block")
    return [{k: r.get(k) for k in keys} for r in runs]


def _plot(result: dict[str, Any]) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2))
    rows = result["rows"]
    sizes = result["sizes"]
    width = 0.8 / len(ACROSS_SIZES)
    for k, name in enumerate(ACROSS_SIZES):
        mb = [next(r["bytes_per_round"] for r in rows if r["nodes"] == n and r["encoding"] == name) / 1e6
              for n in sizes]
        ax[0].bar(np.arange(len(sizes)) + (k - (len(ACROSS_SIZES) - 1) / 2) * width, mb, width, label=name)
    ax[0].set_xticks(range(len(sizes)), [f"{n} nodes" for n in sizes])
    ax[0].set_yscale("log")
    ax[0].set(ylabel="uplink MB per round", title="bytes per round (exact wire size)")
    ax[0].legend(fontsize=8)
    at = result["extra_at"]
    for r in rows:
        if r["nodes"] == at:
            ax[1].plot(range(1, len(r["accuracy_mean"]) + 1), r["accuracy_mean"],
                       label=f"{r['encoding']} ({r['reduction']:.0f}x)")
    ax[1].set(xlabel="round", ylabel="test accuracy", title=f"{at} nodes, mean over seeds")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "communication.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench communication", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, 50 nodes, 5 rounds, 2 seeds")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    s = _setup(args.quick)
    rows = _rows(run_all(_specs(s), args.workers), s["target"])
    result = {"quick": args.quick, "dataset": s["dataset"], "model": "logreg", "partition": "iid",
              "rounds": s["rounds"], "seeds": s["seeds"], "sizes": list(s["sizes"]), "extra_at": s["extra_at"],
              "lr": s["lr"], "target": s["target"], "headline": HEADLINE,
              "across_sizes": list(ACROSS_SIZES), "goal_ratio": GOAL_RATIO,
              "goal_points": GOAL_POINTS, "rows": rows, "zoo": zoo_bytes(), "daemons": daemon_bytes(),
              "goal_met": all(r["goal_met"] for r in rows if r["encoding"] == HEADLINE)}
    return finish("communication", result, started, _plot, _table)


def _table(r: dict[str, Any]) -> str:
    lines = [("| nodes | encoding | MB per round | bytes per update | reduction | accuracy (%) | drop (points) | "
             "MB to target | reduction to target | goal |"), "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in r["rows"]:
        rt = row["reduction_to_target"]
        goal = "-" if row["encoding"] == "dense float32" else ("met" if row["goal_met"] else "not met")
        lines.append(f"| {row['nodes']} | {row['encoding']} | {row['bytes_per_round'] / 1e6:.3f} | "
                     f"{row['bytes_per_update']:.0f} | {row['reduction']:.1f}x | {pm(row['final_accuracy'])} | "
                     f"{row['drop_points']:+.2f} | {pm(row['bytes_to_target'], 1e-6, 2)} | "
                     f"{'-' if rt is None else f'{rt:.1f}x'} | {goal} |")
    return "\n".join(lines)


def report(r: dict[str, Any]) -> str:
    names = [n for n in ENCODINGS if n != "dense float32"]
    zoo = "\n".join(f"| {z['model']} ({z['input']}) | {z['params']:,} | {z['dense float32']:,} | "
                    + " | ".join(f"{z[n]:,} ({z['dense float32'] / z[n]:.0f}x)" for n in names) + " |"
                    for z in r["zoo"])
    if r["daemons"]:
        daemons = "\n".join(f"| {d['nodes']} | {d['params']} | {d['update_bytes']:.0f} | {d['dense_float32_bytes']} | "
                            f"{d['update_compression_vs_dense']:.1f}x | {d['gossip_fl_bytes_out_per_node_per_block'] or 0:.0f} |"
                            for d in r["daemons"])
        daemons = ("Real daemons (from `bench fl_chain`, the node's genesis encoding on digits, in the wire form "
                   "of the day that benchmark last ran, see its section):\n\n"
                   "| daemons | params | bytes per update message | dense float32 | ratio | "
                   "gossip bytes out per node per block |\n|---:|---:|---:|---:|---:|---:|\n" + daemons)
    else:
        daemons = "No `fl_chain.json` was present, so real-daemon bytes are not included."
    verdict = "; ".join(f"{row['encoding']} at {row['nodes']} nodes: {row['reduction']:.1f}x, "
                        f"{row['drop_points']:+.2f} points ({'met' if row['goal_met'] else 'not met'})"
                        for name in r["across_sizes"][1:] for row in r["rows"] if row["encoding"] == name)
    return f"""## Communication per round (paper 1, Table 3)

Paper 1's Table 3 reports communication cost against the number of nodes. Here: {r['dataset']},
{r['model']}, IID, every node uploads every round, FedAvg rule, no clipping and constant lr {r['lr']}
for every encoding (only the encoding differs; the genesis default is marked), {r['rounds']} rounds,
{r['seeds']} seeds. Bytes are the exact
msgpack wire size of each update (`learning.compression.wire_size`) against 4 bytes per
parameter dense; all top-k encodings use error feedback. Indices travel as varint gaps between
sorted indices (about one byte each at these densities, where a little-endian int32 took four);
values as float16, int8 with one scale, or `sign`: one bit each times one scale, the mean
magnitude of the sent values (what is lost to rounding stays in the residual). Accuracy is compared at equal rounds
(drop = dense minus encoded, in points); "to target" is the cumulative uplink until the
first round at {100 * r['target']:.0f}% accuracy.

Command: `python -m bench communication{' --quick' if r['quick'] else ''}` (wall time {r['wall_time_s']:.0f} s).

{_table(r)}

Goal: >= {r['goal_ratio']:.0f}x fewer bytes at <= {r['goal_points']:.0f} point accuracy loss:
{verdict}. Overall, with {r['headline']} at every node count: {'met' if r['goal_met'] else 'not met'}.

What it took: indices as varint gaps (about a byte instead of four per kept coordinate), and values
sent as 1-bit signs times their mean magnitude, with error feedback keeping what rounding drops.
The top-5% rows at {r['extra_at']} nodes differ in value precision only (float16, int8, sign), top-2%
int8 in the kept fraction: which of the two costs accuracy.

The same encodings on the larger models of the zoo (exact bytes of one update; the ratio grows
slightly with size because the fixed header is amortised):

| model | params | dense bytes | {' | '.join(names)} |
|---|---:|---:|{'---:|' * len(names)}
{zoo}

{daemons}

![bytes per round and accuracy per encoding](results/communication.png)
"""


if __name__ == "__main__":
    main()
