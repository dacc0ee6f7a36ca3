"""The `budgetflow` command line. `main(argv) -> int` is testable in-process.

```text
budgetflow run PATH.py [--budget USD] [--deadline S] [--policy NAME] [--seed N] [--input K=V ...]
               [--metrics-port PORT] [--metrics-host HOST] [--no-learn | --estimator-version N]
               [--explore]
budgetflow validate PATH.py [--input K=V ...] [--catalog FILE] [--policy NAME]
budgetflow runs list [--limit N] [--workflow NAME]
budgetflow runs show RUN_ID
budgetflow runs mark-abandoned [RUN_ID ...] [--older-than S]
budgetflow runs resume RUN_ID PATH.py [--older-than S] [--time-scale F] [--no-progress]
budgetflow serve [--host HOST] [--port PORT] [--workflow MODULE ...] [--metrics-public] [--insecure-no-auth]
                 [--workers]
budgetflow worker [--workflow MODULE ...] [--concurrency N] [--global-concurrency N] [--takeover-after S]
budgetflow tokens create --name NAME --scope read|submit|admin [--expires-in 30d]
budgetflow tokens list [--all]
budgetflow tokens revoke ID
budgetflow budgets create --name NAME --scope team:T|token:ID|workflow:W --limit-usd X [--window day|month]
                          [--on-cross none|downgrade|pause] [--cross-at F]
budgetflow budgets list
budgetflow budgets delete NAME
budgetflow policies
budgetflow export attempts [--workflow NAME] [--since DATE] [--limit N] [--format jsonl|parquet] [--out FILE]
                           [--include-simulated | --only-simulated]
budgetflow estimates show [--workflow NAME] [--workflow-file PATH.py] [--include-simulated]
budgetflow estimates artifacts [--workflow NAME]
budgetflow train [--workflow NAME] [--since DATE] [--limit N] [--include-simulated | --only-simulated]
                 [--embedder hashing|none] [--holdout F] [--seed N]
budgetflow bench planners [--pool FILE] ...
```

`--db URL` works before or after the subcommand. Exit codes: 0 the run completed
(or the command succeeded); 1 the run did not complete, or storage failed; 2 a
usage or definition error (the message says which value and what to do); 128 +
the signal number when SIGINT (130) or SIGTERM (143) stopped a run.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from budgetflow._format import plural
from budgetflow.settings import Settings, load_settings
from orchestrator.errors import BudgetflowError, ConfigError, StorageError, UserError

if TYPE_CHECKING:
    from budgetflow.loader import LoadedWorkflow, Prepared
    from orchestrator.resume import ResumePoint

__all__ = ["main", "run_cli"]

_DEV_POOL = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "pool_dev.jsonl"
"""The dev pool of a source checkout, the default of `bench planners`."""


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit; we return a code instead
        raise _ArgumentError(f"{self.prog}: {message}\n(see `{self.prog} --help`)")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"`{text}` is not KEY=VALUE; e.g. --input issue='it crashes'")
    return key.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number; e.g. 20") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got `{text}`")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a whole number; e.g. --seed 7") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be from 0 to 2**63 - 1, got `{text}`")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text.strip().removesuffix("s"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number of seconds; e.g. 60") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got `{text}`")
    return value


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"`{text}` is not a TCP port; use 0 to 65535, e.g. 9464")
    return int(text)


def _positive_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a number; e.g. 0.1 (ten times faster)") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number, got `{text}`")
    return value


def _holdout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"`{text}` is not a fraction; e.g. 0.2 (a fifth held out)") from None
    if not (math.isfinite(value) and 0 <= value < 1):
        raise argparse.ArgumentTypeError(f"must be from 0 (none held out) to below 1, e.g. 0.2; got `{text}`")
    return value


def _parser() -> _Parser:
    db_help = "database URL (default: sqlite:///.budgetflow/runs.db); also {} the subcommand"
    with_db = _Parser(add_help=False)
    with_db.add_argument(
        "--db", dest="database_url", default=argparse.SUPPRESS, metavar="URL", help=db_help.format("before")
    )
    parser = _Parser(
        prog="budgetflow",
        description="Run multi-agent LLM workflows under a hard dollar budget and a deadline.",
        epilog="Exit codes: 0 completed, 1 the run did not complete (or storage failed), 2 a usage or"
        " definition error, 130/143 stopped by SIGINT/SIGTERM.",
    )
    parser.add_argument(
        "--db", dest="database_url", default=None, metavar="URL", help=db_help.format("after")
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    inputs_help = "a run input, overriding the file's `inputs` (repeat for several)"
    run = sub.add_parser(
        "run", parents=[with_db], help="run a workflow file under a budget and a deadline", description=None
    )
    run.add_argument("path", help="Python file defining `workflow` (and optionally `catalog`, `inputs`)")
    run.add_argument(
        "--budget", metavar="USD", help="hard budget in USD, e.g. 0.40 (default: the file's `budget_usd`)"
    )
    run.add_argument(
        "--deadline",
        metavar="SECONDS",
        help="deadline in seconds, or `none` (default: the file's `deadline_s`)",
    )
    run.add_argument("--policy", default="mcpp", help="policy name (see `budgetflow policies`); default mcpp")
    run.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="seed of the policy's and the simulated backend's draws (on a real clock, timing still"
        " varies: see the README)",
    )
    run.add_argument(
        "--input", action="append", type=_key_value, default=[], metavar="KEY=VALUE", help=inputs_help
    )
    run.add_argument("--catalog", metavar="FILE", help="catalog file (TOML/YAML/JSON) overriding the file's")
    run.add_argument("--no-content", action="store_true", help="store no prompt, response or input text")
    run.add_argument("--no-progress", action="store_true", help="no live view; print the summary only")
    learning = run.add_mutually_exclusive_group()
    learning.add_argument(
        "--no-learn", action="store_true", help="plan from the workflow's priors only, not from recorded runs"
    )
    learning.add_argument(
        "--estimator-version",
        type=_positive_int,
        metavar="N",
        help="plan with this version of the workflow's trained estimator (default: the newest;"
        " `budgetflow estimates artifacts` lists them)",
    )
    run.add_argument(
        "--explore",
        action="store_true",
        help="plan on success beliefs drawn from their uncertainty (Thompson sampling, seeded by"
        " --seed), so that models tried little get tried",
    )
    run.add_argument(
        "--time-scale",
        type=_positive_factor,
        default=1.0,
        metavar="FACTOR",
        help="speed of simulated latencies: 0.1 runs ten times faster (default 1)",
    )
    run.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics while the run goes (0: a free port)",
    )
    run.add_argument(
        "--metrics-host",
        metavar="HOST",
        help="address for --metrics-port to listen on (default 127.0.0.1)",
    )

    validate = sub.add_parser("validate", help="check a workflow file as `run` would, without running it")
    validate.add_argument("path", help="Python file defining `workflow`")
    validate.add_argument(
        "--input", action="append", type=_key_value, default=[], metavar="KEY=VALUE", help=inputs_help
    )
    validate.add_argument("--catalog", metavar="FILE", help="catalog file overriding the file's")
    validate.add_argument("--policy", help="also check that this policy fits the workflow")

    runs = sub.add_parser("runs", help="list, inspect and close recorded runs")
    runs_sub = runs.add_subparsers(
        dest="runs_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    listing = runs_sub.add_parser("list", parents=[with_db], help="recent runs, newest first")
    listing.add_argument(
        "--limit", type=_positive_int, default=20, metavar="N", help="show at most N runs (default 20)"
    )
    listing.add_argument("--workflow", metavar="NAME", help="only runs of this workflow")
    show = runs_sub.add_parser("show", parents=[with_db], help="one run with its calling tree")
    show.add_argument("run_id", metavar="RUN_ID", help="the run's id, or any unique start of it")
    mark = runs_sub.add_parser(
        "mark-abandoned",
        parents=[with_db],
        help="close runs whose process died (still `running`, no heartbeat)",
    )
    mark.add_argument(
        "run_ids", nargs="*", metavar="RUN_ID", help="only these runs (ids or unique starts); default: all"
    )
    mark.add_argument(
        "--older-than",
        type=_positive_seconds,
        metavar="SECONDS",
        help="a run is abandoned when its last heartbeat is older than this (default 60)",
    )
    resume = runs_sub.add_parser(
        "resume",
        parents=[with_db],
        help="continue a run whose process died, from its calling tree (nothing paid twice)",
    )
    resume.add_argument("run_id", metavar="RUN_ID", help="the run's id, or any unique start of it")
    resume.add_argument("path", help="the Python file defining the workflow it ran")
    resume.add_argument(
        "--older-than",
        type=_positive_seconds,
        metavar="SECONDS",
        help="its process counts as dead when its last heartbeat is older than this (default 60)",
    )
    resume.add_argument("--catalog", metavar="FILE", help="catalog file overriding the file's")
    resume.add_argument("--no-progress", action="store_true", help="no live view; print the summary only")
    resume.add_argument(
        "--no-learn", action="store_true", help="plan from the workflow's priors only, not from recorded runs"
    )
    resume.add_argument(
        "--time-scale",
        type=_positive_factor,
        default=1.0,
        metavar="FACTOR",
        help="speed of simulated latencies: 0.1 runs ten times faster (default 1)",
    )

    serve = sub.add_parser(
        "serve", parents=[with_db], help="serve the HTTP API (submit, follow and read runs); see docs/api.md"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8000, help="port to listen on (default 8000; 0: a free one)"
    )
    serve.add_argument(
        "--workflow",
        dest="api_workflows",
        action="append",
        metavar="MODULE",
        help="a module whose `workflow` the API may run, e.g. examples.code_pipeline (repeat for several;"
        " default: BUDGETFLOW_API_WORKFLOWS or `api_workflows` in budgetflow.toml)",
    )
    serve.add_argument(
        "--metrics-public", action="store_true", help="serve /metrics without a token (for Prometheus)"
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept every request without a token: for local experiments only, never on a shared address",
    )
    serve.add_argument(
        "--time-scale",
        type=_positive_factor,
        default=1.0,
        metavar="FACTOR",
        help="speed of simulated latencies: 0.1 runs ten times faster (default 1)",
    )
    serve.add_argument(
        "--workers",
        action="store_true",
        default=None,
        help="enqueue runs for `budgetflow worker` processes (DBOS) instead of running them here"
        " (default: BUDGETFLOW_WORKERS or `workers` in budgetflow.toml); see docs/scale-out.md",
    )

    worker = sub.add_parser(
        "worker",
        parents=[with_db],
        help="execute runs the API enqueued (any number of workers); see docs/scale-out.md",
    )
    worker.add_argument(
        "--workflow",
        dest="api_workflows",
        action="append",
        metavar="MODULE",
        help="a module whose `workflow` it may run, as the API's (repeat; default: BUDGETFLOW_API_WORKFLOWS)",
    )
    worker.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="runs at once on this worker (default 4)",
    )
    worker.add_argument(
        "--global-concurrency",
        type=_positive_int,
        metavar="N",
        help="runs at once across all workers (default: no limit)",
    )
    worker.add_argument(
        "--takeover-after",
        type=_positive_seconds,
        default=15.0,
        metavar="SECONDS",
        help="a worker silent this long is dead and its runs continue elsewhere (default 15)",
    )
    worker.add_argument(
        "--heartbeat",
        type=_positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="how often this worker says it is alive and looks for dead ones (default 2)",
    )
    worker.add_argument(
        "--executor-id", metavar="ID", help="this worker's DBOS executor id (default: host-pid-random)"
    )
    worker.add_argument(
        "--time-scale",
        type=_positive_factor,
        default=1.0,
        metavar="FACTOR",
        help="speed of simulated latencies: 0.1 runs ten times faster (default 1)",
    )
    worker.add_argument(
        "--no-learn", action="store_true", help="plan from the workflows' priors only, not from recorded runs"
    )

    tokens = sub.add_parser("tokens", help="create, list and revoke the HTTP API's tokens")
    tokens_sub = tokens.add_subparsers(
        dest="tokens_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    create = tokens_sub.add_parser(
        "create", parents=[with_db], help="create a token and print it (once: it is stored hashed)"
    )
    create.add_argument("--name", required=True, help="what the token is for, e.g. `ci` or `alice laptop`")
    create.add_argument(
        "--scope",
        required=True,
        choices=("read", "submit", "admin"),
        help="read: see runs; submit: also start and cancel runs; admin: everything",
    )
    create.add_argument(
        "--expires-in",
        metavar="LIFETIME",
        help="e.g. 30d, 12h, 90m, 2w (default: until revoked)",
    )
    token_list = tokens_sub.add_parser("list", parents=[with_db], help="tokens, without their secrets")
    token_list.add_argument("--all", action="store_true", help="also revoked and expired tokens")
    revoke = tokens_sub.add_parser("revoke", parents=[with_db], help="end a token (and its browser sessions)")
    revoke.add_argument("token_id", metavar="ID", help="the token's id (see `budgetflow tokens list`)")

    budgets = sub.add_parser("budgets", help="define, list and delete shared budgets above runs")
    budgets_sub = budgets.add_subparsers(
        dest="budgets_command", required=True, parser_class=_Parser, metavar="COMMAND"
    )
    define = budgets_sub.add_parser("create", parents=[with_db], help="define a shared budget")
    define.add_argument("--name", required=True, help="a unique name, e.g. `research-daily`")
    define.add_argument(
        "--scope",
        required=True,
        metavar="KIND:VALUE",
        help="the runs it is above: `team:NAME` (BUDGETFLOW_TEAM), `token:ID` (an API token's id)"
        " or `workflow:NAME`",
    )
    define.add_argument("--limit-usd", required=True, metavar="USD", help="its limit per window, e.g. 25")
    define.add_argument(
        "--window", choices=("day", "month"), default=None, help="a UTC calendar window (default: none)"
    )
    define.add_argument(
        "--on-cross",
        choices=("none", "downgrade", "pause"),
        default="none",
        help="past --cross-at of the limit: nothing, cheapest models only, or refuse new runs",
    )
    define.add_argument(
        "--cross-at", type=float, default=0.95, metavar="F", help="the fraction where --on-cross applies"
    )
    budgets_sub.add_parser("list", parents=[with_db], help="budgets with their spend now (from Redis)")
    drop = budgets_sub.add_parser("delete", parents=[with_db], help="delete a budget")
    drop.add_argument("name", metavar="NAME", help="the budget's name (see `budgetflow budgets list`)")

    sub.add_parser("policies", help="list the policies and what each does")

    export = sub.add_parser("export", help="recorded data for outside tools")
    export_sub = export.add_subparsers(
        dest="export_command", required=True, parser_class=_Parser, metavar="WHAT"
    )
    attempts = export_sub.add_parser(
        "attempts",
        parents=[with_db],
        help="every recorded attempt as a training example, in JSONL or Parquet (docs/learning.md)",
    )
    _add_run_selection(attempts, workflow_help="only runs of this workflow")
    attempts.add_argument(
        "--format",
        choices=("jsonl", "parquet"),
        help="file format (default: parquet when --out ends in .parquet, else jsonl)",
    )
    attempts.add_argument(
        "--out",
        metavar="FILE",
        help="where to write (default attempts.jsonl or attempts.parquet; `-`: JSONL on standard output)",
    )

    estimates = sub.add_parser("estimates", help="what the recorded runs taught about each subtask and model")
    estimates_sub = estimates.add_subparsers(
        dest="estimates_command", required=True, parser_class=_Parser, metavar="WHAT"
    )
    estimates_show = estimates_sub.add_parser(
        "show",
        parents=[with_db],
        help="pooled success, tokens and latency per workflow, subtask and model (docs/learning.md)",
    )
    estimates_show.add_argument("--workflow", metavar="NAME", help="only this workflow")
    estimates_show.add_argument(
        "--workflow-file", metavar="PATH.py", help="the workflow's file: show its declared priors too"
    )
    estimates_show.add_argument(
        "--include-simulated", action="store_true", help="learn from simulated runs as well as real ones"
    )

    estimates_artifacts = estimates_sub.add_parser(
        "artifacts",
        parents=[with_db],
        help="the trained estimators (`budgetflow train`), each version with its held-out metrics",
    )
    estimates_artifacts.add_argument("--workflow", metavar="NAME", help="only this workflow")

    train = sub.add_parser(
        "train",
        parents=[with_db],
        help="fit the learned estimator from recorded runs and store it as the next version, which"
        " runs then load (docs/learning.md)",
    )
    _add_run_selection(train, workflow_help="only this workflow (default: each workflow with recorded runs)")
    train.add_argument(
        "--embedder",
        choices=("hashing", "none"),
        default="hashing",
        help="embed recorded prompts with the built-in hashing embedder (default), or use no embedding",
    )
    train.add_argument(
        "--holdout",
        type=_holdout,
        default=0.2,
        metavar="F",
        help="share of the runs held out to measure the fit (default 0.2; 0: none, no metrics)",
    )
    train.add_argument("--seed", type=_seed, default=0, help="seed of the held-out split (default 0)")

    bench = sub.add_parser("bench", help="benchmarks")
    bench_sub = bench.add_subparsers(
        dest="bench_command", required=True, parser_class=_Parser, metavar="NAME"
    )
    bench_sub.add_parser("planners", help="planner benchmark on a DAG pool (see --help)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None, *, console: Console | None = None) -> int:
    """Run the CLI; return the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    out = console or Console()
    err = Console(stderr=True) if console is None else console
    try:
        return _dispatch(args_list, out, err)
    except KeyboardInterrupt:  # Ctrl-C outside a run (a run handles its own signals)
        err.print("interrupted", style="magenta")
        return 130


def _dispatch(args_list: list[str], out: Console, err: Console) -> int:
    try:
        if args_list[:2] == ["bench", "planners"]:
            return _bench_planners(args_list[2:])
        try:
            args = _parser().parse_args(args_list)
        except _ArgumentError as exc:
            err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            return 2
        except SystemExit as exc:  # --help
            return int(exc.code or 0)
        settings = load_settings(
            {
                "database_url": args.database_url,
                "catalog_path": getattr(args, "catalog", None),
                "record_content": False if getattr(args, "no_content", False) else None,
                "metrics_port": getattr(args, "metrics_port", None),
                "metrics_host": getattr(args, "metrics_host", None),
                "api_workflows": getattr(args, "api_workflows", None),
                "workers": getattr(args, "workers", None),
            }
        )
        return _command(args, settings, out)
    except UserError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    except StorageError as exc:
        err.print(f"[red]storage error:[/] {escape(str(exc))}", highlight=False)
        return 1
    except BudgetflowError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        return 1


def _command(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if args.command == "run":
        return _run(args, settings, out)
    if args.command == "validate":
        return _validate(args, settings, out)
    if args.command == "runs":
        if args.runs_command == "list":
            from budgetflow.show import list_runs

            return list_runs(settings, out, limit=args.limit, workflow=args.workflow)
        if args.runs_command == "show":
            from budgetflow.show import show_run

            return show_run(settings, args.run_id, out)
        if args.runs_command == "resume":
            return _resume(args, settings, out)
        from budgetflow.abandon import mark_abandoned

        return mark_abandoned(settings, out, run_ids=args.run_ids, older_than_s=args.older_than)
    if args.command == "serve":
        from budgetflow.serve import serve

        return serve(
            settings,
            out,
            host=args.host,
            port=args.port,
            insecure_no_auth=args.insecure_no_auth,
            metrics_public=args.metrics_public,
            time_scale=args.time_scale,
        )
    if args.command == "tokens":
        return _tokens(args, settings, out)
    if args.command == "budgets":
        return _budgets(args, settings, out)
    if args.command == "worker":
        return _worker(args, settings, out)
    if args.command == "export":
        return _export(args, settings, out)
    if args.command == "train":
        return _train(args, settings, out)
    if args.command == "estimates":
        if args.estimates_command == "artifacts":
            from budgetflow.train_cli import show_artifacts

            return show_artifacts(settings, out, workflow=args.workflow)
        from budgetflow.estimates_cli import show_estimates

        return show_estimates(
            settings,
            out,
            workflow=args.workflow,
            workflow_file=args.workflow_file,
            include_simulated=args.include_simulated,
        )
    return _policies(out)


def _add_run_selection(parser: argparse.ArgumentParser, *, workflow_help: str) -> None:
    """The options that choose which recorded runs a command reads (`export attempts`, `train`)."""
    parser.add_argument("--workflow", metavar="NAME", help=workflow_help)
    parser.add_argument(
        "--since",
        metavar="DATE",
        help="only runs started since then: 2025-06-01, 2025-06-01T12:00 (UTC), or 7d, 12h, 2w ago",
    )
    parser.add_argument(
        "--limit", type=_positive_int, metavar="N", help="only the newest N runs (default: all)"
    )
    simulated = parser.add_mutually_exclusive_group()
    simulated.add_argument(
        "--include-simulated", action="store_true", help="simulated runs as well as real ones"
    )
    simulated.add_argument("--only-simulated", action="store_true", help="simulated runs only")


def _export(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow.export import export_attempts

    return export_attempts(
        settings,
        out,
        workflow=args.workflow,
        since=args.since,
        fmt=args.format,
        out=args.out,
        max_runs=args.limit,
        include_simulated=args.include_simulated,
        only_simulated=args.only_simulated,
    )


def _train(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow.train_cli import train

    return train(
        settings,
        out,
        workflow=args.workflow,
        since=args.since,
        max_runs=args.limit,
        include_simulated=args.include_simulated,
        only_simulated=args.only_simulated,
        embedder=args.embedder,
        holdout=args.holdout,
        seed=args.seed,
    )


def _worker(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    import asyncio
    import logging

    from budgetflow.worker import Worker, WorkerOptions

    options = WorkerOptions(
        concurrency=args.concurrency,
        global_concurrency=args.global_concurrency,
        executor_id=args.executor_id,
        heartbeat_s=args.heartbeat,
        takeover_after_s=args.takeover_after,
        sim_time_scale=args.time_scale,
        learn=not args.no_learn,
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("budgetflow").setLevel(logging.INFO)
    worker = Worker(settings, options)
    names = ", ".join(f"`{w.name}`" for w in worker.registry) or "none"
    received: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopping(signum: int) -> None:
            received.append(signum)
            stop.set()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping, signum)
        out.print(
            f"budgetflow worker `{worker.executor_id}` (concurrency {options.concurrency});"
            f" workflows: {names}",
            highlight=False,
            soft_wrap=True,
        )
        await worker.run(stop)

    asyncio.run(main())
    out.print("stopped; runs still going were put back on the queue", style="dim")
    return 128 + received[0] if received else 0


def _budgets(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow import budgets

    if args.budgets_command == "create":
        return budgets.create_budget(
            settings,
            out,
            name=args.name,
            scope=args.scope,
            limit_usd=args.limit_usd,
            window=args.window,
            on_cross=args.on_cross,
            cross_at=args.cross_at,
        )
    if args.budgets_command == "list":
        return budgets.list_budgets(settings, out)
    return budgets.delete_budget(settings, out, name=args.name)


def _tokens(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow import tokens

    if args.tokens_command == "create":
        return tokens.create_token(
            settings, out, name=args.name, scope=args.scope, expires_in=args.expires_in
        )
    if args.tokens_command == "list":
        return tokens.list_tokens(settings, out, include_inactive=args.all)
    return tokens.revoke_token(settings, out, token_id=args.token_id)


def _policies(out: Console) -> int:
    from budgetflow.policy_names import DESCRIPTIONS, FORMS
    from policies import policy_names

    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_column(no_wrap=True, style="bold")
    table.add_column(overflow="fold")
    for name in policy_names():
        table.add_row(name, DESCRIPTIONS.get(name, ""))
    for form, text in FORMS.items():
        table.add_row(form, text)
    out.print(table)
    return 0


def _bench_planners(argv: list[str]) -> int:
    from policies.bench import main as bench_main

    named = any(a == "--pool" or a.startswith("--pool=") for a in argv) or {"-h", "--help"} & set(argv)
    if not named and _DEV_POOL.is_file():
        argv = ["--pool", str(_DEV_POOL), *argv]
    code: int = bench_main(argv)
    return code


def _validate(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow.loader import load_workflow_file, prepare
    from orchestrator.catalog import NO_MODEL

    loaded = load_workflow_file(args.path)
    prepared = prepare(loaded, settings, inputs=dict(args.input), policy=args.policy)
    wf = loaded.workflow
    models = sorted({m for s in wf.subtasks.values() for m in s.models} - {NO_MODEL})
    out.print(
        f"[green]ok[/] workflow `{escape(wf.name)}`: {plural(len(wf), 'subtask')},"
        f" {plural(len(models), 'model')} ({escape(', '.join(models))}),"
        f" {plural(len(prepared.inputs), 'input')}",
        highlight=False,
    )
    for note in prepared.notes:
        out.print(f"note: {note}", style="yellow", highlight=False, markup=False)
    return 0


def _run(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow.loader import load_workflow_file, prepare
    from orchestrator.workflow import RunLimits

    budget = RunLimits.check_budget(args.budget, name="--budget") if args.budget is not None else None
    deadline_given = args.deadline is not None
    deadline = (
        None
        if not deadline_given or args.deadline.strip().lower() == "none"
        else RunLimits.check_deadline(args.deadline.strip().removesuffix("s"), name="--deadline")
    )
    loaded = load_workflow_file(args.path)
    prepared = prepare(loaded, settings, inputs=dict(args.input), policy=args.policy)
    budget = budget if budget is not None else loaded.budget_usd
    if budget is None:
        raise ConfigError(f"no budget: pass --budget USD or set `budget_usd` in `{args.path}`")
    deadline = deadline if deadline_given else loaded.deadline_s
    for note in prepared.notes:
        out.print(f"note: {note}", style="yellow", highlight=False, markup=False)
    return _execute_interruptibly(
        args,
        settings,
        out,
        loaded,
        prepared,
        budget_usd=budget,
        deadline_s=deadline,
        policy=args.policy,
        seed=args.seed,
    )


def _execute_interruptibly(
    args: argparse.Namespace,
    settings: Settings,
    out: Console,
    loaded: LoadedWorkflow,
    prepared: Prepared,
    *,
    budget_usd: Decimal,
    deadline_s: float | None,
    policy: str,
    seed: int,
    resume: ResumePoint | None = None,
) -> int:
    """Execute a run (`run`, `runs resume`) until it ends or a signal stops it; its exit code."""
    from budgetflow._signals import exit_code, run_interruptible
    from budgetflow.execute import execute
    from budgetflow.loader import route_catalog

    def stopping(signum: int) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        out.print(
            f"{name}: stopping the run (in-flight calls are cancelled and settled; again to quit at once)",
            style="magenta",
            highlight=False,
        )

    ended = run_interruptible(
        execute(
            loaded.workflow,
            catalog=prepared.catalog,
            settings=settings,
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            inputs=prepared.inputs,
            policy=policy,
            seed=seed,
            time_scale=args.time_scale,
            console=out,
            live=not args.no_progress,
            learn=not args.no_learn,
            estimator_version=getattr(args, "estimator_version", None),
            explore=getattr(args, "explore", False),
            route=route_catalog,
            resume=resume,
        ),
        on_signal=stopping,
    )
    if ended.signum is not None:
        return exit_code(ended.signum)
    assert ended.value is not None
    return 0 if ended.value.outcome.value == "completed" else 1


def _resume(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    from budgetflow.loader import load_workflow_file, prepare
    from storage.abandoned import ABANDONED_AFTER_S
    from storage.queries import resolve_run_id
    from storage.resume import resume_point

    run_id = resolve_run_id(settings.database_url, args.run_id)
    loaded = load_workflow_file(args.path)
    point = resume_point(
        settings.database_url,
        run_id,
        stale_after_s=args.older_than if args.older_than is not None else ABANDONED_AFTER_S,
    )
    recorded = point.run
    prepared = prepare(loaded, settings, inputs=dict(recorded.inputs), policy=recorded.policy)
    left = None if recorded.deadline_s is None else recorded.deadline_s - point.elapsed_s
    out.print(
        f"resuming run {run_id} ({recorded.workflow}, {recorded.policy}): {len(point.completed)} of"
        f" {len(loaded.workflow.subtasks)} subtasks done, ${point.spent_nano / 1e9:.6f} of"
        f" ${recorded.budget_usd} spent"
        + (
            f", {point.lost_calls} call(s) in flight at the crash kept at their reservation"
            if point.lost_calls
            else ""
        )
        + ("" if left is None else f", {max(left, 0):.1f}s left before its deadline"),
        highlight=False,
    )

    return _execute_interruptibly(
        args,
        settings,
        out,
        loaded,
        prepared,
        budget_usd=recorded.budget_usd,
        deadline_s=recorded.deadline_s,
        policy=recorded.policy,
        seed=recorded.seed,
        resume=point,
    )


def run_cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run_cli()
