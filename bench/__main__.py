"""``python -m bench <name> [--quick]``: run one benchmark, ``all`` of them, or ``report``.

Each benchmark writes ``bench/results/<name>.json`` (and a PNG); ``report`` rebuilds
``bench/REPORT.md`` from whatever results exist. ``all`` runs every benchmark in order, then the
report.
"""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = {
    "chain": "bench.chain",
    "fl_chain": "bench.fl_chain",
    "fidelity": "bench.fidelity",
    "dashboard": "bench.dashboard",
    "learning_accuracy": "bench.learning_accuracy",
    "aggregation_speed": "bench.aggregation_speed",
    "accuracy": "bench.accuracy",
    "convergence": "bench.convergence",
    "communication": "bench.communication",
    "scalability": "bench.scalability",
    "energy": "bench.energy",
    "attacks": "bench.attacks",
    "detection": "bench.detection",
    "ablation": "bench.ablation",
    "adversary": "bench.adversary",
    "selection": "bench.selection",
    "hierarchy": "bench.hierarchy",
    "flower": "bench.flower",
    "netsim": "bench.netsim",
    "chaos": "bench.chaos",
    "fleet": "bench.fleet",
    "preset": "bench.preset",
    "report": "bench.report",
}


def run(name: str, argv: list[str]) -> None:
    started = time.monotonic()
    importlib.import_module(BENCHMARKS[name]).main(argv)
    print(f"[{name} took {time.monotonic() - started:.0f} s]", flush=True)


def main() -> None:
    names = [*BENCHMARKS, "all"]
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print("usage: python -m bench <name> [--quick]\nbenchmarks: " + ", ".join(names))
        raise SystemExit(2)
    name, argv = sys.argv[1], sys.argv[2:]
    if name == "all":
        for each in BENCHMARKS:
            run(each, argv if each != "report" else [])
    else:
        run(name, argv)


if __name__ == "__main__":
    main()
