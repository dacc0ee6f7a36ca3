"""Interceptors: hooks around a run's work, in the task doing it; a failing one changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from contextvars import ContextVar

import pytest

from agents import LLMAgent
from budgetflow import arun
from orchestrator import Catalog, RunResult
from orchestrator._estimate_book import EstimateBook
from orchestrator.catalog import ModelSpec
from orchestrator.errors import ConfigError
from orchestrator.interceptors import (
    AttemptInfo,
    CallInfo,
    DecisionInfo,
    Interceptor,
    InterceptorStats,
    RunHooks,
    RunInfo,
)
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse, PromptCount
from orchestrator.records import AttemptStatus, CallKind, CallStatus, Outcome
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.workflow import Workflow
from tests.conftest import WorkflowFactory, estimate
from tests.promises.invariants import check_result

_IN_CALL: ContextVar[str | None] = ContextVar("_IN_CALL", default=None)
"""Set by `Recording`'s call hook: which call's hook is around the code running now."""


class Recording(Interceptor):
    """Notes every hook it enters and leaves, the task it was in, and what it was told."""

    def __init__(self) -> None:
        self.left: dict[str, list[object]] = {"run": [], "decision": [], "attempt": [], "call": []}
        self.entered: dict[str, int] = dict.fromkeys(self.left, 0)
        self.same_task: list[bool] = []

    @contextlib.contextmanager
    def _around(self, hook: str, info: RunInfo | DecisionInfo | AttemptInfo | CallInfo) -> Iterator[None]:
        self.entered[hook] += 1
        task = asyncio.current_task()
        yield
        self.same_task.append(asyncio.current_task() is task)
        self.left[hook].append(info)

    def run(self, info: RunInfo) -> contextlib.AbstractContextManager[None]:
        return self._around("run", info)

    def decision(self, info: DecisionInfo) -> contextlib.AbstractContextManager[None]:
        return self._around("decision", info)

    def attempt(self, info: AttemptInfo) -> contextlib.AbstractContextManager[None]:
        return self._around("attempt", info)

    @contextlib.contextmanager
    def call(self, info: CallInfo) -> Iterator[None]:
        token = _IN_CALL.set(info.call_id)
        try:
            with self._around("call", info):
                yield
        finally:
            _IN_CALL.reset(token)


class RaiseOnEnter(Interceptor):
    """Every hook raises before its work starts."""

    @contextlib.contextmanager
    def run(self, info: RunInfo) -> Iterator[None]:
        raise RuntimeError("broken on entering run")
        yield  # pragma: no cover - a generator that never yields

    @contextlib.contextmanager
    def decision(self, info: DecisionInfo) -> Iterator[None]:
        raise RuntimeError("broken on entering decision")
        yield  # pragma: no cover

    @contextlib.contextmanager
    def attempt(self, info: AttemptInfo) -> Iterator[None]:
        raise RuntimeError("broken on entering attempt")
        yield  # pragma: no cover

    @contextlib.contextmanager
    def call(self, info: CallInfo) -> Iterator[None]:
        raise RuntimeError("broken on entering call")
        yield  # pragma: no cover


class RaiseOnExit(Interceptor):
    """Every hook raises once its work is done."""

    @contextlib.contextmanager
    def run(self, info: RunInfo) -> Iterator[None]:
        yield
        raise RuntimeError("broken on leaving run")

    @contextlib.contextmanager
    def decision(self, info: DecisionInfo) -> Iterator[None]:
        yield
        raise RuntimeError("broken on leaving decision")

    @contextlib.contextmanager
    def attempt(self, info: AttemptInfo) -> Iterator[None]:
        yield
        raise RuntimeError("broken on leaving attempt")

    @contextlib.contextmanager
    def call(self, info: CallInfo) -> Iterator[None]:
        yield
        raise ValueError("broken on leaving call")


class Witness:
    """A simulated `ModelClient` noting, in each provider call, whose call hook is around it."""

    def __init__(self, inner: SimulatedClient) -> None:
        self.inner = inner
        self.seen: list[str | None] = []

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        return await self.inner.count_prompt_tokens(model, messages)

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        self.seen.append(_IN_CALL.get())
        return await self.inner.complete(request, progress)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _client(workflow: Workflow, catalog: Catalog, *, seed: int, time_scale: float) -> Witness:
    table = EstimateBook.build(workflow, catalog).table
    return Witness(SimulatedClient(SimulatedBackend(table, seed=seed, time_scale=time_scale)))


async def _run(
    workflow: Workflow,
    catalog: Catalog,
    interceptors: Sequence[Interceptor],
    *,
    policy: str = "fixed:small:1",
    deadline_s: float = 60,
    time_scale: float = 0.01,
    client: Witness | None = None,
) -> RunResult:
    return await arun(
        workflow,
        catalog=catalog,
        client=client or _client(workflow, catalog, seed=7, time_scale=time_scale),
        inputs={"topic": "t"},
        budget_usd="0.05",
        deadline_s=deadline_s,
        policy=policy,
        seed=7,
        interceptors=interceptors,
    )


async def test_each_hook_wraps_its_work_in_the_task_doing_it(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    wf = diamond()
    seen = Recording()
    client = _client(wf, sim_catalog, seed=7, time_scale=0.01)
    result = await _run(wf, sim_catalog, [seen], policy="fixed:small:2", client=client)
    assert result.outcome is Outcome.COMPLETED
    assert seen.entered == {hook: len(left) for hook, left in seen.left.items()}
    assert all(seen.same_task)

    (run,) = seen.left["run"]
    assert isinstance(run, RunInfo) and run.finished == result.run
    assert run.run.outcome is Outcome.RUNNING and list(run.dag.subtasks) == ["a", "b", "c", "d"]

    decisions = [d for d in seen.left["decision"] if isinstance(d, DecisionInfo)]
    assert [d.finished for d in decisions] == list(result.decisions)
    assert [d.index for d in decisions] == list(range(len(result.decisions)))

    spans = {c.call_id: c for c in result.calls if c.kind is CallKind.AGENT}
    attempts = [a for a in seen.left["attempt"] if isinstance(a, AttemptInfo)]
    assert sorted(a.span_id for a in attempts) == sorted(spans)
    final = {a.attempt_id: a for a in result.attempts}
    for info in attempts:
        assert info.finished == spans[info.span_id]
        assert info.spent_usd == final[info.attempt.attempt_id].spent_usd
        expected = final[info.attempt.attempt_id].status
        if expected is AttemptStatus.PASSED_LATE:
            expected = AttemptStatus.PASSED  # decided by the loop after the attempt ended
        assert info.status is expected

    llm = {c.call_id: c for c in result.calls if c.kind is CallKind.LLM}
    calls = [c for c in seen.left["call"] if isinstance(c, CallInfo)]
    assert sorted(c.call_id for c in calls) == sorted(llm)
    for call in calls:
        assert call.finished == llm[call.call_id]
        assert call.parent_call_id == llm[call.call_id].parent_call_id
        assert (call.response is not None) is (llm[call.call_id].status is CallStatus.OK)
    # The call hook's context is the provider call's context: each call ran inside its own hook.
    assert sorted(c for c in client.seen if c is not None) == sorted(llm)
    assert result.interceptors == (InterceptorStats(interceptor="Recording", errors=0),)


async def test_an_interceptor_that_raises_is_logged_counted_and_changes_nothing(
    sim_catalog: Catalog, diamond: WorkflowFactory, caplog: pytest.LogCaptureFixture
) -> None:
    alone = await _run(diamond(), sim_catalog, [])
    seen = Recording()
    with caplog.at_level(logging.WARNING, logger="orchestrator.interceptors"):
        result = await _run(diamond(), sim_catalog, [RaiseOnEnter(), seen, RaiseOnExit()])

    def shape(r: RunResult) -> tuple[object, ...]:
        return (
            r.outcome,
            r.spent_usd,
            [(a.subtask, a.model, a.status) for a in r.attempts],
            sorted((c.kind, c.subtask, c.status, c.cost_usd) for c in r.calls),
            [(s.subtask, s.status) for s in r.subtasks],
        )

    assert result.outcome is Outcome.COMPLETED
    assert shape(result) == shape(alone)
    check_result(result)
    # Every piece of work had its hook: the run, each decision, each attempt and each model call.
    model_calls = [c for c in result.calls if c.kind is CallKind.LLM]
    hooks_run = 1 + len(result.decisions) + len(result.attempts) + len(model_calls)
    assert result.interceptors == (
        InterceptorStats(interceptor="RaiseOnEnter", errors=hooks_run),
        InterceptorStats(interceptor="Recording", errors=0),
        InterceptorStats(interceptor="RaiseOnExit", errors=hooks_run),
    )
    # The well-behaved one between them saw everything, once.
    assert seen.entered == {hook: len(left) for hook, left in seen.left.items()}
    assert sum(seen.entered.values()) == hooks_run
    # Logged once per interceptor and hook.
    warned = [r.getMessage() for r in caplog.records if r.name == "orchestrator.interceptors"]
    assert len(warned) == 8
    assert all(("RaiseOnEnter" in m and "when entered" in m) or "RaiseOnExit" in m for m in warned)


async def test_every_hook_is_left_once_when_the_deadline_cancels_the_calls(sim_catalog: Catalog) -> None:
    """Slow calls cut by the deadline: their hooks are left with their cancelled records, in their task,
    and a broken interceptor alongside changes none of the run's promises."""
    wf = Workflow("slow", inputs=["topic"])
    wf.subtask(
        "a",
        LLMAgent(prompt="Write about {topic}"),
        models=["small"],
        estimates={"small": estimate(0.9, latency=30.0)},
    )
    seen = Recording()
    result = await _run(
        wf, sim_catalog, [seen, RaiseOnExit()], policy="fixed:small:3", deadline_s=0.6, time_scale=1.0
    )
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    check_result(result)
    assert seen.entered == {hook: len(left) for hook, left in seen.left.items()}
    assert all(seen.same_task)
    calls = [c for c in seen.left["call"] if isinstance(c, CallInfo)]
    assert len(calls) == 3
    for call in calls:
        assert call.finished is not None and call.finished.status is CallStatus.CANCELLED
        assert isinstance(call.error, asyncio.CancelledError)
    attempts = [a for a in seen.left["attempt"] if isinstance(a, AttemptInfo)]
    assert [a.status for a in attempts] == [AttemptStatus.CANCELLED] * 3
    (run,) = seen.left["run"]
    assert isinstance(run, RunInfo) and run.finished == result.run


def test_pass_through_hooks_are_never_entered() -> None:
    class OnlyCalls(Interceptor):
        @contextlib.contextmanager
        def call(self, info: CallInfo) -> Iterator[None]:
            yield

    assert not any((RunHooks().run, RunHooks().decision, RunHooks().attempt, RunHooks().call))
    plain = RunHooks([Interceptor()])
    assert not any((plain.run, plain.decision, plain.attempt, plain.call))
    calls_only = RunHooks([Interceptor(), OnlyCalls()])
    assert (
        bool(calls_only.run),
        bool(calls_only.decision),
        bool(calls_only.attempt),
        bool(calls_only.call),
    ) == (
        False,
        False,
        False,
        True,
    )
    assert calls_only.stats() == (
        InterceptorStats(interceptor="Interceptor", errors=0),
        InterceptorStats(interceptor="OnlyCalls", errors=0),
    )


def test_something_that_is_not_an_interceptor_is_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"must subclass `orchestrator\.interceptors\.Interceptor`, got Recorder"
    ):
        RunHooks([Recorder()])  # type: ignore[list-item]


class Recorder:
    """Not an interceptor."""


def test_a_hook_told_of_an_error_sees_it_and_hands_it_back() -> None:
    """A failure the work raised reaches the hook; the hook re-raising it is not its own failure."""
    told: list[BaseException | None] = []

    class Watch(Interceptor):
        @contextlib.contextmanager
        def decision(self, info: DecisionInfo) -> Iterator[None]:
            try:
                yield
            except BaseException as exc:
                told.append(exc)
                raise

    hooks = RunHooks([Watch()])
    failure = ConfigError("the decision failed")
    around = hooks.decision.enter(DecisionInfo(run_id="r", index=0, policy="p", ready=("a",)))
    around.finish(None, error=failure)
    assert told == [failure]
    assert around.info.finished is None
    assert hooks.stats() == (InterceptorStats(interceptor="Watch", errors=0),)
