"""The event-driven executor: runs one workflow under a budget and a deadline.

There is no superstep barrier. Every attempt is an asyncio task that, when it
ends, puts an event on one queue; the loop takes events one at a time. When a
batch of samples ends (one passed, or all failed) the ready set changes and
the policy is asked again, so a fast branch never waits for a slow sibling.

Rules (the simulator in `policies.rollout` assumes exactly these):

- Samples of a batch start in order; each first holds its worst-case cost in
  the ledger, and a sample whose hold does not fit is not started.
- The first sample that passes its check completes the subtask; its running
  siblings are cancelled at once and settled for what they consumed.
- If every started sample fails, the subtask is ready again and the policy
  decides anew (up to the subtask's `max_attempts`).
- After every attempt that ends, the run's beliefs about its subtask are updated
  (`orchestrator.belief_updates`, unless the run turned that off): a failed check
  lowers the odds of that model and, less, of the subtask's other models; a pass
  raises them; a truncated output raises the model's output tokens; an error or a
  cancellation changes nothing. The policy plans on the updated beliefs, and each
  decision record keeps what was learned about the subtasks it decided
  (`info.in_run_beliefs`).
- At the deadline every in-flight call is cancelled and the run ends
  `deadline_exceeded`. With nothing in flight, a decision that starts nothing
  ends the run: `budget_exhausted` when holds were refused, else `failed`.

What the loop guarantees whatever happens (a sibling's pass, the deadline, a
cancelled run, a failing database):

- Every attempt ends in exactly one final record: the first pass `passed`, a
  later pass `passed_late`, `failed`, `error` or `cancelled`; its calls are
  recorded and its holds settled before that (`orchestrator._finish`).
- Errors are not luck: a subtask whose batches end in errors only (an agent that
  raises, a provider that keeps failing, a template that cannot render) fails the
  run after `max_errors` of them; an error in the input (`UserError`) or the
  storage (`StorageError`) fails it at once.
- Allocations are bounded and repaired: at most `MAX_SAMPLES_PER_BATCH` samples,
  `max_tokens` never above the subtask's ceiling, no more samples than the budget
  left can hold, and a cheaper model when the chosen one does not fit at all.
- A policy that searches (`offload = True`) decides on a worker thread with a
  time budget, so the loop keeps serving the deadline meanwhile.

This module is the run's state machine (over 600 lines for that reason: every state
transition of a run is in one place). What can stand alone lives beside it: one
attempt in `_attempt`, allocation repair in `_repair`, cancellation-proof finishing
in `_finish`, read-only views in `_run_views`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from orchestrator._attempt import AttemptEnded, AttemptScope, run_attempt
from orchestrator._estimate_book import EstimateBook
from orchestrator._finish import durable_by, finish_anyway
from orchestrator._repair import MAX_SAMPLES_PER_BATCH, AllocationRepair
from orchestrator._run_views import (
    SUMMARY_LIMIT,
    AncestorView,
    SetView,
    jsonable,
    redacted_inputs,
    state_summary,
)
from orchestrator._tally import TallyLedger
from orchestrator.agent import PromptPreview, template_values
from orchestrator.belief_updates import InRunBeliefs, InRunUpdate
from orchestrator.catalog import NO_MODEL, Catalog, ModelSpec
from orchestrator.errors import (
    BudgetflowError,
    DeadlineExceeded,
    ProviderError,
    StorageError,
    UserError,
    WorkflowError,
)
from orchestrator.events import (
    BUDGET_THRESHOLDS,
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
    ThresholdSource,
)
from orchestrator.gateway import RetryPolicy, _Shared
from orchestrator.interceptors import DecisionInfo, Interceptor, RunHooks, RunInfo
from orchestrator.ledger import Ledger, Reservation, nano_to_usd, usd_to_nano
from orchestrator.model_client import ModelClient
from orchestrator.observers import ObserverHub
from orchestrator.plan import Allocation, Assignment, InFlight, ModelPrice, PlanState, Policy
from orchestrator.prompt_rendering import prompt_text
from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)
from orchestrator.resume import ResumePoint
from orchestrator.workflow import Ancestry, RunLimits, Workflow

__all__ = [
    "DECISION_TIME_SHARE",
    "FIRST_DECISION_S",
    "FIRST_DECISION_TIME_SHARE",
    "MAX_DECISION_S",
    "MAX_SAMPLES_PER_BATCH",
    "Executor",
]

_PREVIEW = 200

MAX_DECISION_S = 1.0
"""Longest time budget of one decision of a searching policy."""
DECISION_TIME_SHARE = 0.02
"""A decision may take at most this share of the time left before the deadline."""
FIRST_DECISION_S = 2.0
"""Longest time budget of a run's first decision (a searching policy compiles the run then)."""
FIRST_DECISION_TIME_SHARE = 0.05
"""The first decision may take at most this share of the time left."""
DEADLINE_CHECKPOINTS = (0.5, 0.75, 0.9)
"""Fractions of the deadline at which the policy is asked again ("deadline approaching"),
so that a subtask it deferred is reconsidered even when nothing else happens."""


@dataclass(kw_only=True)
class _Batch:
    model: ModelSpec
    max_tokens: int
    started_at: float
    index: int
    attempts: dict[str, _Attempt] = field(default_factory=dict)
    """Samples still running."""
    errors: int = 0
    """Samples that ended in an error."""
    verdicts: int = 0
    """Samples that ended with a check verdict."""
    last_error: str | None = None


@dataclass(kw_only=True)
class _SubtaskRun:
    name: str
    status: SubtaskStatus = SubtaskStatus.PENDING
    attempts: int = 0
    batches: int = 0
    error_batches: int = 0
    batch: _Batch | None = None
    output: Any = None
    text: str = ""
    winner: str | None = None
    started_s: float | None = None
    ended_s: float | None = None
    spent_nano: int = 0


@dataclass(kw_only=True)
class _Attempt:
    record: AttemptRecord
    sub: _SubtaskRun
    batch: _Batch
    hold: Reservation
    task: asyncio.Task[AttemptEnded] | None = None


class _DeadlineDuringDecision(Exception):
    """The deadline passed while a policy was still deciding."""


_VERDICTS = (AttemptStatus.PASSED, AttemptStatus.FAILED)
"""Endings with a check's verdict: the only ones that change beliefs about success."""

_DEADLINE = object()
_TICK = object()
_CANCEL = object()


class Executor:
    """Runs one workflow once. Build one per run; call `run()` once."""

    def __init__(
        self,
        *,
        workflow: Workflow,
        catalog: Catalog,
        client: ModelClient,
        policy: Policy,
        ledger: Ledger,
        recorder: Recorder,
        limits: RunLimits,
        inputs: Mapping[str, Any],
        estimates: EstimateBook,
        seed: int = 0,
        run_id: str | None = None,
        retry: RetryPolicy | None = None,
        record_content: bool = True,
        cancel: asyncio.Event | None = None,
        observers: Sequence[Observer] = (),
        interceptors: Sequence[Interceptor] = (),
        resume: ResumePoint | None = None,
        in_run: InRunUpdate | None = None,
        beliefs: str | None = None,
    ) -> None:
        self.workflow = workflow
        self._beliefs_label = beliefs
        self.catalog = catalog
        self.client = client
        self.policy = policy
        self._tally = TallyLedger(ledger, usd_to_nano(limits.budget_usd))
        self.ledger: Ledger = self._tally
        self.recorder = recorder
        self.limits = limits
        self.inputs = dict(inputs)
        self._table = dict(estimates.table)
        """The run's beliefs, changed in place as prompts are counted and attempts end."""
        self.estimates = estimates.updated(self._table)
        self.seed = seed
        self._resume = resume
        self.run_id = resume.run.run_id if resume is not None else run_id or uuid.uuid4().hex[:12]
        self.retry = retry or RetryPolicy()
        self.record_content = record_content
        self._cancel = cancel
        self._dag = workflow.dag_view()
        self._defs = workflow.subtasks
        self._children = self._dag.children()
        self._topo = {name: i for i, name in enumerate(self._dag.subtasks)}
        self._ancestry = Ancestry(self._dag.parents)
        self._beliefs = None if in_run is None else InRunBeliefs(in_run, self._dag.models)
        self._subs = {name: _SubtaskRun(name=name) for name in self._dag.subtasks}
        # Incremental indexes, so that an event costs O(what changed), not O(subtasks).
        self._ready: set[str] = set()
        self._running: set[str] = set()
        self._completed: set[str] = set()
        self._newly_ready: list[str] = []
        self._waiting_on = {name: len(self._dag.parents[name]) for name in self._dag.subtasks}
        self._attempt_counts: dict[str, int] = dict.fromkeys(self._dag.subtasks, 0)
        self._ceilings = {n: d.max_tokens for n, d in self._defs.items() if d.max_tokens is not None}
        self._repair = AllocationRepair(
            policy=policy.name,
            dag=self._dag,
            catalog=catalog,
            ceilings=self._ceilings,
            estimates=lambda: self.estimates,
        )
        self._prompt_tokens: dict[tuple[str, str], int] = {}
        self._previews: dict[type, bool] = {}
        """Per agent class, whether it can preview its prompt (a protocol check is slow)."""
        self._attempts: dict[str, _Attempt] = {}
        self._ids = itertools.count()
        self._events: asyncio.Queue[AttemptEnded | object] = asyncio.Queue()
        self._decisions = 0
        self._prices = {
            name: ModelPrice(
                input_usd_per_token=spec.input_nano_per_token() / 1e9,
                output_usd_per_token=spec.output_nano_per_token() / 1e9,
            )
            for name, spec in (*catalog.models.items(), (NO_MODEL, catalog.get(NO_MODEL)))
        }
        self._t0 = 0.0
        self._clock: Callable[[], float] = time.monotonic
        """The running loop's clock, once the run starts."""
        self._deadline_at: float | None = None
        self._fatal: BudgetflowError | None = None
        self._policy_thread: ThreadPoolExecutor | None = None
        self.hub = ObserverHub(observers)
        """Delivers the run's events to its observers."""
        self._seq = itertools.count()
        self._thresholds = list(BUDGET_THRESHOLDS)
        self._shared_thresholds = ledger if isinstance(ledger, ThresholdSource) else None
        self.hooks = RunHooks(interceptors)
        """The interceptors' hooks around the run's work (`orchestrator.interceptors`)."""
        if resume is not None:
            self._resume_from(resume)

    def _resume_from(self, point: ResumePoint) -> None:
        """Take up a recorded run: its completed subtasks, counts, ids and spend."""
        self._ids = itertools.count(point.next_id)
        self._decisions = point.next_decision
        self._tally.spent_nano = point.spent_nano
        for name, sub in self._subs.items():
            sub.attempts = point.attempts.get(name, 0)
            sub.batches = point.batches.get(name, 0)
            self._attempt_counts[name] = sub.attempts
            done = point.completed.get(name)
            if done is None:
                continue
            sub.output = done.output
            sub.text = done.output if isinstance(done.output, str) else str(done.output)
            sub.winner = done.winner_attempt_id
            sub.started_s, sub.ended_s = done.started_s, done.ended_s
            sub.spent_nano = usd_to_nano(done.spent_usd)

    # ---- public -------------------------------------------------------------------------

    async def run(self) -> RunRecord:
        """Execute until completion, budget exhaustion, the deadline, failure or cancellation.

        A storage failure (the recorder could not write, in time or at all) ends the run
        `failed` with the storage error as its reason; the records it could not write stay
        with the recorder (see `storage.SqlRecorder`'s spill file).

        Raises:
            asyncio.CancelledError: the task running it was cancelled (the run is recorded
                `cancelled`, every hold settled, before this propagates).
        """
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        # A resumed run's clock goes on from where it was: the deadline stays absolute.
        self._t0 = loop.time() - (self._resume.elapsed_s if self._resume is not None else 0.0)
        deadline_at = None if self.limits.deadline_s is None else self._t0 + self.limits.deadline_s
        self._deadline_at = deadline_at
        self._shared = _Shared(
            run_id=self.run_id,
            catalog=self.catalog,
            client=self.client,
            ledger=self.ledger,
            recorder=self.recorder,
            retry=self.retry,
            deadline_at=deadline_at,
            started_at=self._t0,
            record_content=self.record_content,
            rng=random.Random(self.seed),
            emit=self._emit,
            hooks=self.hooks,
        )
        self._scope = AttemptScope(
            shared=self._shared,
            subtasks=self._defs,
            inputs=self.inputs,
            ancestry=self._ancestry,
            output_of=self._output_of,
            text_of=self._text_of,
            seed=self.seed,
            now=self._now,
            span_ids=self._ids,
        )
        record = RunRecord(
            run_id=self.run_id,
            workflow=self.workflow.name,
            policy=self.policy.name,
            budget_usd=self.limits.budget_usd,
            deadline_s=self.limits.deadline_s,
            seed=self.seed,
            simulated=any(self.catalog.get(m).simulated for s in self._dag.models.values() for m in s),
            started_at=self._resume.run.started_at if self._resume is not None else datetime.now(UTC),
            inputs=jsonable(self.inputs) if self.record_content else redacted_inputs(self.inputs),
            beliefs=self._beliefs_label,
        )
        around = self.hooks.run.enter(RunInfo(run=record, dag=self._dag)) if self.hooks.run else None
        try:
            await self.recorder.run_started(record)
        except BaseException as exc:
            if around is not None:
                around.finish(None, error=exc)
            raise
        self._emit(RunStarted, run=record, dag=self._dag)
        handles: list[asyncio.TimerHandle] = []
        if deadline_at is not None:
            handles.append(loop.call_at(deadline_at, self._events.put_nowait, _DEADLINE))
            for fraction in DEADLINE_CHECKPOINTS:
                at = self._t0 + fraction * (deadline_at - self._t0)
                handles.append(loop.call_at(at, self._events.put_nowait, _TICK))
        watcher = None if self._cancel is None else asyncio.create_task(self._watch_cancel(self._cancel))
        outcome: Outcome = Outcome.FAILED
        reason: str | None = "internal error"
        cancelled = False
        bug: BaseException | None = None
        try:
            outcome, reason = await self._loop()
        except asyncio.CancelledError:
            outcome, reason, cancelled = Outcome.CANCELLED, "the run was cancelled", True
        except BudgetflowError as exc:
            outcome, reason = Outcome.FAILED, _describe(exc)
        except Exception as exc:  # a bug: end the run properly, then let it be seen
            outcome, reason, bug = Outcome.FAILED, f"internal error: {_describe(exc)}", exc
        final = record
        try:
            final = await finish_anyway(self._finish(record, outcome, reason, handles, watcher))
        except asyncio.CancelledError:
            cancelled = True
        finally:
            if around is not None:
                around.finish(final)
        if cancelled:
            raise asyncio.CancelledError()
        if bug is not None:
            raise bug
        return final

    @property
    def outputs(self) -> Mapping[str, Any]:
        """Outputs of the completed subtasks."""
        return {name: sub.output for name, sub in self._subs.items() if sub.winner is not None}

    # ---- the loop -------------------------------------------------------------------------

    async def _loop(self) -> tuple[Outcome, str | None]:
        for name, sub in self._subs.items():
            if sub.winner is not None:  # completed before a resume
                self._set_status(sub, SubtaskStatus.COMPLETED)
                for child in self._children[name]:
                    self._waiting_on[child] -= 1
        for name, sub in self._subs.items():
            if self._waiting_on[name] == 0 and sub.status is SubtaskStatus.PENDING:
                self._set_status(sub, SubtaskStatus.READY)
        while True:
            if self._fatal is not None:
                return Outcome.FAILED, _describe(self._fatal)
            if len(self._completed) == len(self._subs):
                return Outcome.COMPLETED, None
            if self._newly_ready:
                await self._measure_prompts()
                if self._fatal is not None:
                    continue
            ready = sorted(self._ready, key=self._topo.__getitem__)
            if ready:
                try:
                    refused = await self._decide_and_launch(ready)
                except _DeadlineDuringDecision:
                    return self._deadline_outcome()
                if self._fatal is not None:
                    continue
                if not self._in_flight():
                    if refused is not None:
                        return Outcome.BUDGET_EXHAUSTED, refused
                    return Outcome.FAILED, (
                        f"policy `{self.policy.name}` started nothing for ready subtasks"
                        f" {', '.join(f'`{r}`' for r in ready)} while nothing was running"
                    )
            event = await self._events.get()
            if event is _DEADLINE:
                return self._deadline_outcome()
            if event is _CANCEL:
                return Outcome.CANCELLED, "the run was cancelled before it finished"
            if event is _TICK:
                continue
            assert isinstance(event, AttemptEnded)
            failure = await self._on_attempt_ended(event)
            if failure is not None:
                return Outcome.FAILED, failure

    def _deadline_outcome(self) -> tuple[Outcome, str]:
        return Outcome.DEADLINE_EXCEEDED, (
            f"the deadline of {self.limits.deadline_s:g}s passed with"
            f" {len(self._subs) - len(self._completed)} subtask(s) unfinished"
        )

    async def _on_attempt_ended(self, event: AttemptEnded) -> str | None:
        att = self._attempts.get(event.attempt_id)
        if att is None:
            return None  # already finalised by the canceller of its batch
        sub, batch = att.sub, att.batch
        current = sub.batch is batch
        if event.fatal is not None:
            await self._finalise(att, event)
            await self._cancel_batch(sub)
            return _describe(event.fatal)
        if event.status is AttemptStatus.PASSED and current and event.output is not None:
            batch.attempts.pop(att.record.attempt_id, None)
            await self._finalise(att, event)
            sub.output, sub.text, sub.winner = event.output.value, event.output.text, att.record.attempt_id
            await self._cancel_batch(sub)
            sub.ended_s = self._now()
            self._set_status(sub, SubtaskStatus.COMPLETED)
            await self._subtask_changed(sub)
            for child in self._children[sub.name]:
                self._waiting_on[child] -= 1
                if self._waiting_on[child] == 0:
                    self._set_status(self._subs[child], SubtaskStatus.READY)
            return None
        await self._finalise(att, event)
        if not current:
            return None  # a sibling that ended after its batch was decided
        batch.attempts.pop(att.record.attempt_id, None)
        if event.status is AttemptStatus.ERROR:
            batch.errors += 1
            batch.last_error = event.detail
        else:
            batch.verdicts += 1
        if batch.attempts:
            return None
        sub.batch = None
        definition = self._defs[sub.name]
        if batch.verdicts == 0 and batch.errors > 0:
            sub.error_batches += 1
            if sub.error_batches >= definition.max_errors:
                return await self._fail(
                    sub,
                    f"subtask `{sub.name}` failed: {sub.error_batches} batch(es) of its attempts ended"
                    f" in errors without a verdict (max_errors={definition.max_errors}); last error:"
                    f" {batch.last_error}",
                )
        limit = definition.max_attempts
        if limit is not None and sub.attempts >= limit:
            return await self._fail(
                sub, f"subtask `{sub.name}` failed all {sub.attempts} attempts (max_attempts={limit})"
            )
        self._set_status(sub, SubtaskStatus.READY)
        await self._subtask_changed(sub)
        return None

    async def _fail(self, sub: _SubtaskRun, reason: str) -> str:
        sub.ended_s = self._now()
        self._set_status(sub, SubtaskStatus.FAILED)
        await self._subtask_changed(sub)
        return reason

    # ---- deciding and launching ----------------------------------------------------------

    async def _decide_and_launch(self, ready: list[str]) -> str | None:
        """Ask the policy, repair its answer, launch; return why holds were refused, if they were."""
        hook = self.hooks.decision
        around = (
            hook.enter(
                DecisionInfo(
                    run_id=self.run_id, index=self._decisions, policy=self.policy.name, ready=tuple(ready)
                )
            )
            if hook
            else None
        )
        try:
            allocation, refusals, decision = await self._decision(ready)
        except BaseException as exc:
            if around is not None:
                around.finish(None, error=_as_deadline(exc))
            raise
        if around is not None:
            # Left before launching: the attempts' work is not part of the decision.
            around.finish(decision)
        refused = list(refusals)
        for name in ready:
            assignment = allocation.assignments.get(name)
            if assignment is None or assignment.samples == 0:
                continue
            if await self._launch(name, assignment):
                refused.append(self._repair.refusal(name, assignment.max_tokens or 1))
        if not refused:
            return None
        snap = await self.ledger.snapshot()
        return (
            f"nothing more fits in the ${nano_to_usd(snap.available_nano):.6f} left of the budget:"
            f" {'; '.join(refused)}; raise the budget, shorten the prompt or lower max_tokens"
        )

    async def _decision(self, ready: list[str]) -> tuple[Allocation, list[str], DecisionRecord]:
        """Ask the policy, repair its answer and record the decision."""
        offloaded = self._offloaded()
        state = await self._plan_state(ready, snapshot=offloaded)
        t = time.perf_counter()
        asked = await self._decide(state, offloaded=offloaded)
        decide_ms = (time.perf_counter() - t) * 1000
        allocation, repairs = self._repair.checked(asked, ready)
        available = (await self.ledger.snapshot()).available_nano
        allocation, refusals = self._repair.fit(allocation, ready, repairs, available)
        info = dict(allocation.info)
        if repairs:
            info["repaired"] = repairs
        if self._beliefs is not None and (learned := self._beliefs.evidence(ready, SUMMARY_LIMIT)):
            info["in_run_beliefs"] = learned
        decision = DecisionRecord(
            run_id=self.run_id,
            index=self._decisions,
            at_s=self._now(),
            policy=self.policy.name,
            state=state_summary(state),
            allocation={
                s: {"model": a.model, "samples": a.samples, "max_tokens": a.max_tokens}
                for s, a in allocation.assignments.items()
            },
            info=jsonable(info),
            decide_ms=decide_ms,
        )
        await self.recorder.decision_made(decision)
        self._emit(DecisionMade, decision=decision)
        self._decisions += 1
        return allocation, refusals, decision

    def _offloaded(self) -> bool:
        """Whether the policy decides on a worker thread (a search, on a real clock)."""
        loop = asyncio.get_running_loop()
        return bool(getattr(self.policy, "offload", False)) and not getattr(loop, "virtual_time", False)

    async def _decide(self, state: PlanState, *, offloaded: bool) -> Allocation:
        loop = asyncio.get_running_loop()
        if not offloaded:
            return self.policy.decide(state)
        if self._policy_thread is None:
            self._policy_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budgetflow-policy")
        future = loop.run_in_executor(self._policy_thread, self.policy.decide, state)
        if self._deadline_at is None:
            return await future
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, self._deadline_at - loop.time()))
        except TimeoutError:
            # The decision finishes on its thread, unread; its outcome is retrieved so that
            # nothing is logged about it.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise _DeadlineDuringDecision from None

    async def _launch(self, name: str, assignment: Assignment) -> bool:
        """Start up to `samples` attempts; return whether a hold was refused before any started."""
        sub = self._subs[name]
        spec = self.catalog.get(assignment.model)
        assert assignment.max_tokens is not None
        hold = self._repair.hold(name, spec.name, assignment.max_tokens)
        batch = _Batch(
            model=spec, max_tokens=assignment.max_tokens, started_at=self._now(), index=sub.batches
        )
        for sample in range(assignment.samples):
            reservation = await self.ledger.reserve(hold)
            if reservation is None:
                break
            attempt_id = f"{self.run_id}.a{next(self._ids)}"
            att = _Attempt(
                record=AttemptRecord(
                    attempt_id=attempt_id,
                    run_id=self.run_id,
                    subtask=name,
                    model=spec.name,
                    batch=batch.index,
                    sample=sample,
                    max_tokens=batch.max_tokens,
                    started_s=self._now(),
                ),
                sub=sub,
                batch=batch,
                hold=reservation,
            )
            self._attempts[attempt_id] = att
            batch.attempts[attempt_id] = att
            sub.attempts += 1
            self._attempt_counts[name] = sub.attempts
            att.task = asyncio.create_task(self._attempt(att), name=f"{self.run_id}:{name}:{sample}")
        if not batch.attempts:
            return True
        sub.batch = batch
        self._set_status(sub, SubtaskStatus.RUNNING)
        sub.batches += 1
        if sub.started_s is None:
            sub.started_s = batch.started_at
        await self._subtask_changed(sub)
        return False

    # ---- one attempt -------------------------------------------------------------------------

    async def _attempt(self, att: _Attempt) -> AttemptEnded:
        """Run one attempt; post its ending unless it was cancelled (then its canceller takes it)."""
        await self.recorder.attempt_started(att.record)
        self._emit(AttemptStarted, attempt=att.record)
        ended, cancelled = await run_attempt(
            self._scope, att.record, model=att.batch.model, max_tokens=att.batch.max_tokens, hold=att.hold
        )
        if not cancelled:
            self._events.put_nowait(ended)
        return ended

    async def _finalise(self, att: _Attempt, event: AttemptEnded, *, passed_late: bool = False) -> None:
        """Write the attempt's one final record (the loop decides `passed` vs `passed_late`)."""
        self._attempts.pop(att.record.attempt_id, None)
        status = event.status
        late = passed_late or att.sub.winner is not None or att.sub.batch is not att.batch
        if status is AttemptStatus.PASSED and late:
            status = AttemptStatus.PASSED_LATE
        att.sub.spent_nano += event.spent_nano
        if event.fatal is not None and self._fatal is None:
            self._fatal = event.fatal
        verdict = event.verdict
        if self._beliefs is not None:
            passed = verdict.passed if verdict is not None and event.status in _VERDICTS else None
            model, cut = att.batch.model.name, event.truncated_at
            learned = self._beliefs.observe(self._table, att.sub.name, model, passed=passed, truncated_at=cut)
            self._table.update(learned)
        final = replace(
            att.record,
            status=status,
            ended_s=event.ended_s,
            check_passed=None if verdict is None else verdict.passed,
            check_detail=event.detail,
            check_simulated=event.output is not None and event.output.simulated_success is not None,
            output_preview=None if event.output is None else event.output.text[:_PREVIEW],
            spent_usd=nano_to_usd(event.spent_nano),
        )
        await self.recorder.attempt_finished(final)
        self._emit(AttemptFinished, attempt=final)

    # ---- ending ------------------------------------------------------------------------------

    async def _cancel_batch(self, sub: _SubtaskRun) -> None:
        batch, sub.batch = sub.batch, None
        if batch is None:
            return
        await self._cancel_attempts(list(batch.attempts.values()))
        batch.attempts.clear()

    async def _cancel_attempts(self, attempts: list[_Attempt]) -> None:
        """Cancel attempts, wait for each to record and settle, and write its final record."""
        for att in attempts:
            if att.task is not None:
                att.task.cancel()
        tasks = [att.task for att in attempts if att.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        for att in attempts:
            if att.record.attempt_id not in self._attempts:
                continue  # finalised from its own event meanwhile
            if att.task is not None and not att.task.cancelled():
                # It ran (an attempt swallows its cancellation once it has recorded and settled).
                await self._finalise(att, att.task.result(), passed_late=True)
                continue
            # Cancelled before it ran: nothing was called, give its hold back.
            await self.ledger.settle(att.hold, 0)
            await self.recorder.attempt_started(att.record)
            self._emit(AttemptStarted, attempt=att.record)
            ending = AttemptEnded(
                attempt_id=att.record.attempt_id,
                status=AttemptStatus.CANCELLED,
                detail="cancelled before it started",
                ended_s=self._now(),
            )
            await self._finalise(att, ending)

    async def _finish(
        self,
        record: RunRecord,
        outcome: Outcome,
        reason: str | None,
        handles: list[asyncio.TimerHandle],
        watcher: asyncio.Task[None] | None,
    ) -> RunRecord:
        """Stop everything, settle and record every attempt, and write the run's final record."""
        for handle in handles:
            handle.cancel()
        if watcher is not None:
            watcher.cancel()
        storage_failure: StorageError | None = None
        try:
            for sub in self._subs.values():
                sub.batch = None
            await self._cancel_attempts(list(self._attempts.values()))
            if outcome is not Outcome.COMPLETED:
                for sub in self._subs.values():
                    if sub.status in (SubtaskStatus.RUNNING, SubtaskStatus.READY, SubtaskStatus.PENDING):
                        self._set_status(sub, SubtaskStatus.CANCELLED)
                        await self._subtask_changed(sub)
        except StorageError as exc:
            storage_failure = exc
        failure = self._shared.storage_failure
        if failure is not None and outcome is not Outcome.FAILED:
            outcome, reason = Outcome.FAILED, _describe(failure)
        try:
            snap = await self.ledger.snapshot()
            spent, overrun = snap.spent_nano, snap.overrun_nano
        except StorageError as exc:
            # The ledger itself is gone (e.g. Redis lost it): report what this run's own
            # settlements charged, and why the run stopped.
            spent, overrun = sum(sub.spent_nano for sub in self._subs.values()), 0
            if outcome is not Outcome.FAILED or reason is None:
                outcome, reason = Outcome.FAILED, _describe(exc)
        if overrun > 0:
            note = (
                f"providers billed ${nano_to_usd(overrun)} above the reservations,"
                " beyond the budget (overrun)"
            )
            reason = note if reason is None else f"{reason}; {note}"
        final = replace(
            record,
            outcome=outcome,
            reason=reason,
            spent_usd=nano_to_usd(spent),
            overrun_usd=nano_to_usd(overrun),
            makespan_s=self._now(),
            ended_at=datetime.now(UTC),
        )
        if self._policy_thread is not None:
            self._policy_thread.shutdown(wait=False)
        try:
            await durable_by(
                self.recorder.run_finished(final),
                self._deadline_at,
                what=f"the end of run `{self.run_id}`",
                # The database already failed this run: do not wait for it again.
                min_wait_s=0.0 if self._shared.storage_failure or storage_failure else 0.5,
            )
        except StorageError as exc:
            storage_failure = storage_failure or exc
        if storage_failure is not None:
            # The run's end could not be recorded: say so in the result the caller gets.
            final = replace(
                final,
                outcome=Outcome.FAILED,
                reason=f"{final.reason + '; ' if final.reason else ''}{_describe(storage_failure)}",
            )
        self._emit(RunFinished, run=final)
        return final

    async def _watch_cancel(self, cancel: asyncio.Event) -> None:
        await cancel.wait()
        self._events.put_nowait(_CANCEL)

    # ---- helpers -----------------------------------------------------------------------------

    def _in_flight(self) -> bool:
        return bool(self._running)

    def _output_of(self, name: str) -> Any:
        return self._subs[name].output

    def _text_of(self, name: str) -> str:
        return self._subs[name].text

    def _set_status(self, sub: _SubtaskRun, status: SubtaskStatus) -> None:
        for index, member in (
            (self._ready, SubtaskStatus.READY),
            (self._running, SubtaskStatus.RUNNING),
            (self._completed, SubtaskStatus.COMPLETED),
        ):
            if status is member:
                index.add(sub.name)
            else:
                index.discard(sub.name)
        if status is SubtaskStatus.READY and sub.status is SubtaskStatus.PENDING:
            self._newly_ready.append(sub.name)
        sub.status = status

    def _now(self) -> float:
        return self._clock() - self._t0

    async def _measure_prompts(self) -> None:
        """Count the prompts of subtasks that just became ready, for every model they may use.

        Holds and the planner's beliefs then use the real prompt size instead of a prior, and
        the estimator is asked again with the count among the request's features.
        """
        names, self._newly_ready = self._newly_ready, []
        table = self._table
        for name in names:
            agent = self._defs[name].agent
            if not self._previews.setdefault(type(agent), isinstance(agent, PromptPreview)):
                continue
            assert isinstance(agent, PromptPreview)
            texts = AncestorView(self._text_of, self._ancestry, name)
            try:
                messages = agent.preview_messages(template_values(texts, self.inputs), subtask=name)
            except UserError as exc:
                self._fatal = exc
                return
            except Exception as exc:  # the prompt cannot be made: every attempt would fail the same way
                self._fatal = WorkflowError(
                    f"subtask `{name}`: its prompt cannot be rendered: {_describe(exc)}"
                )
                return
            text = prompt_text(messages)
            for model in self._dag.models[name]:
                try:
                    count = await self.client.count_prompt_tokens(self.catalog.get(model), messages)
                except ProviderError:
                    continue  # counted again, or bounded, by the call itself
                self._prompt_tokens[(name, model)] = count.tokens
                table[(name, model)] = self.estimates.with_prompt_tokens(
                    name, model, count.tokens, prompt_text=text
                )

    async def _plan_state(self, ready: list[str], *, snapshot: bool = False) -> PlanState:
        """What the policy sees; with `snapshot`, copies (the policy reads them on another thread,
        and past a deadline the run may end while it still does)."""
        snap = await self.ledger.snapshot()
        now = self._now()
        in_flight = tuple(
            InFlight(
                subtask=s.name,
                model=s.batch.model.name,
                samples=len(s.batch.attempts),
                elapsed_s=now - s.batch.started_at,
                max_tokens=s.batch.max_tokens,
            )
            for s in (self._subs[n] for n in sorted(self._running, key=self._topo.__getitem__))
            if s.batch is not None and s.batch.attempts
        )
        remaining = None if self.limits.deadline_s is None else self.limits.deadline_s - now
        return PlanState(
            dag=self._dag,
            completed=frozenset(self._completed) if snapshot else SetView(self._completed),
            ready=tuple(ready),
            in_flight=in_flight,
            budget_usd=float(self.limits.budget_usd),
            spent_usd=snap.spent_nano / 1e9,
            reserved_usd=snap.reserved_nano / 1e9,
            remaining_time_s=remaining,
            elapsed_s=now,
            estimates=dict(self._table) if snapshot else MappingProxyType(self._table),
            prices=self._prices,
            attempts=dict(self._attempt_counts) if snapshot else MappingProxyType(self._attempt_counts),
            decision_index=self._decisions,
            max_tokens_ceiling=self._ceilings,
            time_budget_s=_decision_budget(remaining, first=self._decisions == 0),
        )

    async def _subtask_changed(self, sub: _SubtaskRun) -> None:
        record = SubtaskRecord(
            run_id=self.run_id,
            subtask=sub.name,
            status=sub.status,
            attempts=sub.attempts,
            winner_attempt_id=sub.winner,
            output_preview=sub.text[:_PREVIEW] if sub.winner else None,
            output=jsonable(sub.output) if sub.winner else None,
            started_s=sub.started_s,
            ended_s=sub.ended_s,
            spent_usd=nano_to_usd(sub.spent_nano),
        )
        await self.recorder.subtask_changed(record)
        self._emit(SubtaskChanged, subtask=record, output=sub.output if sub.winner else None)

    def _emit(self, kind: type[Event], **fields: Any) -> None:
        """The one way the run tells its observers what happened (nothing is built that none want)."""
        hub = self.hub
        if self._shared_thresholds is not None:
            # Shared budgets' crossings the ledger saw, before the event that follows them.
            for threshold, budget in self._shared_thresholds.take_crossings():
                if hub and hub.wants(BudgetThresholdCrossed):
                    hub.publish(
                        BudgetThresholdCrossed(
                            run_id=self.run_id,
                            seq=next(self._seq),
                            at_s=self._now(),
                            ledger=self._tally.view(),
                            threshold=threshold,
                            budget=budget,
                        )
                    )
        if not hub:
            return
        if hub.wants(kind):
            hub.publish(
                kind(
                    run_id=self.run_id,
                    seq=next(self._seq),
                    at_s=self._now(),
                    ledger=self._tally.view(),
                    **fields,
                )
            )
        if kind is CallFinished and self._thresholds:
            spent = self._tally.spent_nano
            while self._thresholds and spent >= self._thresholds[0] * self._tally.budget_nano:
                threshold = self._thresholds.pop(0)
                if hub.wants(BudgetThresholdCrossed):
                    hub.publish(
                        BudgetThresholdCrossed(
                            run_id=self.run_id,
                            seq=next(self._seq),
                            at_s=self._now(),
                            ledger=self._tally.view(),
                            threshold=threshold,
                        )
                    )


def _decision_budget(remaining_s: float | None, *, first: bool) -> float:
    """A decision's time budget: a share of the time left, capped; the first gets more (a
    searching policy compiles its model of the run then)."""
    share, cap = (
        (FIRST_DECISION_TIME_SHARE, FIRST_DECISION_S) if first else (DECISION_TIME_SHARE, MAX_DECISION_S)
    )
    return cap if remaining_s is None else max(0.0, min(cap, share * remaining_s))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _as_deadline(exc: BaseException) -> BaseException:
    """What a decision's hooks are told when it ended in `exc` (the deadline in our own words)."""
    if isinstance(exc, _DeadlineDuringDecision):
        return DeadlineExceeded("the deadline passed while the policy was deciding")
    return exc
