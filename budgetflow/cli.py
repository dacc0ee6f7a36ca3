"""The `budgetflow` command line. `main(argv) -> int` is testable in-process.

```text
budgetflow run PATH.py [--budget USD] [--deadline S] [--policy NAME] [--seed N] [--input K=V ...]
budgetflow validate PATH.py
budgetflow runs list [--limit N]
budgetflow runs show RUN_ID
budgetflow policies
budgetflow bench planners --pool FILE ...
```
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from rich.console import Console

from budgetflow.loader import load_workflow_file, route_catalog
from budgetflow.settings import Settings, load_settings
from orchestrator.catalog import Catalog
from orchestrator.errors import BudgetflowError, ConfigError, StorageError, UserError

__all__ = ["main", "run_cli"]


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit; we return a code instead
        raise _ArgumentError(f"{self.prog}: {message}\n(see `{self.prog} --help`)")


def _budget(text: str) -> Decimal:
    try:
        value = Decimal(text.lstrip("$"))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"`{text}` is not an amount in USD; e.g. --budget 0.40") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"budget must be positive, got `{text}`")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text.rstrip("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number of seconds; e.g. --deadline 90") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"deadline must be positive, got `{text}`")
    return value


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"`{text}` is not KEY=VALUE; e.g. --input issue='it crashes'")
    key, value = text.split("=", 1)
    return key, value


def _parser() -> _Parser:
    parser = _Parser(prog="budgetflow", description="Run budgeted multi-agent LLM workflows.")
    parser.add_argument(
        "--db", dest="database_url", help="database URL (default: sqlite:///.budgetflow/runs.db)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run a workflow file under a budget and a deadline")
    run.add_argument("path", help="Python file defining `workflow` (and optionally `catalog`, `inputs`)")
    run.add_argument("--budget", type=_budget, help="hard budget in USD (default: the file's `budget_usd`)")
    run.add_argument(
        "--deadline", type=_seconds, help="deadline in seconds (default: the file's `deadline_s`)"
    )
    run.add_argument("--policy", default="mcpp", help="policy name (see `budgetflow policies`); default mcpp")
    run.add_argument("--seed", type=int, default=0, help="seed for the policy and the simulated backend")
    run.add_argument("--input", action="append", type=_key_value, default=[], metavar="KEY=VALUE")
    run.add_argument("--catalog", help="catalog file (TOML/YAML/JSON) overriding the file's catalog")
    run.add_argument("--no-content", action="store_true", help="do not store prompt and response text")
    run.add_argument("--no-progress", action="store_true", help="no live view; print the summary only")
    run.add_argument(
        "--no-learn", action="store_true", help="plan from the workflow's priors only, not from recorded runs"
    )
    run.add_argument("--time-scale", type=float, default=1.0, help="speed of simulated latencies (0.1 = 10x)")

    validate = sub.add_parser("validate", help="check a workflow file without running it")
    validate.add_argument("path")
    validate.add_argument("--catalog")

    runs = sub.add_parser("runs", help="list and inspect recorded runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True, parser_class=_Parser)
    listing = runs_sub.add_parser("list", help="recent runs")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--workflow")
    show = runs_sub.add_parser("show", help="one run with its calling tree")
    show.add_argument("run_id")

    sub.add_parser("policies", help="list the policies")

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    bench_sub.add_parser("planners", help="planner benchmark on a DAG pool (see --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 run did not complete or storage failed, 2 usage)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    out = console or Console()
    err = Console(stderr=True) if console is None else console
    if args_list[:2] == ["bench", "planners"]:
        from policies.bench import main as bench_main

        code: int = bench_main(args_list[2:])
        return code
    try:
        args = _parser().parse_args(args_list)
    except _ArgumentError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, markup=True)
        return 2
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        settings = load_settings(
            {
                "database_url": args.database_url,
                "catalog_path": getattr(args, "catalog", None),
                "record_content": False if getattr(args, "no_content", False) else None,
            }
        )
        if args.command == "run":
            return _run(args, settings, out)
        if args.command == "validate":
            return _validate(args, settings, out)
        if args.command == "runs":
            from budgetflow.show import list_runs, show_run

            if args.runs_command == "list":
                return list_runs(settings.database_url, out, limit=args.limit, workflow=args.workflow)
            return show_run(settings.database_url, args.run_id, out)
        if args.command == "policies":
            from policies import policy_names

            for name in policy_names():
                out.print(name)
            out.print("fixed:MODEL:K")
            return 0
    except UserError as exc:
        err.print(f"[red]error:[/] {_escape(str(exc))}")
        return 2
    except StorageError as exc:
        err.print(f"[red]storage error:[/] {_escape(str(exc))}")
        return 1
    except BudgetflowError as exc:
        err.print(f"[red]error:[/] {_escape(str(exc))}")
        return 1
    return 2


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _catalog_for(loaded_catalog: Catalog | None, settings: Settings, path: str) -> Catalog:
    if settings.catalog_path is not None:
        return Catalog.from_file(settings.catalog_path)
    if loaded_catalog is None:
        raise ConfigError(
            f"workflow file `{path}` defines no `catalog`; define one there or pass --catalog FILE"
        )
    return loaded_catalog


def _validate(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    loaded = load_workflow_file(args.path)
    catalog = _catalog_for(loaded.catalog, settings, args.path)
    loaded.workflow.validate(catalog=catalog, inputs=loaded.inputs or None)
    out.print(
        f"[green]ok[/] workflow `{loaded.workflow.name}`: {len(loaded.workflow)} subtasks,"
        f" models {sorted({m for s in loaded.workflow.subtasks.values() for m in s.models})}"
    )
    return 0


def _run(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    loaded = load_workflow_file(args.path)
    catalog = _catalog_for(loaded.catalog, settings, args.path)
    budget = args.budget if args.budget is not None else loaded.budget_usd
    if budget is None:
        raise ConfigError(f"no budget: pass --budget USD or set `budget_usd` in `{args.path}`")
    deadline = args.deadline if args.deadline is not None else loaded.deadline_s
    inputs = {**loaded.inputs, **dict(args.input)}
    loaded.workflow.validate(catalog=catalog, inputs=inputs)
    if args.time_scale <= 0:
        raise ConfigError(f"--time-scale must be positive, got {args.time_scale}")
    from budgetflow.execute import execute

    result = asyncio.run(
        execute(
            loaded.workflow,
            catalog=catalog,
            settings=settings,
            budget_usd=budget,
            deadline_s=deadline,
            inputs=inputs,
            policy=args.policy,
            seed=args.seed,
            time_scale=args.time_scale,
            console=out,
            live=not args.no_progress,
            learn=not args.no_learn,
            route=route_catalog,
        )
    )
    return 0 if result.outcome.value == "completed" else 1


def run_cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run_cli()
