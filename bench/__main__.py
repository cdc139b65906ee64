"""``python -m bench <name> [options]``: run one benchmark (each writes bench/results/<name>.json)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "chain": "bench.chain",
    "fl_chain": "bench.fl_chain",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print("usage: python -m bench <name> [--quick]\nbenchmarks: " + ", ".join(sorted(BENCHMARKS)))
        raise SystemExit(2)
    importlib.import_module(BENCHMARKS[sys.argv[1]]).main(sys.argv[2:])


if __name__ == "__main__":
    main()
