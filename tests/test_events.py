"""The event stream: complete and in order, with the run's money; observers never touch the run."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator
from decimal import Decimal

import pytest

from budgetflow import arun, astream, simulate
from orchestrator import Catalog, Outcome, RunResult
from orchestrator._estimate_book import EstimateBook
from orchestrator.events import (
    AttemptFinished,
    AttemptStarted,
    BudgetThresholdCrossed,
    CallFinished,
    DecisionMade,
    Event,
    Observer,
    RunFinished,
    RunStarted,
    SubtaskChanged,
)
from orchestrator.memory_recorder import MemoryRecorder
from orchestrator.observers import ObserverHub
from orchestrator.records import SubtaskStatus
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from tests.conftest import WorkflowFactory, estimate


class Collect:
    """Keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def observe(self, event: Event) -> None:
        self.events.append(event)


class Sleepy:
    """Takes a second over every event."""

    async def observe(self, event: Event) -> None:
        await asyncio.sleep(1.0)


class Broken:
    """Raises on every event."""

    async def observe(self, event: Event) -> None:
        raise RuntimeError("this observer is broken")


def test_a_run_emits_every_event_in_order_with_its_money(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    seen = Collect()
    result = simulate(
        diamond(),
        catalog=sim_catalog,
        inputs={"topic": "t"},
        budget_usd="0.0015",
        deadline_s=60,
        policy="fixed:small:2",
        seed=3,
        observers=[seen],
    )
    events = seen.events
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
    assert [e.seq for e in events] == list(range(len(events)))
    assert all(e.run_id == result.run_id for e in events)
    assert [e.at_s for e in events] == sorted(e.at_s for e in events)
    assert len([e for e in events if isinstance(e, DecisionMade)]) == len(result.decisions)
    calls = [e.call for e in events if isinstance(e, CallFinished)]
    assert sorted(c.call_id for c in calls) == sorted(c.call_id for c in result.calls)
    started = {e.attempt.attempt_id for e in events if isinstance(e, AttemptStarted)}
    finished = [e.attempt for e in events if isinstance(e, AttemptFinished)]
    assert started == {a.attempt_id for a in finished} == {a.attempt_id for a in result.attempts}
    completed = {
        e.subtask.subtask: e.output
        for e in events
        if isinstance(e, SubtaskChanged) and e.subtask.status is SubtaskStatus.COMPLETED
    }
    assert completed == dict(result.outputs)
    assert all(e.subtask.output == e.output for e in events if isinstance(e, SubtaskChanged) and e.output)
    last = events[-1]
    assert isinstance(last, RunFinished) and last.run == result.run
    assert last.ledger.spent_usd == result.spent_usd and last.ledger.reserved_usd == 0
    # money only grows, and every call's cost is in the spend that follows it
    spent = [e.ledger.spent_usd for e in events]
    assert spent == sorted(spent)
    crossed = [e.threshold for e in events if isinstance(e, BudgetThresholdCrossed)]
    fraction = result.spent_usd / Decimal("0.0015")
    assert crossed == [t for t in (0.5, 0.8, 0.95) if fraction >= Decimal(str(t))]
    assert crossed, "the budget is small enough for spend to cross a threshold"
    for event in events:
        if isinstance(event, BudgetThresholdCrossed):
            assert event.ledger.spent_usd >= Decimal(str(event.threshold)) * Decimal("0.0015")
    assert result.observers[0].delivered == len(events) and result.observers[0].dropped == 0


class Thresholds(Collect):
    """Asks for threshold crossings and the run's end only."""

    event_types = (BudgetThresholdCrossed, RunFinished)


def test_an_observer_receives_only_the_events_it_asks_for(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    everything, some = Collect(), Thresholds()
    run = functools.partial(
        simulate,
        diamond(),
        catalog=sim_catalog,
        inputs={"topic": "t"},
        budget_usd="0.0015",
        deadline_s=60,
        policy="fixed:small:2",
        seed=3,
    )
    run(observers=[everything, some])
    wanted = [e for e in everything.events if isinstance(e, BudgetThresholdCrossed | RunFinished)]
    assert wanted and len(wanted) < len(everything.events)
    assert some.events == wanted
    # alone, it gets the same events, and the run builds no others (their numbers are not taken)
    alone = Thresholds()
    result = run(observers=[alone])
    assert [(type(e), getattr(e, "threshold", None)) for e in alone.events] == [
        (type(e), getattr(e, "threshold", None)) for e in wanted
    ]
    assert [e.seq for e in alone.events] == list(range(len(wanted)))
    assert result.observers[0].delivered == len(wanted)


def test_an_observer_asking_for_something_that_is_not_an_event_is_refused() -> None:
    class Confused(Collect):
        event_types = (RunFinished, str)

    with pytest.raises(TypeError, match=r"Confused.event_types names \[<class 'str'>\]"):
        ObserverHub([Confused()])


async def test_slow_and_failing_observers_neither_slow_nor_fail_the_run(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    wf = diamond(estimate(0.9, latency=0.2), estimate(0.9, latency=0.2))
    backend = SimulatedBackend(EstimateBook.build(wf, sim_catalog).table, seed=1)

    async def go(*observers: Observer) -> tuple[float, float, RunResult]:
        started = time.monotonic()
        result = await arun(
            wf,
            catalog=sim_catalog,
            inputs={"topic": "t"},
            budget_usd=1,
            deadline_s=60,
            policy="always_cheapest",
            client=SimulatedClient(backend),
            observers=observers,
        )
        return result.makespan_s, time.monotonic() - started, result

    alone, _, _ = await go()
    seen = Collect()
    makespan, returned, result = await go(Sleepy(), Broken(), seen)
    assert result.outcome is Outcome.COMPLETED
    assert makespan < alone + 0.5, (makespan, alone)  # the run did not wait for the sleeper
    assert returned < makespan + 0.5 + 1.0  # at most the drain (0.5 s) after the run
    stats = {s.observer: s for s in result.observers}
    assert stats["Sleepy"].delivered < len(seen.events) and stats["Sleepy"].dropped > 0
    assert stats["Broken"].errors == len(seen.events) and stats["Broken"].delivered == 0
    assert stats["Collect"].delivered == len(seen.events) and isinstance(seen.events[-1], RunFinished)


async def test_an_observer_that_falls_behind_loses_events_and_says_how_many() -> None:
    hub = ObserverHub([Sleepy()], queue_size=2)
    events = _events(5)
    for event in events:
        hub.publish(event)
    await asyncio.sleep(0)
    await hub.aclose(drain_s=0.1)
    (stats,) = hub.stats()
    assert stats.delivered == 0 and stats.dropped == 5


def _events(n: int) -> list[Event]:
    from orchestrator.events import LedgerView

    money = LedgerView(budget_nano=10**9, spent_nano=0, reserved_nano=0)
    return [
        BudgetThresholdCrossed(run_id="r", seq=i, at_s=float(i), ledger=money, threshold=0.5)
        for i in range(n)
    ]


async def test_astream_yields_the_run_as_it_happens(sim_catalog: Catalog, diamond: WorkflowFactory) -> None:
    wf = diamond(estimate(1.0, latency=0.05), estimate(1.0, latency=0.05))
    backend = SimulatedBackend(EstimateBook.build(wf, sim_catalog).table, seed=0)
    kinds = []
    async for event in astream(
        wf,
        catalog=sim_catalog,
        inputs={"topic": "t"},
        budget_usd=1,
        deadline_s=60,
        policy="always_cheapest",
        client=SimulatedClient(backend),
    ):
        kinds.append(type(event).__name__)
    assert kinds[0] == "RunStarted" and kinds[-1] == "RunFinished"
    assert kinds.count("SubtaskChanged") >= 8  # ready/running/completed for four subtasks


async def test_leaving_astream_early_cancels_the_run(sim_catalog: Catalog, diamond: WorkflowFactory) -> None:
    wf = diamond(estimate(1.0, latency=30.0), estimate(1.0, latency=30.0))
    backend = SimulatedBackend(EstimateBook.build(wf, sim_catalog).table, seed=0)
    memory = MemoryRecorder()
    stream: AsyncGenerator[Event, None] = astream(
        wf,
        catalog=sim_catalog,
        inputs={"topic": "t"},
        budget_usd=1,
        deadline_s=60,
        policy="always_cheapest",
        client=SimulatedClient(backend),
        recorder=memory,
    )
    async for event in stream:
        if isinstance(event, AttemptStarted):
            break
    await stream.aclose()
    assert memory.run is not None and memory.run.outcome is Outcome.CANCELLED
    assert all(a.status.value == "cancelled" for a in memory.attempts.values())


@pytest.mark.parametrize("queue_size", [0, -1])
def test_a_hub_needs_room_for_an_event(queue_size: int) -> None:
    with pytest.raises(ValueError, match="queue_size must be at least 1"):
        ObserverHub([], queue_size=queue_size)
