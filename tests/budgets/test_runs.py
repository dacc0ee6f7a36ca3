"""Runs under shared budgets, through `open_run_services` as the CLI, the API and workers use it:
threshold events on the run's stream and in the metrics, `pause` refuses new runs, `downgrade`
plans with the cheapest models, and no Redis means no shared budgets."""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from agents import LLMAgent
from budgetflow.services import default_client, open_run_services, resolve_policy
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError
from orchestrator.events import AttemptStarted, BudgetThresholdCrossed, Event, Observer, ThresholdSource
from orchestrator.ledger import InProcessLedger
from orchestrator.run import RunResult, arun
from orchestrator.workflow import Workflow
from storage.migrate import upgrade
from storage.shared_budgets import SharedBudget, SharedBudgetPaused, create_budget, read_budget_states
from storage.shared_ledger import SharedBudgetLedger
from tests.conftest import estimate, simulated_catalog
from web import BudgetflowMetrics

pytestmark = pytest.mark.redis


class Collect:
    """Keeps every event of the runs it watches."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def observe(self, event: Event) -> None:
        self.events.append(event)


def pipeline(name: str) -> Workflow:
    """Three steps in a row, each on `small` or `large`."""
    est = {"small": estimate(0.7), "large": estimate(0.95, 500, 6.0)}
    wf = Workflow(name, inputs=["topic"])
    a = wf.subtask("a", LLMAgent(prompt="Plan {topic}"), models=["small", "large"], estimates=est)
    b = wf.subtask("b", LLMAgent(prompt="Do {a}"), models=["small", "large"], after=[a], estimates=est)
    wf.subtask("c", LLMAgent(prompt="Check {b}"), models=["small", "large"], after=[b], estimates=est)
    return wf


async def run_under(
    settings: Settings,
    workflow: Workflow,
    *,
    policy: str = "always_cheapest",
    observers: list[Collect] | None = None,
    metrics: BudgetflowMetrics | None = None,
    seed: int = 1,
) -> RunResult:
    catalog = simulated_catalog()
    run_id = secrets.token_hex(6)
    async with open_run_services(
        settings, workflow=workflow, catalog=catalog, budget_usd=Decimal("0.50"), run_id=run_id, learn=False
    ) as services:
        watchers: list[Observer] = list(observers or [])
        if metrics is not None:
            watchers.append(metrics.observer(catalog=catalog))
        client = default_client(workflow, catalog, seed=seed, sim_time_scale=0.001)
        try:
            watching: AbstractContextManager[None] = (
                metrics.watch_budgets(services.budget_views) if metrics is not None else nullcontext()
            )
            with watching:
                return await arun(
                    workflow,
                    catalog=catalog,
                    client=client,
                    policy=services.wrap_policy(resolve_policy(policy, seed)),
                    budget_usd=Decimal("0.50"),
                    deadline_s=600,
                    inputs={"topic": "x"},
                    seed=seed,
                    recorder=services.recorder,
                    ledger=services.ledger,
                    observers=watchers,
                    run_id=run_id,
                )
        finally:
            await client.aclose()


async def spend_elsewhere(client: Redis, budget: SharedBudget, upto: int) -> None:
    """Another run under `budget` spends what brings its spend to `upto`."""
    [now] = await read_budget_states(client, [budget], now=datetime.now(UTC))
    amount = upto - now.spent_nano
    other = await SharedBudgetLedger.create(client, secrets.token_hex(6), amount, budgets=[budget])
    held = await other.reserve(amount)
    assert held is not None
    await other.settle(held, amount)


@pytest.fixture
def settings(sqlite_url: str, redis_url: str) -> Settings:
    upgrade(sqlite_url)
    return Settings(database_url=sqlite_url, redis_url=redis_url, team=f"team-{secrets.token_hex(3)}")


async def test_a_crossing_reaches_the_run_events_and_the_metrics_once(
    settings: Settings, redis_client: Redis
) -> None:
    team = create_budget(settings.database_url, name="team", scope=f"team:{settings.team}", limit_usd="1")
    await spend_elsewhere(redis_client, team, team.limit_nano // 2 - 1)  # one nano short of 50 %
    seen, metrics = Collect(), BudgetflowMetrics(CollectorRegistry())
    first = await run_under(settings, pipeline("flow-a"), observers=[seen], metrics=metrics)
    assert first.spent_usd > 0
    crossed = [e for e in seen.events if isinstance(e, BudgetThresholdCrossed) and e.budget is not None]
    assert [(e.threshold, e.budget.name if e.budget else "") for e in crossed] == [(0.5, "team")]
    view = crossed[0].budget
    assert view is not None and view.limit_usd == Decimal(1) and view.spent_usd >= Decimal("0.5")
    registry = metrics.registry
    labels = {"budget": "team", "threshold": "0.5"}
    assert registry.get_sample_value("budgetflow_shared_budget_threshold_crossings_total", labels) == 1
    # The thresholds not crossed are series at zero, so that `rate()` sees their first crossing.
    for later in ("0.8", "0.95"):
        labels = {"budget": "team", "threshold": later}
        assert registry.get_sample_value("budgetflow_shared_budget_threshold_crossings_total", labels) == 0
    assert registry.get_sample_value("budgetflow_shared_budget_limit_usd", {"budget": "team"}) == 1.0
    spent = registry.get_sample_value("budgetflow_shared_budget_spent_usd", {"budget": "team"})
    assert spent is not None and spent >= 0.5
    # The run's own thresholds are untouched: it spent far less than half of its 0.50.
    assert not [e for e in seen.events if isinstance(e, BudgetThresholdCrossed) and e.budget is None]

    again = Collect()
    await run_under(settings, pipeline("flow-a"), observers=[again], seed=2)
    assert not [e for e in again.events if isinstance(e, BudgetThresholdCrossed)]  # once per window


async def test_a_paused_budget_refuses_new_runs(settings: Settings, redis_client: Redis) -> None:
    flow = create_budget(
        settings.database_url, name="flow-cap", scope="workflow:flow-p", limit_usd="0.001", on_cross="pause"
    )
    await run_under(settings, pipeline("flow-p"))  # below its point: runs
    await spend_elsewhere(redis_client, flow, flow.limit_nano)
    with pytest.raises(SharedBudgetPaused, match="budget `flow-cap`") as refused:
        await run_under(settings, pipeline("flow-p"))
    assert refused.value.budget == "flow-cap"
    await run_under(settings, pipeline("flow-other"))  # another workflow is not under it


async def test_a_downgraded_budget_plans_with_the_cheapest_models(
    settings: Settings, redis_client: Redis
) -> None:
    create_budget(settings.database_url, name="strong", scope="workflow:flow-s", limit_usd="10")
    seen = Collect()
    await run_under(settings, pipeline("flow-s"), policy="always_strongest", observers=[seen])
    assert {e.attempt.model for e in seen.events if isinstance(e, AttemptStarted)} == {"large"}

    down = create_budget(
        settings.database_url,
        name="thrifty",
        scope=f"team:{settings.team}",
        limit_usd="10",
        on_cross="downgrade",
        cross_at=0.5,
    )
    await spend_elsewhere(redis_client, down, down.limit_nano // 2)
    seen = Collect()
    result = await run_under(settings, pipeline("flow-s"), policy="always_strongest", observers=[seen])
    assert result.outcome.value == "completed"
    assert {e.attempt.model for e in seen.events if isinstance(e, AttemptStarted)} == {"small"}


async def test_without_redis_shared_budgets_are_refused(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    embedded = Settings(database_url=sqlite_url, team="solo")
    catalog = simulated_catalog()
    async with open_run_services(
        embedded,
        workflow=pipeline("flow-e"),
        catalog=catalog,
        budget_usd=Decimal(1),
        run_id="r1",
        learn=False,
    ) as services:
        assert isinstance(services.ledger, InProcessLedger)  # no budget above it: as before
        assert not isinstance(services.ledger, ThresholdSource)
    create_budget(sqlite_url, name="solo", scope="team:solo", limit_usd="5")
    with pytest.raises(ConfigError, match=r"`solo` \(team:solo\).*BUDGETFLOW_REDIS_URL"):
        async with open_run_services(
            embedded,
            workflow=pipeline("flow-e"),
            catalog=catalog,
            budget_usd=Decimal(1),
            run_id="r2",
            learn=False,
        ):
            pass


async def test_an_api_token_budget_applies_to_the_runs_it_submits(settings: Settings) -> None:
    create_budget(settings.database_url, name="ci-token", scope="token:7", limit_usd="3", window="month")
    catalog = simulated_catalog()
    async with open_run_services(
        settings,
        workflow=pipeline("flow-t"),
        catalog=catalog,
        budget_usd=Decimal(1),
        run_id=secrets.token_hex(6),
        learn=False,
        api_token_id=7,
    ) as services:
        assert [b.name for b in services.budgets] == ["ci-token"]
        assert isinstance(services.ledger, SharedBudgetLedger)
        views = services.budget_views()
        assert [(v.name, v.window) for v in views] == [("ci-token", datetime.now(UTC).strftime("%Y-%m"))]
