"""The composition root: settings in, the services of a run out.

One place turns configuration into the things a run needs: the model client (litellm,
with the simulated backend for simulated models and a pool client per vLLM pool), the
policy (by name), the budget ledger (in process, or shared in Redis), the durable
recorder (SQL) and the planner's estimator learned from recorded runs: the workflow's
newest trained artifact (`budgetflow train`), else the pooled estimates of its runs. The CLI uses it; the API
and the workers use it too. The core (`orchestrator.run.arun`) takes built services
and builds none. With a metrics port set, it also serves Prometheus metrics of the runs
(`open_metrics`), fed by an observer of each run and by the pool clients' routers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from budgetflow.settings import Settings
from orchestrator._estimate_book import EstimateBook
from orchestrator.catalog import NO_MODEL, Catalog
from orchestrator.errors import ConfigError
from orchestrator.estimator import Estimator
from orchestrator.ledger import InProcessLedger, Ledger, usd_to_nano
from orchestrator.model_client import ModelClient
from orchestrator.plan import Policy
from orchestrator.workflow import Workflow

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from budgetflow.tracing import Telemetry
    from orchestrator.events import SharedBudgetView
    from orchestrator.interceptors import Interceptor
    from orchestrator.pool import PooledLiteLLMCaller
    from storage import SqlRecorder
    from storage.shared_budgets import SharedBudget
    from storage.shared_ledger import SharedBudgetLedger
    from web import BudgetflowMetrics, MetricsServer

__all__ = [
    "RunServices",
    "ServedMetrics",
    "default_client",
    "open_metrics",
    "open_run_services",
    "pool_callers",
    "resolve_policy",
]


def resolve_policy(policy: str | Policy, seed: int) -> Policy:
    """A policy object from a registered name (`mcpp`, `fixed:small:4`, ...) or an object."""
    if isinstance(policy, str):
        from policies.registry import make_policy

        return make_policy(policy, seed=seed)
    return policy


def pool_callers(workflow: Workflow, catalog: Catalog) -> dict[str, PooledLiteLLMCaller]:
    """A pool client (with its router) for each vLLM pool that `workflow`'s models use, by pool name."""
    used = {m for s in workflow.subtasks.values() for m in s.models} - {NO_MODEL}
    pools = sorted(p for p in {catalog.get(m).pool for m in used} if p)
    if not pools:
        return {}
    from orchestrator.pool import PooledLiteLLMCaller

    return {name: PooledLiteLLMCaller(catalog.pools[name]) for name in pools}


def default_client(
    workflow: Workflow,
    catalog: Catalog,
    *,
    seed: int = 0,
    sim_time_scale: float = 1.0,
    pools: Mapping[str, PooledLiteLLMCaller] | None = None,
) -> ModelClient:
    """litellm for every model, the simulated backend for simulated ones, a pool client per pool.

    The simulated backend plays the world as the workflow's priors describe it (learned
    estimates only change what the planner believes).

    Args:
        workflow: what will run.
        catalog: its models.
        seed: the simulated backend's seed.
        sim_time_scale: speed of simulated latencies.
        pools: the pool clients to use (`pool_callers`); default: new ones. The client
            closes them when it is closed.
    """
    from orchestrator.litellm_client import LiteLLMClient
    from orchestrator.simulated import SimulatedBackend

    truth = EstimateBook.build(workflow, catalog)
    return LiteLLMClient(
        catalog,
        simulated=SimulatedBackend(truth.table, seed=seed, time_scale=sim_time_scale),
        pool_callers=pool_callers(workflow, catalog) if pools is None else pools,
    )


@dataclass(frozen=True, kw_only=True)
class ServedMetrics:
    """Prometheus metrics of this process's runs, and the server that exposes them."""

    metrics: BudgetflowMetrics
    """The metrics; give each run `metrics.observer(...)` and watch its pool routers."""
    server: MetricsServer
    """Serves them at `server.url`."""


@contextlib.asynccontextmanager
async def open_metrics(settings: Settings) -> AsyncIterator[ServedMetrics | None]:
    """Serve metrics on the settings' metrics host and port while the block runs; `None` without a port.

    Raises:
        ConfigError: the port cannot be listened on (taken, or not allowed).
    """
    if settings.metrics_port is None:
        yield None
        return
    from prometheus_client import CollectorRegistry

    from web import BudgetflowMetrics, MetricsServer

    registry = CollectorRegistry()
    metrics = BudgetflowMetrics(registry)
    async with MetricsServer(registry, host=settings.metrics_host, port=settings.metrics_port) as server:
        yield ServedMetrics(metrics=metrics, server=server)


@dataclass(kw_only=True)
class RunServices:
    """What one run of the CLI, the API or a worker needs, built from settings."""

    recorder: SqlRecorder
    """The durable recorder on the settings' database."""
    ledger: Ledger
    """The run's budget (in process, or shared in Redis)."""
    estimator: Estimator | None = None
    """The planner's beliefs learned from recorded runs of the workflow, for `arun(estimator=...)`:
    the newest trained artifact's `LearnedEstimator`, else the pooled estimates of its recorded
    runs; `None` when learning is off or nothing is recorded (the priors apply)."""
    estimator_version: int | None = None
    """The version of the trained artifact `estimator` is (`None`: not a trained artifact)."""
    notes: list[str] = field(default_factory=list)
    """What the user should know about the services chosen (shared ledger, learned estimates)."""
    interceptors: list[Interceptor] = field(default_factory=list)
    """Hooks for the run's `arun(interceptors=...)`: OpenTelemetry tracing when the settings turn
    it on (`budgetflow.tracing`)."""
    budgets: list[SharedBudget] = field(default_factory=list)
    """The shared budgets above the run (team, API token, workflow; docs/budgets.md), held in
    together with the run's own by `ledger`."""
    downgraded: Callable[[], bool] | None = None
    """Whether a `downgrade` budget above the run has passed its point (as the ledger last saw);
    `None`: no such budget."""
    budget_views: Callable[[], Iterable[SharedBudgetView]] = tuple
    """The shared budgets as the run's ledger last saw them, without I/O (for
    `BudgetflowMetrics.watch_budgets`)."""

    def wrap_policy(self, policy: Policy) -> Policy:
        """`policy`, planning with each subtask's cheapest model only while `downgraded()`."""
        if self.downgraded is None:
            return policy
        from policies.downgrade import CheapestWhen

        return CheapestWhen(policy, self.downgraded)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Learned:
    """The estimator chosen for a run, its artifact version, and what to tell the user."""

    estimator: Estimator | None = None
    version: int | None = None
    notes: tuple[str, ...] = ()


def _learned_estimator(engine: Engine, workflow: str, catalog: Catalog, version: int | None) -> _Learned:
    """The workflow's trained artifact (newest, or `version`), else its pooled estimates (blocking)."""
    from storage.estimator_artifacts import load_artifact

    artifact = load_artifact(engine, workflow, version)
    if artifact is not None:
        from budgetflow.train_cli import artifact_window
        from storage.learned_estimator import LearnedEstimator

        return _Learned(
            LearnedEstimator(artifact),
            artifact.version,
            (
                f"planner estimates from the trained estimator `{workflow}` v{artifact.version}"
                f" ({artifact_window(artifact)}); priors where it has no opinion",
            ),
        )
    if version is not None:
        raise ConfigError(
            f"workflow `{workflow}` has no trained estimator version {version}; `budgetflow estimates"
            " artifacts` lists the stored versions (or drop --estimator-version for the newest)"
        )
    from orchestrator.estimator import TableEstimator
    from storage.pooled_estimates import pooled_estimates

    models = {name: spec.litellm_model for name, spec in catalog.models.items()}
    pooled = pooled_estimates(engine, workflow=workflow, models=models)
    table = pooled.table(workflow)
    if not table:
        return _Learned()
    attempts = sum(
        c.passes + c.failures + c.errors + c.censored
        for c in pooled.cells
        if c.workflow == workflow and (c.subtask, c.model) in table
    )
    return _Learned(
        TableEstimator(table, workflow=workflow, label="pooled estimates"),
        None,
        (
            f"planner estimates pooled from recorded runs for {len(table)} (subtask, model) pairs"
            f" ({attempts} attempts); priors for the rest",
        ),
    )


@contextlib.asynccontextmanager
async def open_run_services(
    settings: Settings,
    *,
    workflow: Workflow,
    catalog: Catalog,
    budget_usd: Decimal,
    run_id: str,
    learn: bool = True,
    estimator_version: int | None = None,
    explore_seed: int | None = None,
    spent_nano: int | None = None,
    owner: str | None = None,
    api_token_id: str | int | None = None,
) -> AsyncIterator[RunServices]:
    """Open the recorder and the ledger for one run; close them when it is over.

    With `learn`, the planner's estimator is the workflow's newest artifact stored by
    `budgetflow train` (version `estimator_version` when given), else the pooled estimates
    of the workflow's recorded real runs whose calls went to the models the catalog names
    (`storage.pooled_estimates`, as a table); the priors answer for the rest. With
    `explore_seed`, the run plans on those beliefs (or, with none, the subtasks' declared
    priors) drawn once from their uncertainty (`orchestrator.ThompsonEstimator`).

    `spent_nano` resumes a run: its ledger starts with that spent (in Redis, the run's
    ledger is restored under a new epoch, which refuses the old process's holds). `owner` is
    the fencing token of this execution: its recorder writes only while the run is its own
    (`storage.sql_recorder.RunFence`).

    The shared budgets above the run (its workflow's, `settings.team`'s, and the API token
    `api_token_id`'s, when the API submitted it) are held in together with the run's own
    budget, in one Redis script per operation (`storage.shared_ledger`): they need Redis.

    Raises:
        ConfigError: a setting is invalid, shared budgets apply and Redis is not configured, or
            `estimator_version` is not stored for the workflow.
        SharedBudgetPaused: a budget above the run is set to `pause` and has passed its point.
        StorageError: the database or Redis cannot be reached.
    """
    from storage import SqlRecorder
    from storage._engine import ensure_sqlite_dir
    from storage.sql_recorder import RunFence

    ensure_sqlite_dir(settings.database_url)
    recorder = await SqlRecorder.open(
        settings.database_url,
        record_content=settings.record_content,
        fence=None if owner is None else RunFence(run_id, owner),
    )
    redis_client: Any = None
    telemetry: Telemetry | None = None
    try:
        notes: list[str] = []
        learned = _Learned()
        if learn:
            learned = await asyncio.to_thread(
                _learned_estimator, recorder.engine, workflow.name, catalog, estimator_version
            )
            notes.extend(learned.notes)
        elif estimator_version is not None:
            raise ConfigError(
                f"estimator version {estimator_version} was asked for with learning off; drop one of the two"
            )
        from storage.shared_budgets import RunScope, budgets_for

        scope = RunScope(
            workflow=workflow.name,
            team=settings.team,
            token=None if api_token_id is None else str(api_token_id),
        )
        budgets = await asyncio.to_thread(budgets_for, recorder.engine, scope)
        if budgets and not settings.redis_url:
            names = ", ".join(f"`{b.name}` ({b.scope})" for b in budgets)
            raise ConfigError(
                f"shared budgets {names} are above this run, and they are kept in Redis, which is not"
                " configured; set `BUDGETFLOW_REDIS_URL` (or `redis_url` in budgetflow.toml), or delete"
                " them (`budgetflow budgets delete NAME`)"
            )
        ledger: Ledger
        downgraded: Callable[[], bool] | None = None
        shared: SharedBudgetLedger | None = None
        if settings.redis_url and budgets:
            # The run's budget and every budget above it, held together in one script.
            from redis.asyncio import Redis

            from storage._engine import redact
            from storage.shared_budgets import paused_by, read_budget_states
            from storage.shared_ledger import SharedBudgetLedger

            redis_client = Redis.from_url(settings.redis_url)
            if spent_nano is None:
                refused = paused_by(budgets, await read_budget_states(redis_client, budgets, now=_utcnow()))
                if refused is not None:
                    raise refused
                shared = await SharedBudgetLedger.create(
                    redis_client, run_id, usd_to_nano(budget_usd), budgets=budgets
                )
            else:
                shared = await SharedBudgetLedger.restore(
                    redis_client,
                    run_id,
                    budget_nano=usd_to_nano(budget_usd),
                    spent_nano=spent_nano,
                    replace=True,
                    budgets=budgets,
                )
            await shared.refresh()
            ledger = shared
            if any(b.on_cross == "downgrade" for b in budgets):
                downgraded = shared.downgraded
            notes.append(
                f"ledger: Redis at {redact(settings.redis_url)} (shared across workers), with the shared"
                f" budgets {', '.join(f'`{b.name}`' for b in budgets)}"
            )
        elif settings.redis_url:
            # A budget shared by every process that works on this run.
            from redis.asyncio import Redis

            from storage import RedisLedger
            from storage._engine import redact

            redis_client = Redis.from_url(settings.redis_url)
            if spent_nano is None:
                ledger = await RedisLedger.create(redis_client, run_id, usd_to_nano(budget_usd))
            else:
                ledger = await RedisLedger.restore(
                    redis_client,
                    run_id,
                    budget_nano=usd_to_nano(budget_usd),
                    spent_nano=spent_nano,
                    replace=True,
                )
            notes.append(f"ledger: Redis at {redact(settings.redis_url)} (shared across workers)")
        else:
            ledger = InProcessLedger(usd_to_nano(budget_usd), spent_nano=spent_nano or 0)
        if settings.tracing or settings.otel_metrics:
            from budgetflow.tracing import telemetry_from_settings

            telemetry = telemetry_from_settings(settings)
        estimator = learned.estimator
        if explore_seed is not None:
            estimator = _exploring(workflow, estimator, explore_seed)
            notes.append(f"exploring: success beliefs drawn from their uncertainty (seed {explore_seed})")
        yield RunServices(
            recorder=recorder,
            ledger=ledger,
            estimator=estimator,
            estimator_version=learned.version,
            notes=notes,
            interceptors=[] if telemetry is None else telemetry.interceptors,
            budgets=budgets,
            downgraded=downgraded,
            budget_views=tuple if shared is None else shared.budget_views,
        )
    finally:
        try:
            await recorder.aclose()
        finally:
            try:
                if redis_client is not None:
                    await redis_client.aclose()
            finally:
                if telemetry is not None:
                    # Exports what is still buffered (over the network: off the loop).
                    await asyncio.to_thread(telemetry.shutdown)


def _exploring(workflow: Workflow, learned: Estimator | None, seed: int) -> Estimator:
    """`learned` (else the subtasks' declared priors) with its success beliefs drawn once."""
    from orchestrator import TableEstimator, ThompsonEstimator

    declared = {
        (sub.name, model): est for sub in workflow.subtasks.values() for model, est in sub.estimates.items()
    }
    base = learned or TableEstimator(declared, workflow=workflow.name, label="priors")
    return ThompsonEstimator(base, seed=seed)
