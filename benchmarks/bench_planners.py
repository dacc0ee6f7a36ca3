"""Planner benchmark entry point: `python benchmarks/bench_planners.py --pool ... [flags]`.

Same as `budgetflow bench planners ...`; see `policies.bench` for the flags.
"""

from __future__ import annotations

import sys

from policies.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
