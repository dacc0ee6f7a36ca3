"""Prometheus metrics of runs: every metric in one table, and the observer that feeds them.

`BudgetflowMetrics` creates the metrics of `METRICS` on the registry it is given (never
prometheus-client's global default registry), and `MetricsObserver` updates them from a
run's events (`orchestrator.events`), off the run's critical path. Two collectors fill
their metrics at scrape time: the money of the runs in progress, and the vLLM pools'
per-replica view of their routers (`BudgetflowMetrics.watch_pools`).

Names follow Prometheus' conventions (`budgetflow_` prefix, base units, `_total`
counters, `_seconds` histograms) and mirror what LiteLLM's proxy and vLLM expose where
they have the same thing (spend by model, tokens by type, latency and time to first
token histograms, prefix-cache hits). No label ever holds a run id, a prompt or user
text: `LABELS` says where each label's values come from and why they are few, and
`MetricLimits` caps the ones users name (workflows, subtasks, models, policies).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from orchestrator.catalog import NO_MODEL, Catalog
from orchestrator.events import (
    BUDGET_THRESHOLDS,
    AttemptFinished,
    BudgetThresholdCrossed,
    CallFinished,
    DecisionMade,
    Event,
    LedgerView,
    RunFinished,
    RunStarted,
    SharedBudgetView,
)
from orchestrator.plan import DagView
from orchestrator.pool.router import PoolRouter
from orchestrator.records import CallKind, CallStatus, Outcome
from web._call_errors import ERROR_TYPES, error_type
from web._pool_collector import ROUTE_REASONS, PoolCollector
from web._runs_in_progress import RunsInProgress
from web._spec import MetricSpec
from web._tallies import CounterTally, HistogramTally

__all__ = ["LABELS", "METRICS", "OTHER", "BudgetflowMetrics", "MetricLimits", "MetricSpec", "MetricsObserver"]

_log = logging.getLogger(__name__)

OTHER = "_other"
"""The value a capped label takes once its limit of distinct values is reached."""

_CALL_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""OpenTelemetry's boundaries for `gen_ai.client.operation.duration`."""
_TTFT_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
"""vLLM's `time_to_first_token_seconds` boundaries from 10 ms to 80 s."""
_DECIDE_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RATIO = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_SLACK_S = (0.0, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_OVERSHOOT_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_RUN_S = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)

_MODEL = ("model", "provider", "tier")
_ENDINGS = tuple(o.value for o in Outcome if o not in (Outcome.RUNNING, Outcome.ABANDONED))
"""How a run observed to its end can end."""


def _m(
    name: str,
    kind: Literal["counter", "gauge", "histogram"],
    labels: tuple[str, ...],
    help: str,
    buckets: tuple[float, ...] = (),
) -> MetricSpec:
    return MetricSpec(name=name, kind=kind, labels=labels, help=help, buckets=buckets)


METRICS: tuple[MetricSpec, ...] = (
    # model calls (LiteLLM proxy: litellm_spend_metric, litellm_*_tokens_metric, latency, TTFT)
    _m(
        "budgetflow_spend_usd_total",
        "counter",
        ("workflow", *_MODEL),
        "Settled cost of model calls in USD (litellm_spend_metric).",
    ),
    _m(
        "budgetflow_tokens_total",
        "counter",
        ("workflow", *_MODEL, "type"),
        "Tokens of model calls by type: input, output, and cached_input (the part of input"
        " served from a prompt cache, also counted in input).",
    ),
    _m(
        "budgetflow_model_calls_total",
        "counter",
        (*_MODEL, "status", "error_type"),
        "Model calls by how they ended (ok, error, cancelled) and, for errors, their kind.",
    ),
    _m(
        "budgetflow_model_call_duration_seconds",
        "histogram",
        ("model", "tier"),
        "Duration of model calls that ended (ok or error); gen_ai.client.operation.duration.",
        _CALL_S,
    ),
    _m(
        "budgetflow_time_to_first_token_seconds",
        "histogram",
        ("model", "tier"),
        "Time from sending a model call to its first output token (vllm:time_to_first_token_seconds).",
        _TTFT_S,
    ),
    # attempts and checks
    _m(
        "budgetflow_attempts_total",
        "counter",
        ("workflow", "subtask", "model", "status"),
        "Finished attempts (samples) by final status: passed (the winner), passed_late, failed,"
        " error, cancelled, not_started.",
    ),
    _m(
        "budgetflow_checks_total",
        "counter",
        ("workflow", "subtask", "model", "result"),
        "Check verdicts on finished attempts: pass or fail.",
    ),
    # planning
    _m(
        "budgetflow_decision_duration_seconds",
        "histogram",
        ("policy",),
        "Time the policy took to decide.",
        _DECIDE_S,
    ),
    # runs
    _m(
        "budgetflow_runs_total",
        "counter",
        ("workflow", "policy", "outcome"),
        "Finished runs by outcome.",
    ),
    _m(
        "budgetflow_run_budget_utilization_ratio",
        "histogram",
        ("workflow",),
        "Settled spend over budget at the end of a run.",
        _RATIO,
    ),
    _m(
        "budgetflow_run_deadline_slack_seconds",
        "histogram",
        ("workflow",),
        "Time left before the deadline when a run with a deadline ended (0 when it ended past it).",
        _SLACK_S,
    ),
    _m(
        "budgetflow_run_deadline_overshoot_seconds",
        "histogram",
        ("workflow",),
        "How far past its deadline a run ended, for the runs that did (docs/guarantees.md).",
        _OVERSHOOT_S,
    ),
    _m(
        "budgetflow_run_duration_seconds",
        "histogram",
        ("workflow",),
        "Makespan of finished runs.",
        _RUN_S,
    ),
    _m(
        "budgetflow_run_overrun_usd_total",
        "counter",
        ("workflow",),
        "What providers billed above the reservations, beyond budgets (see docs/guarantees.md).",
    ),
    _m(
        "budgetflow_budget_threshold_crossings_total",
        "counter",
        ("workflow", "threshold"),
        "Runs whose settled spend passed 50, 80 or 95 % of their budget.",
    ),
    _m("budgetflow_runs_in_progress", "gauge", ("workflow",), "Runs in progress."),
    # shared budgets above runs (storage.shared_budgets)
    _m(
        "budgetflow_shared_budget_spent_usd",
        "gauge",
        ("budget",),
        "Settled spend of every run under a shared budget in its current window, as this process"
        " last saw it.",
    ),
    _m(
        "budgetflow_shared_budget_limit_usd",
        "gauge",
        ("budget",),
        "A shared budget's limit per window.",
    ),
    _m(
        "budgetflow_shared_budget_threshold_crossings_total",
        "counter",
        ("budget", "threshold"),
        "Shared budgets whose spend passed 50, 80 or 95 % of their limit (once per window, counted by"
        " the process whose call crossed it).",
    ),
    _m(
        "budgetflow_runs_in_progress_budget_usd",
        "gauge",
        ("workflow",),
        "Budgets of the runs in progress, summed.",
    ),
    _m(
        "budgetflow_runs_in_progress_spent_usd",
        "gauge",
        ("workflow",),
        "Settled spend of the runs in progress, summed.",
    ),
    _m(
        "budgetflow_runs_in_progress_reserved_usd",
        "gauge",
        ("workflow",),
        "Money held by the calls in flight of the runs in progress, summed.",
    ),
    # vLLM pools, per replica, from the routers' view
    _m(
        "budgetflow_pool_requests_total",
        "counter",
        ("pool", "replica", "reason"),
        "Requests the router sent to a replica, by why it chose it: preferred (the strategy's"
        " choice), rebalanced (a better match was over its share), spilled (its group's home was busy).",
    ),
    _m(
        "budgetflow_pool_request_failures_total",
        "counter",
        ("pool", "replica"),
        "Requests that failed on a replica.",
    ),
    _m(
        "budgetflow_pool_prompt_tokens_total",
        "counter",
        ("pool", "replica"),
        "Prompt tokens of finished requests on a replica (vllm:prefix_cache_queries).",
    ),
    _m(
        "budgetflow_pool_cached_prompt_tokens_total",
        "counter",
        ("pool", "replica"),
        "Of those, tokens served from the replica's prefix cache (vllm:prefix_cache_hits).",
    ),
    _m(
        "budgetflow_pool_requests_in_flight",
        "gauge",
        ("pool", "replica"),
        "Requests this process has sent to a replica and not yet finished.",
    ),
    _m(
        "budgetflow_pool_requests_waiting",
        "gauge",
        ("pool", "replica"),
        "vllm:num_requests_waiting of a replica at its last health check.",
    ),
    _m(
        "budgetflow_pool_replica_up",
        "gauge",
        ("pool", "replica"),
        "1 while the router sends requests to a replica, 0 while it is taken out.",
    ),
)
"""Every metric budgetflow exposes."""

LABELS: Mapping[str, str] = {
    "workflow": "the workflow's name; at most `MetricLimits.max_workflows` names, then `_other`",
    "subtask": "a subtask's name; at most `MetricLimits.max_subtasks` (workflow, subtask) pairs,"
    " then `_other`",
    "model": "the catalog's model name; at most `MetricLimits.max_models`, then `_other`",
    "provider": "the litellm provider of the model's string (`openai`, `hosted_vllm`, ...); at most"
    " `MetricLimits.max_models`",
    "tier": "the catalog's `tier`: `cheap`, `strong` or `other`",
    "type": "`input`, `output` or `cached_input`",
    "status": "calls: `ok`, `error`, `cancelled`; attempts: the attempt statuses (6 values)",
    "error_type": f"empty unless the call failed; then one of {', '.join(f'`{e}`' for e in ERROR_TYPES)}",
    "result": "`pass` or `fail`",
    "policy": "the policy's name; at most `MetricLimits.max_policies`, then `_other`",
    "outcome": "how a run ended: `completed`, `budget_exhausted`, `deadline_exceeded`, `failed`, `cancelled`",
    "threshold": ", ".join(f"`{t:g}`" for t in BUDGET_THRESHOLDS),
    "pool": "a vLLM pool's name from the catalog",
    "replica": "a replica's base URL from its pool's spec",
    "reason": ", ".join(f"`{r}`" for r in ROUTE_REASONS),
    "budget": "a shared budget's name (`budgetflow budgets list`): as many values as budgets are defined",
}
"""Every label, with where its values come from and why they are few."""

_SPECS = {spec.name: spec for spec in METRICS}


@dataclass(frozen=True, kw_only=True)
class MetricLimits:
    """How many distinct values the labels users name may take; the rest are `_other`.

    A process that runs many generated workflows (one per customer, per ticket, ...)
    would otherwise create series without end.
    """

    max_workflows: int = 100
    """Distinct `workflow` values."""
    max_subtasks: int = 1000
    """Distinct (workflow, subtask) pairs."""
    max_models: int = 100
    """Distinct `model` (and `provider`) values."""
    max_policies: int = 50
    """Distinct `policy` values."""


_K = TypeVar("_K")


class _Capped(Generic[_K]):
    """Keeps at most `limit` distinct keys; any other key maps to `OTHER`."""

    def __init__(self, label: str, limit: int) -> None:
        self._label = label
        self._limit = limit
        self._seen: set[_K] = set()
        self._warned = False

    def __call__(self, key: _K, value: str) -> str:
        if key in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(key)
            return value
        if not self._warned:
            self._warned = True
            _log.warning(
                "metric label `%s` reached its limit of %d distinct values; further ones are `%s`",
                self._label,
                self._limit,
                OTHER,
            )
        return OTHER


class BudgetflowMetrics(Collector):
    """The metrics of `METRICS` on one registry, for any number of runs and observers.

    The metrics are kept as plain numbers and turned into Prometheus families when the
    registry is collected (`web._tallies`), so an event costs a few dictionary updates.
    """

    def __init__(self, registry: CollectorRegistry, *, limits: MetricLimits | None = None) -> None:
        """Register every metric with `registry`.

        Args:
            registry: where the metrics live (give each process, or each test, its own).
            limits: caps on the distinct values of user-named labels.
        """
        self.registry = registry
        """The registry the metrics are on (serve it with `web.metrics_app`)."""
        limits = limits or MetricLimits()
        self.workflow_label: _Capped[str] = _Capped("workflow", limits.max_workflows)
        self.subtask_label: _Capped[tuple[str, str]] = _Capped("subtask", limits.max_subtasks)
        self.model_label: _Capped[str] = _Capped("model", limits.max_models)
        self.provider_label: _Capped[str] = _Capped("provider", limits.max_models)
        self.policy_label: _Capped[str] = _Capped("policy", limits.max_policies)
        self.spend = CounterTally(_SPECS["budgetflow_spend_usd_total"])
        self.tokens = CounterTally(_SPECS["budgetflow_tokens_total"])
        self.calls = CounterTally(_SPECS["budgetflow_model_calls_total"])
        self.call_seconds = HistogramTally(_SPECS["budgetflow_model_call_duration_seconds"])
        self.ttft_seconds = HistogramTally(_SPECS["budgetflow_time_to_first_token_seconds"])
        self.attempts = CounterTally(_SPECS["budgetflow_attempts_total"])
        self.checks = CounterTally(_SPECS["budgetflow_checks_total"])
        self.decision_seconds = HistogramTally(_SPECS["budgetflow_decision_duration_seconds"])
        self.runs = CounterTally(_SPECS["budgetflow_runs_total"])
        self.utilization = HistogramTally(_SPECS["budgetflow_run_budget_utilization_ratio"])
        self.slack_seconds = HistogramTally(_SPECS["budgetflow_run_deadline_slack_seconds"])
        self.overshoot_seconds = HistogramTally(_SPECS["budgetflow_run_deadline_overshoot_seconds"])
        self.run_seconds = HistogramTally(_SPECS["budgetflow_run_duration_seconds"])
        self.overrun = CounterTally(_SPECS["budgetflow_run_overrun_usd_total"])
        self.thresholds = CounterTally(_SPECS["budgetflow_budget_threshold_crossings_total"])
        self.shared_crossings = CounterTally(_SPECS["budgetflow_shared_budget_threshold_crossings_total"])
        self._tallies: tuple[CounterTally | HistogramTally, ...] = tuple(
            t for t in vars(self).values() if isinstance(t, CounterTally | HistogramTally)
        )
        self.in_progress = RunsInProgress(_SPECS)
        """The money of the runs in progress."""
        self.zeroed: set[tuple[str, ...]] = set()
        """Label sets already created at zero (`MetricsObserver` creates the likely ones early)."""
        self._pools = PoolCollector(_SPECS)
        self.shared_budgets: dict[str, SharedBudgetView] = {}
        """Each shared budget as last seen (by a crossing event, or a watched source at scrape time)."""
        self._budget_sources: list[Callable[[], Iterable[SharedBudgetView]]] = []
        registry.register(self)

    def collect(self) -> Iterable[Metric]:
        """Every family (called by the registry at scrape time)."""
        families: list[Metric] = [t.family() for t in self._tallies]
        families.extend(self.in_progress.collect())
        families.extend(self._pools.collect())
        families.extend(self._shared_budget_families())
        return families

    def watch_budgets(
        self, source: Callable[[], Iterable[SharedBudgetView]]
    ) -> contextlib.AbstractContextManager[None]:
        """Within the block, read the shared budgets' gauges from `source` at every scrape.

        `source` is cheap and does no I/O: e.g. a run's `SharedBudgetLedger.budget_views`
        (what Redis last answered it), through `RunServices.budget_views`.
        """

        @contextlib.contextmanager
        def watching() -> Iterator[None]:
            self._budget_sources.append(source)
            try:
                yield
            finally:
                self._budget_sources.remove(source)

        return watching()

    def saw_budget(self, view: SharedBudgetView) -> None:
        """Keep the latest view of a shared budget; a budget seen first gets its crossings at zero.

        Prometheus' `rate()` cannot see the first increase of a series that appears above
        zero: a budget that a scrape sees before any crossing has its series ready.
        """
        if view.name not in self.shared_budgets:
            for threshold in BUDGET_THRESHOLDS:
                self.shared_crossings.zero((view.name, f"{threshold:g}"))
        self.shared_budgets[view.name] = view

    def _shared_budget_families(self) -> list[Metric]:
        for source in list(self._budget_sources):
            for view in source():
                self.saw_budget(view)
        spent = _SPECS["budgetflow_shared_budget_spent_usd"].gauge_family()
        limit = _SPECS["budgetflow_shared_budget_limit_usd"].gauge_family()
        for name, view in sorted(self.shared_budgets.items()):
            spent.add_metric([name], float(view.spent_usd))
            limit.add_metric([name], float(view.limit_usd))
        return [spent, limit]

    def describe(self) -> Iterable[Metric]:
        """The families without samples (lets the registry check names without collecting)."""
        return [spec.counter_family() if spec.kind == "counter" else _empty(spec) for spec in METRICS]

    def observer(self, *, catalog: Catalog | None = None) -> MetricsObserver:
        """An observer that feeds these metrics from the events of the runs it is given to.

        Args:
            catalog: the runs' models, for the `tier` and `provider` labels (a model it does
                not name is `other`, and its provider is what its calls report).
        """
        return MetricsObserver(self, catalog=catalog)

    def watch_pools(self, routers: Iterable[PoolRouter]) -> contextlib.AbstractContextManager[None]:
        """Expose the per-replica metrics of `routers` (the pool clients' routers) within the block."""
        return self._pools.watching(routers)


def _empty(spec: MetricSpec) -> Metric:
    if spec.kind == "gauge":
        return spec.gauge_family()
    return HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))


@dataclass(kw_only=True, slots=True)
class _Run:
    workflow: str
    policy: str
    ledger: LedgerView


class MetricsObserver:
    """Feeds `BudgetflowMetrics` from run events; one observer may watch many runs at once.

    When a run starts, the series it will most likely touch (its outcomes, thresholds,
    run-end histograms, and for each of its models the spend, tokens, successful calls,
    latencies, attempts passed and failed, and check verdicts) are created at zero:
    Prometheus' `rate()` and `increase()` cannot see the first increase of a series that
    appears already above zero, so without this a process's first runs would be missing
    from the board.
    """

    def __init__(self, metrics: BudgetflowMetrics, *, catalog: Catalog | None = None) -> None:
        """Args:
        metrics: the metrics to update.
        catalog: the runs' models, for the `tier` and `provider` labels (a model it does
            not name is `other`) and for creating their series at zero when a run starts.
        """
        self._m = metrics
        models = {} if catalog is None else dict(catalog.models)
        self._tiers = {name: spec.tier for name, spec in models.items()}
        self._providers = {name: spec.provider for name, spec in models.items()}
        self._runs: dict[str, _Run] = {}
        self._models: dict[tuple[str, str | None], tuple[str, str, str]] = {}
        self._subtasks: dict[tuple[str, str], str] = {}
        self._handlers: dict[type[Event], Callable[[_Run, Any], None]] = {
            CallFinished: self._call,
            AttemptFinished: self._attempt,
            DecisionMade: self._decision,
            BudgetThresholdCrossed: self._threshold,
            RunFinished: self._finished,
        }

    event_types = frozenset(
        (RunStarted, DecisionMade, CallFinished, AttemptFinished, BudgetThresholdCrossed, RunFinished)
    )
    """The events it reads (the others are not built for it)."""

    async def observe(self, event: Event) -> None:
        """Update the metrics from one event."""
        if type(event) is RunStarted:
            m = self._m
            started = self._runs[event.run_id] = _Run(
                workflow=m.workflow_label(event.run.workflow, event.run.workflow),
                policy=m.policy_label(event.run.policy, event.run.policy),
                ledger=event.ledger,
            )
            m.in_progress.start(event.run_id, started.workflow, event.ledger)
            self._zero(started, event.dag)
            return
        run = self._runs.get(event.run_id)
        if run is None:  # the run started before this observer was given to it
            return
        if event.ledger is not run.ledger:  # the run shares one view until its money moves
            run.ledger = event.ledger
            self._m.in_progress.update(event.run_id, event.ledger)
        handle = self._handlers.get(type(event))
        if handle is not None:
            handle(run, event)

    def _model(self, model: str | None, provider: str | None) -> tuple[str, str, str]:
        """(model, provider, tier) labels of a call or attempt."""
        key = (model or "", provider)
        labels = self._models.get(key)
        if labels is None:
            m = self._m
            name = m.model_label(model or "", model or "")
            tier = self._tiers.get(model or "", "other") if name != OTHER else "other"
            labels = self._models[key] = (
                name,
                m.provider_label(provider or "", provider or "unknown"),
                tier,
            )
        return labels

    def _subtask(self, workflow: str, subtask: str) -> str:
        key = (workflow, subtask)
        label = self._subtasks.get(key)
        if label is None:
            label = self._subtasks[key] = self._m.subtask_label(key, subtask)
        return label

    def _zero(self, run: _Run, dag: DagView) -> None:
        """Create the series `run` will most likely touch, at zero (see the class docstring)."""
        m = self._m
        zeroed = m.zeroed
        w = run.workflow
        if ("run", w, run.policy) not in zeroed:
            zeroed.add(("run", w, run.policy))
            for outcome in _ENDINGS:
                m.runs.zero((w, run.policy, outcome))
            for threshold in BUDGET_THRESHOLDS:
                m.thresholds.zero((w, f"{threshold:g}"))
            for histogram in (m.utilization, m.run_seconds, m.slack_seconds, m.overshoot_seconds):
                histogram.zero((w,))
            m.decision_seconds.zero((run.policy,))
        for subtask in dag.subtasks:
            for name in dag.models.get(subtask, ()):
                if ("attempt", w, subtask, name) in zeroed:
                    continue
                zeroed.add(("attempt", w, subtask, name))
                label = self._subtask(w, subtask)
                model = self._model(name, None)[0]
                for status in ("passed", "failed"):
                    m.attempts.zero((w, label, model, status))
                for result in ("pass", "fail"):
                    m.checks.zero((w, label, model, result))
                if name == NO_MODEL or ("model", w, name) in zeroed:
                    continue
                zeroed.add(("model", w, name))
                model, provider, tier = self._model(name, self._providers.get(name))
                m.spend.zero((w, model, provider, tier))
                for kind in ("input", "output"):
                    m.tokens.zero((w, model, provider, tier, kind))
                m.calls.zero((model, provider, tier, "ok", ""))
                m.call_seconds.zero((model, tier))
                m.ttft_seconds.zero((model, tier))

    def _threshold(self, run: _Run, event: BudgetThresholdCrossed) -> None:
        if event.budget is not None:
            self._m.saw_budget(event.budget)
            self._m.shared_crossings.inc((event.budget.name, f"{event.threshold:g}"))
            return
        self._m.thresholds.inc((run.workflow, f"{event.threshold:g}"))

    def _decision(self, run: _Run, event: DecisionMade) -> None:
        policy = self._m.policy_label(event.decision.policy, event.decision.policy)
        self._m.decision_seconds.observe((policy,), event.decision.decide_ms / 1000.0)

    def _call(self, run: _Run, event: CallFinished) -> None:
        call = event.call
        if call.kind is not CallKind.LLM and call.kind is not CallKind.WARMUP:
            return  # agent and check spans: their model calls are counted themselves
        m = self._m
        # The catalog's provider, so that a model's calls share one series whatever the
        # client reported for each (a failed call has no reply to say who would have answered).
        model, provider, tier = self._model(call.model, self._providers.get(call.model or "", call.provider))
        w = run.workflow
        if call.cost_usd:
            m.spend.inc((w, model, provider, tier), call.cost_usd)
        if call.input_tokens:
            m.tokens.inc((w, model, provider, tier, "input"), call.input_tokens)
        if call.output_tokens:
            m.tokens.inc((w, model, provider, tier, "output"), call.output_tokens)
        if call.cached_tokens:
            m.tokens.inc((w, model, provider, tier, "cached_input"), call.cached_tokens)
        status = call.status
        m.calls.inc(
            (
                model,
                provider,
                tier,
                status.value,
                error_type(call.error) if status is CallStatus.ERROR else "",
            )
        )
        if call.kind is CallKind.LLM and status is not CallStatus.CANCELLED:
            m.call_seconds.observe((model, tier), call.latency_s)
            if call.ttft_s is not None:
                m.ttft_seconds.observe((model, tier), call.ttft_s)

    def _attempt(self, run: _Run, event: AttemptFinished) -> None:
        attempt = event.attempt
        m = self._m
        subtask = self._subtask(run.workflow, attempt.subtask)
        model = self._model(attempt.model, None)[0]
        m.attempts.inc((run.workflow, subtask, model, attempt.status.value))
        if attempt.check_passed is not None:
            m.checks.inc((run.workflow, subtask, model, "pass" if attempt.check_passed else "fail"))

    def _finished(self, run: _Run, event: RunFinished) -> None:
        record = event.run
        m = self._m
        m.in_progress.finish(event.run_id)
        del self._runs[event.run_id]
        w = (run.workflow,)
        m.runs.inc((run.workflow, run.policy, record.outcome.value))
        if record.budget_usd > 0:
            m.utilization.observe(w, float(record.spent_usd / record.budget_usd))
        makespan = record.makespan_s if record.makespan_s is not None else event.at_s
        m.run_seconds.observe(w, makespan)
        if record.deadline_s is not None:
            slack = record.deadline_s - makespan
            m.slack_seconds.observe(w, max(0.0, slack))
            if slack < 0:
                m.overshoot_seconds.observe(w, -slack)
        if record.overrun_usd:
            m.overrun.inc(w, record.overrun_usd)
