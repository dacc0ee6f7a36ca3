"""Compare policies on the code pipeline, on virtual time with the simulated backend.

.venv/bin/python examples/compare_policies.py [--seeds 20] [--deadline 45] [--budget 0.05]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples.code_pipeline import catalog, inputs, workflow
from orchestrator import simulate


def main(argv: list[str] | None = None) -> int:
    """Print how often each policy completes the pipeline, and what it spends."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--deadline", type=float, default=45.0)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--policies", default="mcpp,always_cheapest,always_strongest,fixed:mini:4")
    args = parser.parse_args(argv)
    table = Table(
        title=f"code pipeline, ${args.budget} budget, {args.deadline:g} s deadline, {args.seeds} seeds"
    )
    for col in ("policy", "completed", "outcomes", "mean spend $", "mean makespan s"):
        table.add_column(col)
    for policy in args.policies.split(","):
        outcomes: Counter[str] = Counter()
        spent = makespan = 0.0
        for seed in range(args.seeds):
            result = simulate(
                workflow,
                catalog=catalog,
                inputs=inputs,
                policy=policy,
                budget_usd=args.budget,
                deadline_s=args.deadline,
                seed=seed,
            )
            outcomes[result.outcome.value] += 1
            spent += float(result.spent_usd)
            makespan += result.makespan_s
        table.add_row(
            policy,
            f"{outcomes['completed']}/{args.seeds}",
            ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            f"{spent / args.seeds:.4f}",
            f"{makespan / args.seeds:.1f}",
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
