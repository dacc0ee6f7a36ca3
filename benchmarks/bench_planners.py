"""Planner benchmark entry point: `python benchmarks/bench_planners.py [--pool FILE] [flags]`.

Same as `budgetflow bench planners ...`; see `policies.bench` for the flags. Without
`--pool` it reads the dev pool shipped in `benchmarks/data/pool_dev.jsonl`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from policies.bench import main

DEV_POOL = Path(__file__).resolve().parent / "data" / "pool_dev.jsonl"
"""The DAG pool shipped with the repository (40 CodeFlow-like DAGs)."""


def with_default_pool(argv: list[str]) -> list[str]:
    """`argv` with `--pool DEV_POOL` added when it names no pool (and asks for no help)."""
    if any(a == "--pool" or a.startswith("--pool=") for a in argv) or {"-h", "--help"} & set(argv):
        return argv
    return ["--pool", str(DEV_POOL), *argv]


if __name__ == "__main__":
    sys.exit(main(with_default_pool(sys.argv[1:])))
