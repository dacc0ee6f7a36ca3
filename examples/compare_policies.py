"""Compare policies on an example workflow, on virtual time with the simulated backend.

.venv/bin/python examples/compare_policies.py [--example code_pipeline|hard_step] [--seeds 20]
    [--deadline S] [--budget USD] [--policies mcpp,always_cheapest,...]

Without `--budget`/`--deadline` the example's own `budget_usd`/`deadline_s` are used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from budgetflow import simulate

EXAMPLES = ("code_pipeline", "hard_step", "research_qa")


def main(argv: list[str] | None = None) -> int:
    """Print how often each policy completes the example, what it spends, and which models it uses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--example", choices=EXAMPLES, default="code_pipeline", help="which example workflow")
    parser.add_argument("--seeds", type=int, default=20, help="runs per policy (seeds 0..N-1)")
    parser.add_argument("--deadline", type=float, help="deadline in seconds (default: the example's)")
    parser.add_argument("--budget", type=float, help="budget in USD (default: the example's)")
    parser.add_argument("--policies", default="mcpp,always_cheapest,always_strongest,fixed:mini:4")
    args = parser.parse_args(argv)
    example = importlib.import_module(f"examples.{args.example}")
    budget = args.budget if args.budget is not None else example.budget_usd
    deadline = args.deadline if args.deadline is not None else example.deadline_s
    table = Table(title=f"{args.example}, ${budget} budget, {deadline:g} s deadline, {args.seeds} seeds")
    for col in ("policy", "completed", "outcomes", "mean spend $", "mean makespan s", "attempts by model"):
        table.add_column(col)
    for policy in args.policies.split(","):
        outcomes: Counter[str] = Counter()
        models: Counter[str] = Counter()
        spent = makespan = 0.0
        for seed in range(args.seeds):
            result = simulate(
                example.workflow,
                catalog=example.catalog,
                inputs=example.inputs,
                policy=policy,
                budget_usd=budget,
                deadline_s=deadline,
                seed=seed,
            )
            outcomes[result.outcome.value] += 1
            models.update(a.model for a in result.attempts)
            spent += float(result.spent_usd)
            makespan += result.makespan_s
        table.add_row(
            policy,
            f"{outcomes['completed']}/{args.seeds}",
            ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            f"{spent / args.seeds:.4f}",
            f"{makespan / args.seeds:.1f}",
            ", ".join(f"{m} {n}" for m, n in sorted(models.items())),
        )
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
