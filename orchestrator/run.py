"""Running a workflow with the services given: `arun` (async) and `run` (a sync wrapper).

The core of a run. Users call `budgetflow.run` / `budgetflow.arun`, which add defaults
(a client for the catalog, a policy by name) from the composition root,
`budgetflow.services`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from orchestrator._estimate_book import EstimateBook
from orchestrator.belief_updates import InRunUpdate
from orchestrator.call_tree import CallTree
from orchestrator.catalog import Catalog
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate
from orchestrator.estimator import Estimator, describe_beliefs
from orchestrator.events import Observer
from orchestrator.executor import Executor
from orchestrator.gateway import RetryPolicy
from orchestrator.interceptors import Interceptor, InterceptorStats
from orchestrator.ledger import InProcessLedger, Ledger, usd_to_nano
from orchestrator.memory_recorder import MemoryRecorder
from orchestrator.model_client import ModelClient
from orchestrator.observers import ObserverStats
from orchestrator.plan import Policy
from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
)
from orchestrator.resume import ResumePoint
from orchestrator.workflow import RunLimits, Workflow

__all__ = ["RunResult", "arun", "run"]


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a run did."""

    run: RunRecord
    """The run record (id, outcome, reason, spend, makespan)."""
    outputs: Mapping[str, Any]
    """Output of every completed subtask."""
    tree: CallTree
    """The calling tree of every call made."""
    decisions: Sequence[DecisionRecord]
    """Every policy decision."""
    attempts: Sequence[AttemptRecord]
    """Every attempt, in start order."""
    subtasks: Sequence[SubtaskRecord]
    """Every subtask's final state, in the workflow's order."""
    calls: Sequence[CallRecord]
    """Every call and span."""
    observers: Sequence[ObserverStats] = ()
    """What each observer received (delivered, dropped, errors)."""
    interceptors: Sequence[InterceptorStats] = ()
    """How often each interceptor's hooks raised (each time logged and ignored)."""

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id

    @property
    def outcome(self) -> Outcome:
        """completed | budget_exhausted | deadline_exceeded | failed | cancelled."""
        return self.run.outcome

    @property
    def spent_usd(self) -> Decimal:
        """Settled spend; never above the budget."""
        return self.run.spent_usd

    @property
    def makespan_s(self) -> float:
        """Time from start to end."""
        return self.run.makespan_s or 0.0


async def arun(
    workflow: Workflow,
    *,
    catalog: Catalog,
    client: ModelClient,
    policy: Policy,
    budget_usd: Decimal | float | str,
    deadline_s: float | None = None,
    inputs: Mapping[str, Any] | None = None,
    seed: int = 0,
    recorder: Recorder | None = None,
    ledger: Ledger | None = None,
    observers: Sequence[Observer] = (),
    interceptors: Sequence[Interceptor] = (),
    learned_estimates: Mapping[tuple[str, str], AttemptEstimate] | None = None,
    estimator: Estimator | None = None,
    update_in_run: bool | InRunUpdate = True,
    retry: RetryPolicy | None = None,
    record_content: bool = True,
    run_id: str | None = None,
    cancel: asyncio.Event | None = None,
    observer_drain_s: float = 0.5,
    resume: ResumePoint | None = None,
) -> RunResult:
    """Run `workflow` once under a hard budget and a deadline, with the services given.

    This is the core: it builds no client, ledger or recorder and knows no policy by name.
    `budgetflow.arun` is the same with defaults for all of them (see `budgetflow.services`).

    Args:
        workflow: the DAG to run (validated here against `catalog` and `inputs`).
        catalog: the models it may use.
        client: the model client (prepared here, before the run's clock starts).
        policy: the policy that decides.
        budget_usd: hard budget; spend never exceeds it.
        deadline_s: seconds from the start; in-flight calls are cancelled when it passes.
        inputs: values for the prompt templates.
        seed: seeds the policy's retries' jitter and the attempts' seeds.
        recorder: the durable recorder (e.g. `storage.SqlRecorder`); the result has the
            records either way.
        ledger: budget ledger; default: an in-process ledger for `budget_usd`.
        observers: watch the run's events (`orchestrator.events`), off its critical path.
        interceptors: hooks around the run, each decision, attempt and model call, in the
            task doing the work (`orchestrator.interceptors`); tracing is one.
        learned_estimates: estimates learned from recorded runs per (subtask, model), preferred
            over priors (a `TableEstimator`, asked after `estimator`).
        estimator: the planner's beliefs per (subtask, model, request features)
            (`orchestrator.estimator`); where it answers `None`, `learned_estimates`, then the
            subtask's priors, then the catalog's defaults apply.
        update_in_run: update the run's beliefs after every finished attempt
            (`orchestrator.belief_updates`): `True` with the default constants, an
            `InRunUpdate` with others, `False` to plan on the starting beliefs throughout.
        retry: how provider errors are retried.
        record_content: store prompt and response text, outputs and the run's inputs;
            `False` records each input as its size only (`{"redacted": true, "chars": N}`).
        run_id: the run's id (default: random).
        cancel: set it to end the run early: in-flight calls are cancelled and settled, the
            run is recorded `cancelled`, and `arun` returns its result (cancelling the task
            running `arun` does the same, then raises `CancelledError`).
        observer_drain_s: after the run, how long observers may take to catch up before they
            are stopped (the run's own record is final before).
        resume: continue this recorded run (`storage.resume.resume_point`) instead of starting
            one: its id, budget, deadline, inputs and seed are the recorded ones (the arguments
            for them are not used), its completed subtasks are not run again, its spend so far
            is charged to the default ledger (a given ledger must hold it already), and its
            deadline stays where it was.

    Raises:
        ConfigError: `resume` is of another workflow, or its inputs were not recorded.
    """
    if resume is not None:
        recorded = resume.run
        if recorded.workflow != workflow.name:
            raise ConfigError(
                f"run `{recorded.run_id}` is of workflow `{recorded.workflow}`, not `{workflow.name}`;"
                " resume it with the workflow it ran"
            )
        if any(isinstance(v, dict) and v.get("redacted") for v in recorded.inputs.values()):
            raise ConfigError(
                f"run `{recorded.run_id}` was recorded without content (its inputs are redacted),"
                " so it cannot be resumed; start it again"
            )
        budget_usd, deadline_s, seed = recorded.budget_usd, recorded.deadline_s, recorded.seed
        inputs, run_id = recorded.inputs, recorded.run_id
    inputs = dict(inputs or {})
    limits = RunLimits.checked(budget_usd, deadline_s)
    workflow.validate(catalog=catalog, inputs=inputs)
    if any(not catalog.get(m).priced for s in workflow.subtasks.values() for m in s.models):
        catalog = catalog.resolve_prices()
    estimates = EstimateBook.build(workflow, catalog, learned_estimates, estimator=estimator, inputs=inputs)
    if ledger is None:
        spent = 0 if resume is None else resume.spent_nano
        ledger = InProcessLedger(usd_to_nano(limits.budget_usd), spent_nano=spent)
    else:
        snap = await ledger.snapshot()
        if snap.budget_nano > usd_to_nano(limits.budget_usd):
            raise ConfigError(
                f"the ledger's budget (${snap.budget_nano / 1e9:.6f}) exceeds the run's budget"
                f" (${limits.budget_usd}); create the ledger with the run's budget"
            )
    memory = MemoryRecorder()
    in_run = InRunUpdate() if update_in_run is True else update_in_run or None
    executor = Executor(
        workflow=workflow,
        catalog=catalog,
        client=client,
        policy=policy,
        ledger=ledger,
        recorder=memory if recorder is None else _KeptAndRecorded(memory, recorder),
        limits=limits,
        inputs=inputs,
        estimates=estimates,
        seed=seed,
        run_id=run_id,
        retry=retry,
        record_content=record_content,
        cancel=cancel,
        observers=observers,
        interceptors=interceptors,
        resume=resume,
        in_run=in_run,
        beliefs=describe_beliefs(estimator, learned_table=bool(learned_estimates), in_run=in_run is not None),
    )
    try:
        # Slow one-time work (litellm's import, tokenizers, pool health) before the clock starts.
        await client.prepare()
        record = await executor.run()
    finally:
        await executor.hub.aclose(drain_s=observer_drain_s)
    winners = {s.subtask: s for s in memory.subtasks.values() if s.winner_attempt_id}
    return RunResult(
        run=record,
        outputs={name: value for name, value in executor.outputs.items() if name in winners},
        tree=memory.tree(),
        decisions=list(memory.decisions),
        attempts=sorted(memory.attempts.values(), key=lambda a: a.started_s),
        subtasks=[memory.subtasks[n] for n in workflow.subtasks if n in memory.subtasks],
        calls=list(memory.calls),
        observers=executor.hub.stats(),
        interceptors=executor.hooks.stats(),
    )


def run(workflow: Workflow, **kwargs: Any) -> RunResult:
    """Synchronous `arun`, for scripts; not for use inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(workflow, **kwargs))
    raise ConfigError("`run()` was called inside a running event loop; use `await arun(...)` instead")


class _KeptAndRecorded:
    """Every record kept in memory (for the result) and written to the durable recorder."""

    def __init__(self, memory: MemoryRecorder, durable: Recorder) -> None:
        self._memory = memory
        self._durable = durable

    async def run_started(self, run: RunRecord) -> None:
        await self._memory.run_started(run)
        await self._durable.run_started(run)

    async def decision_made(self, decision: DecisionRecord) -> None:
        await self._memory.decision_made(decision)
        await self._durable.decision_made(decision)

    async def attempt_started(self, attempt: AttemptRecord) -> None:
        await self._memory.attempt_started(attempt)
        await self._durable.attempt_started(attempt)

    async def call_started(self, call: CallRecord) -> None:
        await self._durable.call_started(call)

    async def call_finished(self, call: CallRecord) -> None:
        await self._memory.call_finished(call)
        await self._durable.call_finished(call)

    async def attempt_finished(self, attempt: AttemptRecord) -> None:
        await self._memory.attempt_finished(attempt)
        await self._durable.attempt_finished(attempt)

    async def subtask_changed(self, subtask: SubtaskRecord) -> None:
        await self._memory.subtask_changed(subtask)
        await self._durable.subtask_changed(subtask)

    async def run_finished(self, run: RunRecord) -> None:
        await self._memory.run_finished(run)
        await self._durable.run_finished(run)

    async def aclose(self) -> None:
        await self._durable.aclose()
