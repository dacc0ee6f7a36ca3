"""The Prometheus metrics of runs: what they say agrees with the run's records, exactly.

Runs are real (the executor on the seeded simulated backend, on virtual time unless the
test is about serving); the metrics are read back from the registry each test owns, or
over HTTP from `MetricsServer`. The routers are real `PoolRouter`s whose leases the test
takes itself.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from agents import LLMAgent
from budgetflow import simulate
from budgetflow.cli import main
from budgetflow.settings import load_settings
from examples import code_pipeline, hard_step
from orchestrator.catalog import Catalog, PoolSpec
from orchestrator.errors import ConfigError
from orchestrator.events import AttemptStarted, CallFinished, RunFinished, RunStarted
from orchestrator.model_client import ChatMessage
from orchestrator.pool import PoolRouter, RouterConfig
from orchestrator.records import CallKind, CallStatus
from orchestrator.run import RunResult
from orchestrator.workflow import Workflow
from tests.cli.conftest import EXAMPLES, capture
from tests.conftest import estimate
from tests.test_events import Collect
from web import LABELS, METRICS, OTHER, BudgetflowMetrics, MetricLimits, MetricsServer
from web._call_errors import ERROR_TYPES, error_type


@pytest.fixture
def metrics() -> BudgetflowMetrics:
    """The metrics on a registry of the test's own."""
    return BudgetflowMetrics(CollectorRegistry())


def value(metrics: BudgetflowMetrics, name: str, **labels: str) -> float:
    """A sample's value (0 when the series does not exist)."""
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def _simulate(
    workflow: Workflow, catalog: Catalog, metrics: BudgetflowMetrics, **kwargs: object
) -> RunResult:
    options: dict[str, object] = {"policy": "mcpp", "budget_usd": 0.05, "deadline_s": 45.0, "seed": 3}
    options |= kwargs
    return simulate(
        workflow,
        catalog=catalog,
        inputs=code_pipeline.inputs if workflow is code_pipeline.workflow else hard_step.inputs,
        observers=[metrics.observer(catalog=catalog)],
        **options,  # type: ignore[arg-type]
    )


def test_spend_tokens_calls_and_attempts_agree_with_the_records(metrics: BudgetflowMetrics) -> None:
    result = _simulate(
        hard_step.workflow,
        hard_step.catalog,
        metrics,
        budget_usd=0.2,
        deadline_s=90.0,
        error_rate=0.4,
        seed=4,
    )
    w = {"workflow": "hard-step"}
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert {c.model for c in llm} == {"mini", "4o"} and any(c.status is CallStatus.ERROR for c in llm)
    tiers = {"mini": "cheap", "4o": "strong"}
    for model, tier in tiers.items():
        calls = [c for c in llm if c.model == model]
        provider = hard_step.catalog.get(model).provider  # the catalog's, for every call of the model
        labels = {**w, "model": model, "provider": provider, "tier": tier}
        assert value(metrics, "budgetflow_spend_usd_total", **labels) == pytest.approx(
            float(sum(c.cost_usd for c in calls)), rel=1e-9
        )
        for kind, tokens in (
            ("input", sum(c.input_tokens for c in calls)),
            ("output", sum(c.output_tokens for c in calls)),
            ("cached_input", sum(c.cached_tokens for c in calls)),
        ):
            assert value(metrics, "budgetflow_tokens_total", **labels, type=kind) == tokens
        by_outcome = Counter((c.status.value, error_type(c.error) if c.error else "") for c in calls)
        for (status, kind), count in by_outcome.items():
            assert (
                value(
                    metrics,
                    "budgetflow_model_calls_total",
                    model=model,
                    provider=provider,
                    tier=tier,
                    status=status,
                    error_type=kind if status == "error" else "",
                )
                == count
            )
        ended = [c for c in calls if c.status is not CallStatus.CANCELLED]
        duration = {"model": model, "tier": tier}
        assert value(metrics, "budgetflow_model_call_duration_seconds_count", **duration) == len(ended)
        assert value(metrics, "budgetflow_model_call_duration_seconds_sum", **duration) == pytest.approx(
            sum(c.latency_s for c in ended)
        )
    # the simulated backend's 503s are server errors
    server_errors = {"model": "mini", "provider": "openai", "tier": "cheap", "error_type": "server_error"}
    assert value(metrics, "budgetflow_model_calls_total", **server_errors, status="error") > 0
    attempts = Counter((a.subtask, a.model, a.status.value) for a in result.attempts)
    for (subtask, model, status), count in attempts.items():
        labels = {**w, "subtask": subtask, "model": model, "status": status}
        assert value(metrics, "budgetflow_attempts_total", **labels) == count
    checked = Counter(
        (a.subtask, a.model, a.check_passed) for a in result.attempts if a.check_passed is not None
    )
    for (subtask, model, passed), count in checked.items():
        labels = {**w, "subtask": subtask, "model": model, "result": "pass" if passed else "fail"}
        assert value(metrics, "budgetflow_checks_total", **labels) == count
    assert value(metrics, "budgetflow_decision_duration_seconds_count", policy="mcpp") == len(
        result.decisions
    )
    assert value(metrics, "budgetflow_decision_duration_seconds_sum", policy="mcpp") == pytest.approx(
        sum(d.decide_ms for d in result.decisions) / 1000
    )


def test_a_run_end_is_counted_with_its_utilisation_slack_and_thresholds(metrics: BudgetflowMetrics) -> None:
    result = _simulate(code_pipeline.workflow, code_pipeline.catalog, metrics, budget_usd=0.012)
    run = result.run
    w = {"workflow": "code-pipeline"}
    assert value(metrics, "budgetflow_runs_total", **w, policy="mcpp", outcome=run.outcome.value) == 1
    for outcome in ("completed", "budget_exhausted", "deadline_exceeded", "failed", "cancelled"):
        if outcome != run.outcome.value:  # created at zero when the run started
            assert (
                metrics.registry.get_sample_value(
                    "budgetflow_runs_total", {**w, "policy": "mcpp", "outcome": outcome}
                )
                == 0
            )
    utilization = float(run.spent_usd / run.budget_usd)
    assert value(metrics, "budgetflow_run_budget_utilization_ratio_sum", **w) == pytest.approx(utilization)
    assert value(metrics, "budgetflow_run_duration_seconds_sum", **w) == pytest.approx(run.makespan_s)
    assert run.makespan_s is not None and run.deadline_s is not None
    assert value(metrics, "budgetflow_run_deadline_slack_seconds_sum", **w) == pytest.approx(
        max(0.0, run.deadline_s - run.makespan_s)
    )
    for threshold in (0.5, 0.8, 0.95):
        crossed = 1.0 if utilization >= threshold else 0.0
        assert (
            value(metrics, "budgetflow_budget_threshold_crossings_total", **w, threshold=f"{threshold:g}")
            == crossed
        )
    assert utilization >= 0.5  # the budget is tight enough to cross at least one
    for name in ("", "_budget_usd", "_spent_usd", "_reserved_usd"):
        assert value(metrics, f"budgetflow_runs_in_progress{name}", **w) == 0


def test_a_run_past_its_deadline_has_its_overshoot_and_no_slack(metrics: BudgetflowMetrics) -> None:
    result = _simulate(code_pipeline.workflow, code_pipeline.catalog, metrics, deadline_s=6.0)
    run = result.run
    assert run.outcome.value == "deadline_exceeded" and run.makespan_s is not None
    w = {"workflow": "code-pipeline"}
    assert value(metrics, "budgetflow_run_deadline_slack_seconds_sum", **w) == 0
    overshoot = run.makespan_s - 6.0
    assert value(metrics, "budgetflow_run_deadline_overshoot_seconds_count", **w) == (
        1 if overshoot > 0 else 0
    )
    assert value(metrics, "budgetflow_run_deadline_overshoot_seconds_sum", **w) == pytest.approx(
        max(0.0, overshoot)
    )


def test_money_of_runs_in_progress_follows_each_event_and_returns_to_zero(metrics: BudgetflowMetrics) -> None:
    """Two runs' real events, interleaved into one observer: the gauges are their ledgers' sum."""
    streams = []
    for seed in (1, 2):
        collect = Collect()
        simulate(
            code_pipeline.workflow,
            catalog=code_pipeline.catalog,
            inputs=code_pipeline.inputs,
            policy="mcpp",
            budget_usd=0.05,
            deadline_s=45,
            seed=seed,
            observers=[collect],
        )
        streams.append(collect.events)
    observer = metrics.observer(catalog=code_pipeline.catalog)
    latest: dict[str, Decimal] = {}

    async def feed() -> None:
        first, second = streams
        checked = 0
        for i in range(max(len(first), len(second))):
            for events in streams:
                if i >= len(events):
                    continue
                event = events[i]
                await observer.observe(event)
                if isinstance(event, RunFinished):
                    latest.pop(event.run_id)
                else:
                    latest[event.run_id] = event.ledger.spent_usd + event.ledger.reserved_usd
                if isinstance(event, AttemptStarted | CallFinished):
                    spent = value(metrics, "budgetflow_runs_in_progress_spent_usd", workflow="code-pipeline")
                    reserved = value(
                        metrics, "budgetflow_runs_in_progress_reserved_usd", workflow="code-pipeline"
                    )
                    assert spent + reserved == pytest.approx(float(sum(latest.values())), abs=1e-12)
                    assert value(metrics, "budgetflow_runs_in_progress", workflow="code-pipeline") == len(
                        latest
                    )
                    checked += 1
        assert checked > 20

    asyncio.run(feed())
    assert isinstance(streams[0][0], RunStarted) and streams[0][0].run_id != streams[1][0].run_id
    for name in ("", "_budget_usd", "_spent_usd", "_reserved_usd"):
        assert value(metrics, f"budgetflow_runs_in_progress{name}", workflow="code-pipeline") == 0
    assert (
        value(metrics, "budgetflow_runs_total", workflow="code-pipeline", policy="mcpp", outcome="completed")
        == 2
    )


def test_no_label_holds_a_run_id_or_text_and_every_label_is_documented(metrics: BudgetflowMetrics) -> None:
    results = [
        _simulate(code_pipeline.workflow, code_pipeline.catalog, metrics, seed=seed, error_rate=0.1)
        for seed in (1, 2)
    ]
    forbidden = {r.run_id for r in results} | {a.attempt_id for r in results for a in r.attempts}
    exposed = {spec.name for spec in METRICS}
    for family in metrics.registry.collect():
        spec_name = family.name + "_total" if family.type == "counter" else family.name
        assert spec_name in exposed, spec_name
        for sample in family.samples:
            assert set(sample.labels) <= set(LABELS) | {"le"}, sample
            for label_value in sample.labels.values():
                assert label_value not in forbidden
                assert len(label_value) <= 64 and "\n" not in label_value, sample
    for spec in METRICS:
        assert set(spec.labels) <= set(LABELS), spec.name
        assert spec.name.startswith("budgetflow_")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name


def test_user_named_labels_are_capped_and_the_cap_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    metrics = BudgetflowMetrics(CollectorRegistry(), limits=MetricLimits(max_workflows=2, max_subtasks=3))
    with caplog.at_level(logging.WARNING, logger="web.metrics"):
        for name in ("first", "second", "third", "fourth"):
            wf = Workflow(name)
            for step in ("a", "b"):
                wf.subtask(step, LLMAgent(prompt="x"), models=["mini"], estimates={"mini": estimate(0.9)})
            simulate(
                wf,
                catalog=code_pipeline.catalog,
                policy="always_cheapest",
                budget_usd=1,
                deadline_s=None,
                observers=[metrics.observer(catalog=code_pipeline.catalog)],
            )
    runs = {
        s.labels["workflow"]: s.value
        for family in metrics.registry.collect()
        if family.name == "budgetflow_runs"
        for s in family.samples
        if s.name == "budgetflow_runs_total" and s.labels["outcome"] == "completed"
    }
    assert runs == {"first": 1, "second": 1, OTHER: 2}
    subtasks = {
        (s.labels["workflow"], s.labels["subtask"])
        for family in metrics.registry.collect()
        if family.name == "budgetflow_attempts"
        for s in family.samples
    }
    assert subtasks == {("first", "a"), ("first", "b"), ("second", "a"), ("second", OTHER), (OTHER, OTHER)}
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("`workflow` reached its limit of 2" in m for m in warnings) == 1
    assert sum("`subtask` reached its limit of 3" in m for m in warnings) == 1


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("simulated 503 from `small` (error_rate=0.1)", "server_error"),
        ("`openai/gpt-4o` failed: RateLimitError: litellm.RateLimitError: slow down", "rate_limit"),
        ("replica `http://a:8000` of pool `local` answered HTTP 429: busy; retry", "rate_limit"),
        ("replica `http://a:8000` of pool `local` answered HTTP 400: bad; fix the request", "bad_request"),
        ("call to replica `http://a` of pool `local` timed out after 3.0 s; retry", "timeout"),
        ("could not reach replica `http://a` of pool `local`, or the connection broke: x", "connection"),
        ("no healthy replica in pool `local` (`http://a` down)", "replica_unavailable"),
        ("`openai/x` failed: ContextWindowExceededError: too long", "context_window"),
        ("`openai/x` failed: AuthenticationError: invalid api key", "auth"),
        ("`anthropic/x` failed: InternalServerError: overloaded", "server_error"),
        ("something nobody foresaw", "other"),
        (None, "other"),
    ],
)
def test_error_text_is_reduced_to_a_few_kinds(text: str | None, kind: str) -> None:
    assert error_type(text) == kind
    assert kind in ERROR_TYPES


# ---- the pools -----------------------------------------------------------------------------------

_POOL = PoolSpec(
    name="local",
    served_model="tiny",
    replicas=("http://replica-a.test", "http://replica-b.test"),
    kv_capacity_tokens=16 * 1024,
    block_size_tokens=16,
)


def _messages(agent: int) -> tuple[ChatMessage, ...]:
    return (
        {"role": "system", "content": f"agent {agent} " + "words " * 400},
        {"role": "user", "content": "go"},
    )


async def _route(router: PoolRouter, agent: int, *, fail: bool = False) -> str:
    try:
        async with router.lease(_messages(agent)) as lease:
            router.record(lease, prompt_tokens=500, cached_tokens=400)
            if fail:
                raise OSError("the replica hung up")
            return lease.replica
    except OSError:
        return ""


def _pool_values(metrics: BudgetflowMetrics) -> dict[tuple[str, str, str], float]:
    found = {}
    for family in metrics.registry.collect():
        if family.name.startswith("budgetflow_pool"):
            for s in family.samples:
                found[(s.name, s.labels["replica"], s.labels.get("reason", ""))] = s.value
    return found


def test_pool_metrics_are_the_routers_view_and_counters_never_go_down(metrics: BudgetflowMetrics) -> None:
    a, b = _POOL.replicas
    first = PoolRouter(_POOL, RouterConfig(seed=0))

    async def traffic() -> None:
        with metrics.watch_pools([first]):
            for agent in range(6):
                await _route(first, agent)
            await _route(first, 0, fail=True)
            first.mark_down(b, "its health check failed")
            async with first.lease(_messages(9)):
                seen = _pool_values(metrics)
                assert seen[("budgetflow_pool_requests_in_flight", a, "")] == 1
            seen = _pool_values(metrics)
            stats = first.stats()
            for url in (a, b):
                assert seen[("budgetflow_pool_prompt_tokens_total", url, "")] == stats[url].prompt_tokens
                assert (
                    seen[("budgetflow_pool_cached_prompt_tokens_total", url, "")] == stats[url].cached_tokens
                )
                assert seen[("budgetflow_pool_request_failures_total", url, "")] == stats[url].failures
                routed = sum(
                    seen[("budgetflow_pool_requests_total", url, r)]
                    for r in ("preferred", "rebalanced", "spilled")
                )
                assert routed == stats[url].requests
                assert seen[("budgetflow_pool_requests_in_flight", url, "")] == 0
            assert seen[("budgetflow_pool_replica_up", a, "")] == 1
            assert seen[("budgetflow_pool_replica_up", b, "")] == 0
            assert sum(seen[("budgetflow_pool_request_failures_total", u, "")] for u in (a, b)) == 1
        after = _pool_values(metrics)
        assert ("budgetflow_pool_replica_up", a, "") not in after  # gauges leave with the router
        assert (
            after[("budgetflow_pool_prompt_tokens_total", a, "")]
            == seen[("budgetflow_pool_prompt_tokens_total", a, "")]
        )
        second = PoolRouter(_POOL, RouterConfig(seed=1))
        with metrics.watch_pools([second]):
            await _route(second, 0)
            more = _pool_values(metrics)
        total = sum(v for (name, _, _), v in more.items() if name == "budgetflow_pool_requests_total")
        assert total == 9  # 8 requests of the first router, kept, and one of the second

    asyncio.run(traffic())


# ---- serving -------------------------------------------------------------------------------------


def test_the_server_answers_prometheus_and_openmetrics_and_nothing_else(metrics: BudgetflowMetrics) -> None:
    _simulate(code_pipeline.workflow, code_pipeline.catalog, metrics)

    async def scrape() -> None:
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        async with MetricsServer(metrics.registry, port=0) as server:
            assert {s: signal.getsignal(s) for s in handlers} == handlers  # the run's own handling stays
            assert not await server.wait_for_scrape(0.05)
            waiting = asyncio.ensure_future(server.wait_for_scrape(5))
            async with httpx.AsyncClient() as client:
                text = await client.get(server.url)
                assert await waiting and server.scrapes == 1
                assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
                names = {f.name for f in text_string_to_metric_families(text.text)}
                assert "budgetflow_spend_usd" in names and "budgetflow_pool_requests" in names
                open_metrics = await client.get(
                    server.url, headers={"Accept": "application/openmetrics-text; version=1.0.0"}
                )
                assert open_metrics.headers["content-type"].startswith("application/openmetrics-text")
                assert open_metrics.text.rstrip().endswith("# EOF")
                assert (await client.post(server.url)).status_code == 405
                assert (await client.get(server.url.replace("/metrics", "/"))).status_code == 404
            port = server.port
        with socket.socket() as probe:  # closed: the port is free again
            probe.bind(("127.0.0.1", port))

    asyncio.run(scrape())


def test_a_port_in_use_is_a_config_error_that_says_what_to_do(metrics: BudgetflowMetrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        async def start() -> None:
            await MetricsServer(metrics.registry, port=port).start()

        with pytest.raises(ConfigError, match=rf"cannot serve metrics on `127.0.0.1:{port}`.*--metrics-port"):
            asyncio.run(start())

        console, out = capture()
        code = main(
            ["run", str(EXAMPLES / "code_pipeline.py"), "--metrics-port", str(port), "--no-progress"],
            console=console,
        )
        assert code == 2
        assert f"cannot serve metrics on `127.0.0.1:{port}`" in " ".join(out.getvalue().split())


def test_metrics_settings_come_from_flag_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("BUDGETFLOW_METRICS_PORT", "BUDGETFLOW_METRICS_HOST", "BUDGETFLOW_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    assert load_settings(cwd=tmp_path).metrics_port is None
    assert load_settings(cwd=tmp_path).metrics_host == "127.0.0.1"
    (tmp_path / "budgetflow.toml").write_text('metrics_port = 9100\nmetrics_host = "0.0.0.0"\n')
    assert (load_settings(cwd=tmp_path).metrics_port, load_settings(cwd=tmp_path).metrics_host) == (
        9100,
        "0.0.0.0",
    )
    monkeypatch.setenv("BUDGETFLOW_METRICS_PORT", "9200")
    assert load_settings(cwd=tmp_path).metrics_port == 9200
    assert load_settings({"metrics_port": 9300}, cwd=tmp_path).metrics_port == 9300
    monkeypatch.setenv("BUDGETFLOW_METRICS_PORT", "http")
    with pytest.raises(ConfigError, match=r"`BUDGETFLOW_METRICS_PORT` = `http` is not a TCP port"):
        load_settings(cwd=tmp_path)
    monkeypatch.delenv("BUDGETFLOW_METRICS_PORT")
    (tmp_path / "budgetflow.toml").write_text("metrics_port = 70000\n")
    with pytest.raises(ConfigError, match=r"`metrics_port` in `.*budgetflow.toml` = `70000`"):
        load_settings(cwd=tmp_path)


@pytest.fixture
def _no_metrics_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("BUDGETFLOW_METRICS_PORT", "BUDGETFLOW_METRICS_HOST"):
        monkeypatch.delenv(var, raising=False)
    yield


@pytest.mark.usefixtures("_no_metrics_env")
def test_a_bad_metrics_flag_is_a_usage_error() -> None:
    console, out = capture()
    code = main(["run", str(EXAMPLES / "code_pipeline.py"), "--metrics-port", "70000"], console=console)
    assert code == 2
    assert "`70000` is not a TCP port" in out.getvalue()
