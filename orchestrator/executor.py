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
- At the deadline every in-flight call is cancelled and the run ends
  `deadline_exceeded`. With nothing in flight, a decision that starts nothing
  ends the run: `budget_exhausted` when holds were refused, else `failed`.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from orchestrator._estimate_book import EstimateBook
from orchestrator.agent import AttemptContext, AttemptOutput, CheckResult
from orchestrator.catalog import Catalog, ModelSpec
from orchestrator.errors import (
    BudgetExhausted,
    BudgetflowError,
    CheckError,
    DeadlineExceeded,
    ProviderError,
    UserError,
)
from orchestrator.estimates import default_max_tokens
from orchestrator.gateway import AttemptGateway, RetryPolicy, _Shared
from orchestrator.ledger import Ledger, Reservation, nano_to_usd
from orchestrator.model_client import ChatMessage, ModelClient
from orchestrator.plan import Allocation, Assignment, InFlight, ModelPrice, PlanState, Policy
from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    CallStatus,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)
from orchestrator.workflow import Ancestry, RunLimits, Workflow

__all__ = ["Executor"]

_PREVIEW = 200


@dataclass(kw_only=True)
class _Batch:
    model: ModelSpec
    max_tokens: int
    started_at: float
    index: int
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    running: int = 0


@dataclass(kw_only=True)
class _SubtaskRun:
    name: str
    status: SubtaskStatus = SubtaskStatus.PENDING
    attempts: int = 0
    batches: int = 0
    batch: _Batch | None = None
    output: Any = None
    text: str = ""
    winner: str | None = None
    started_s: float | None = None
    ended_s: float | None = None
    spent_nano: int = 0


@dataclass(frozen=True, kw_only=True)
class _AttemptEnded:
    subtask: str
    attempt_id: str
    status: AttemptStatus
    output: AttemptOutput | None
    fatal: BaseException | None = None


_DEADLINE = object()
_TICK = object()

DEADLINE_CHECKPOINTS = (0.5, 0.75, 0.9)
"""Fractions of the deadline at which the policy is asked again ("deadline approaching"),
so that a subtask it deferred is reconsidered even when nothing else happens."""


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
    ) -> None:
        self.workflow = workflow
        self.catalog = catalog
        self.client = client
        self.policy = policy
        self.ledger = ledger
        self.recorder = recorder
        self.limits = limits
        self.inputs = dict(inputs)
        self.estimates = estimates
        self.seed = seed
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.retry = retry or RetryPolicy()
        self.record_content = record_content
        self._dag = workflow.dag_view()
        self._defs = workflow.subtasks
        self._children = self._dag.children()
        self._topo = {name: i for i, name in enumerate(self._dag.subtasks)}
        self._ancestry = Ancestry(self._dag.parents)
        self._subs = {name: _SubtaskRun(name=name) for name in self._dag.subtasks}
        # Incremental indexes, so that an event costs O(what changed), not O(subtasks).
        self._ready: set[str] = set()
        self._running: set[str] = set()
        self._completed: set[str] = set()
        self._waiting_on = {name: len(self._dag.parents[name]) for name in self._dag.subtasks}
        self._attempt_counts: dict[str, int] = dict.fromkeys(self._dag.subtasks, 0)
        self._caps: dict[tuple[str, str], int] = {}
        self._ids = itertools.count()
        self._events: asyncio.Queue[_AttemptEnded | object] = asyncio.Queue()
        self._decisions = 0
        self._prices = {
            name: ModelPrice(
                input_usd_per_token=spec.input_nano_per_token() / 1e9,
                output_usd_per_token=spec.output_nano_per_token() / 1e9,
            )
            for name, spec in catalog.models.items()
        }
        self._t0 = 0.0
        self._fatal: BaseException | None = None

    # ---- public -------------------------------------------------------------------------

    async def run(self) -> RunRecord:
        """Execute until completion, budget exhaustion, the deadline, failure or cancellation."""
        loop = asyncio.get_running_loop()
        self._t0 = loop.time()
        deadline_at = None if self.limits.deadline_s is None else self._t0 + self.limits.deadline_s
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
            count_input_tokens=self._count_input_tokens,
        )
        record = RunRecord(
            run_id=self.run_id,
            workflow=self.workflow.name,
            policy=self.policy.name,
            budget_usd=self.limits.budget_usd,
            deadline_s=self.limits.deadline_s,
            seed=self.seed,
            simulated=any(self.catalog.get(m).simulated for s in self._dag.models.values() for m in s),
            started_at=datetime.now(UTC),
            inputs=_jsonable(self.inputs),
        )
        await self.recorder.run_started(record)
        handles: list[asyncio.TimerHandle] = []
        if deadline_at is not None:
            handles.append(loop.call_at(deadline_at, self._events.put_nowait, _DEADLINE))
            for fraction in DEADLINE_CHECKPOINTS:
                at = self._t0 + fraction * (deadline_at - self._t0)
                handles.append(loop.call_at(at, self._events.put_nowait, _TICK))
        outcome: Outcome = Outcome.FAILED
        reason: str | None = "internal error"
        try:
            outcome, reason = await self._loop()
        except asyncio.CancelledError:
            outcome, reason = Outcome.CANCELLED, "the run was cancelled"
            await self._cancel_all()
            raise
        finally:
            for handle in handles:
                handle.cancel()
            await self._cancel_all()
            snap = await self.ledger.snapshot()
            end = loop.time()
            record = RunRecord(
                **{
                    **record.__dict__,
                    "outcome": outcome,
                    "reason": reason,
                    "spent_usd": nano_to_usd(snap.spent_nano),
                    "makespan_s": end - self._t0,
                    "ended_at": datetime.now(UTC),
                }
            )
            if outcome is not Outcome.COMPLETED:
                for sub in self._subs.values():
                    if sub.status in (SubtaskStatus.RUNNING, SubtaskStatus.READY, SubtaskStatus.PENDING):
                        self._set_status(sub, SubtaskStatus.CANCELLED)
                        await self._subtask_changed(sub)
            await asyncio.shield(self.recorder.run_finished(record))
        return record

    # ---- the loop -------------------------------------------------------------------------

    async def _loop(self) -> tuple[Outcome, str | None]:
        for name in self._dag.subtasks:
            if not self._dag.parents[name]:
                self._set_status(self._subs[name], SubtaskStatus.READY)
        while True:
            if len(self._completed) == len(self._subs):
                return Outcome.COMPLETED, None
            ready = sorted(self._ready, key=self._topo.__getitem__)
            if ready:
                refused = await self._decide_and_launch(ready)
                if self._fatal is not None:
                    return Outcome.FAILED, _describe(self._fatal)
                if not self._in_flight():
                    if refused:
                        snap = await self.ledger.snapshot()
                        return Outcome.BUDGET_EXHAUSTED, (
                            f"no attempt of {', '.join(f'`{r}`' for r in ready)} fits in the"
                            f" ${nano_to_usd(snap.available_nano):.6f} left of the budget"
                        )
                    return Outcome.FAILED, (
                        f"policy `{self.policy.name}` started nothing for ready subtasks"
                        f" {', '.join(f'`{r}`' for r in ready)} while nothing was running"
                    )
            event = await self._events.get()
            if event is _DEADLINE:
                await self._cancel_all()
                return Outcome.DEADLINE_EXCEEDED, (
                    f"the deadline of {self.limits.deadline_s:g}s passed with"
                    f" {len(self._subs) - len(self._completed)}"
                    " subtask(s) unfinished"
                )
            if event is _TICK:
                continue
            assert isinstance(event, _AttemptEnded)
            failure = await self._on_attempt_ended(event)
            if failure is not None:
                return Outcome.FAILED, failure

    async def _on_attempt_ended(self, event: _AttemptEnded) -> str | None:
        sub = self._subs[event.subtask]
        batch = sub.batch
        if batch is None or event.attempt_id not in batch.tasks:
            return None  # a sibling that ended after its batch was decided
        batch.tasks.pop(event.attempt_id)
        batch.running -= 1
        if event.fatal is not None:
            await self._cancel_batch(sub)
            return _describe(event.fatal)
        now = self._now()
        if event.status is AttemptStatus.PASSED and event.output is not None:
            sub.output, sub.text, sub.winner = event.output.value, event.output.text, event.attempt_id
            await self._cancel_batch(sub)
            sub.ended_s = now
            self._set_status(sub, SubtaskStatus.COMPLETED)
            await self._subtask_changed(sub)
            for child in self._children[sub.name]:
                self._waiting_on[child] -= 1
                if self._waiting_on[child] == 0:
                    self._set_status(self._subs[child], SubtaskStatus.READY)
            return None
        if batch.running == 0:
            sub.batch = None
            limit = self._defs[sub.name].max_attempts
            if limit is not None and sub.attempts >= limit:
                sub.ended_s = now
                self._set_status(sub, SubtaskStatus.FAILED)
                await self._subtask_changed(sub)
                return f"subtask `{sub.name}` failed all {sub.attempts} attempts (max_attempts={limit})"
            self._set_status(sub, SubtaskStatus.READY)
            await self._subtask_changed(sub)
        return None

    # ---- deciding and launching ----------------------------------------------------------

    async def _decide_and_launch(self, ready: list[str]) -> bool:
        state = await self._plan_state(ready)
        t = time.perf_counter()
        allocation = self.policy.decide(state)
        decide_ms = (time.perf_counter() - t) * 1000
        allocation = self._complete(allocation, ready)
        await self.recorder.decision_made(
            DecisionRecord(
                run_id=self.run_id,
                index=self._decisions,
                at_s=self._now(),
                policy=self.policy.name,
                state=_state_summary(state),
                allocation={
                    s: {"model": a.model, "samples": a.samples, "max_tokens": a.max_tokens}
                    for s, a in allocation.assignments.items()
                },
                info=_jsonable(dict(allocation.info)),
                decide_ms=decide_ms,
            )
        )
        self._decisions += 1
        refused = False
        for name in ready:
            assignment = allocation.assignments.get(name)
            if assignment is None or assignment.samples == 0:
                continue
            refused |= await self._launch(name, assignment)
        return refused

    def _complete(self, allocation: Allocation, ready: list[str]) -> Allocation:
        """Check the policy's answer and fill in max_tokens."""
        out: dict[str, Assignment] = {}
        for name, a in allocation.assignments.items():
            if name not in ready:
                raise UserError(
                    f"policy `{self.policy.name}` assigned subtask `{name}`, which is not ready;"
                    " a policy may only assign `state.ready`"
                )
            if a.model not in self._dag.models[name]:
                raise UserError(
                    f"policy `{self.policy.name}` chose model `{a.model}` for subtask `{name}`,"
                    f" which may only use {list(self._dag.models[name])}"
                )
            cap = a.max_tokens if a.max_tokens is not None else self._default_cap(name, a.model)
            cap = min(cap, self.catalog.get(a.model).context_window)
            out[name] = Assignment(model=a.model, samples=a.samples, max_tokens=cap)
        return Allocation(assignments=out, info=allocation.info)

    async def _launch(self, name: str, assignment: Assignment) -> bool:
        """Start up to `samples` attempts; return whether a hold was refused."""
        sub = self._subs[name]
        spec = self.catalog.get(assignment.model)
        assert assignment.max_tokens is not None
        est = self.estimates.get(name, spec.name)
        hold = est.input_tokens * spec.input_nano_per_token() + assignment.max_tokens * (
            spec.output_nano_per_token()
        )
        batch = _Batch(
            model=spec, max_tokens=assignment.max_tokens, started_at=self._now(), index=sub.batches
        )
        refused = False
        for sample in range(assignment.samples):
            reservation = await self.ledger.reserve(hold)
            if reservation is None:
                refused = True
                break
            attempt_id = f"{self.run_id}.a{next(self._ids)}"
            batch.tasks[attempt_id] = asyncio.create_task(
                self._attempt(sub, batch, attempt_id, sample, reservation),
                name=f"{self.run_id}:{name}:{sample}",
            )
            batch.running += 1
            sub.attempts += 1
            self._attempt_counts[name] = sub.attempts
        if batch.running:
            sub.batch = batch
            self._set_status(sub, SubtaskStatus.RUNNING)
            sub.batches += 1
            if sub.started_s is None:
                sub.started_s = batch.started_at
            await self._subtask_changed(sub)
        return refused

    async def _attempt(
        self, sub: _SubtaskRun, batch: _Batch, attempt_id: str, sample: int, held: Reservation
    ) -> None:
        definition = self._defs[sub.name]
        span_id = f"{self.run_id}.s{next(self._ids)}"
        started = self._now()
        gateway = AttemptGateway(
            self._shared,
            attempt_id=attempt_id,
            subtask=sub.name,
            model=batch.model,
            max_tokens=batch.max_tokens,
            span_id=span_id,
            held=held,
        )
        record = AttemptRecord(
            attempt_id=attempt_id,
            run_id=self.run_id,
            subtask=sub.name,
            model=batch.model.name,
            batch=batch.index,
            sample=sample,
            max_tokens=batch.max_tokens,
            started_s=started,
        )
        await self.recorder.attempt_started(record)
        ctx = AttemptContext(
            run_id=self.run_id,
            subtask=sub.name,
            attempt_id=attempt_id,
            model=batch.model,
            max_tokens=batch.max_tokens,
            inputs=self.inputs,
            outputs=_AncestorView(self._subs, self._ancestry, sub.name, "output"),
            texts=_AncestorView(self._subs, self._ancestry, sub.name, "text"),
            chat=gateway,
            seed=hash((self.seed, sub.name, sub.attempts, sample)) & 0x7FFFFFFF,
            span_id=span_id,
        )
        status, output, verdict, fatal = AttemptStatus.ERROR, None, None, None
        detail: str | None = None
        try:
            output = await definition.agent.attempt(ctx)
            if output.simulated_success is not None:
                verdict = CheckResult(
                    passed=output.simulated_success, detail="simulated outcome (drawn from estimates)"
                )
            elif definition.check is not None:
                try:
                    verdict = await definition.check(output, ctx)
                except (asyncio.CancelledError, BudgetflowError):
                    raise
                except Exception as exc:
                    raise CheckError(f"check of subtask `{sub.name}` crashed: {exc!r}") from exc
            else:
                verdict = CheckResult(passed=True, detail="no check")
            status = AttemptStatus.PASSED if verdict.passed else AttemptStatus.FAILED
            detail = verdict.detail
        except asyncio.CancelledError:
            status, detail = AttemptStatus.CANCELLED, "cancelled"
            raise
        except UserError as exc:
            fatal, detail = exc, str(exc)
        except (ProviderError, BudgetExhausted, DeadlineExceeded, CheckError) as exc:
            detail = f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug in the agent: the attempt errs, the run goes on
            detail = "agent raised " + "".join(traceback.format_exception_only(exc)).strip()
        finally:
            unused = gateway.release_unused()
            if unused is not None:
                await self.ledger.settle(unused, 0)
            ended = self._now()
            span = CallRecord(
                call_id=span_id,
                run_id=self.run_id,
                attempt_id=attempt_id,
                parent_call_id=None,
                kind=CallKind.AGENT,
                subtask=sub.name,
                model=batch.model.name,
                started_s=started,
                latency_s=ended - started,
                status=CallStatus.CANCELLED
                if status is AttemptStatus.CANCELLED
                else CallStatus.ERROR
                if status is AttemptStatus.ERROR
                else CallStatus.OK,
                error=detail if status is AttemptStatus.ERROR else None,
                simulated=batch.model.simulated,
            )
            await asyncio.shield(self.recorder.call_finished(span))
            done = AttemptRecord(
                **{
                    **record.__dict__,
                    "status": status,
                    "ended_s": ended,
                    "check_passed": None if verdict is None else verdict.passed,
                    "check_detail": detail,
                    "check_simulated": output is not None and output.simulated_success is not None,
                    "output_preview": None if output is None else output.text[:_PREVIEW],
                    "spent_usd": nano_to_usd(gateway.spent_nano),
                }
            )
            sub.spent_nano += gateway.spent_nano
            await asyncio.shield(self.recorder.attempt_finished(done))
            if status is not AttemptStatus.CANCELLED:
                self._events.put_nowait(
                    _AttemptEnded(
                        subtask=sub.name, attempt_id=attempt_id, status=status, output=output, fatal=fatal
                    )
                )

    # ---- helpers -----------------------------------------------------------------------------

    async def _cancel_batch(self, sub: _SubtaskRun) -> None:
        batch, sub.batch = sub.batch, None
        if batch is None:
            return
        tasks = list(batch.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _cancel_all(self) -> None:
        for name in sorted(self._running, key=self._topo.__getitem__):
            await self._cancel_batch(self._subs[name])

    def _in_flight(self) -> bool:
        return bool(self._running)

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
        sub.status = status

    def _default_cap(self, subtask: str, model: str) -> int:
        key = (subtask, model)
        cap = self._caps.get(key)
        if cap is None:
            cap = self._defs[subtask].max_tokens or default_max_tokens(self.estimates.get(subtask, model))
            self._caps[key] = cap
        return cap

    def _now(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def _plan_state(self, ready: list[str]) -> PlanState:
        snap = await self.ledger.snapshot()
        now = self._now()
        in_flight = tuple(
            InFlight(
                subtask=s.name,
                model=s.batch.model.name,
                samples=s.batch.running,
                elapsed_s=now - s.batch.started_at,
                max_tokens=s.batch.max_tokens,
            )
            for s in (self._subs[n] for n in sorted(self._running, key=self._topo.__getitem__))
            if s.batch is not None and s.batch.running
        )
        return PlanState(
            dag=self._dag,
            completed=_SetView(self._completed),
            ready=tuple(ready),
            in_flight=in_flight,
            budget_usd=float(self.limits.budget_usd),
            spent_usd=snap.spent_nano / 1e9,
            reserved_usd=snap.reserved_nano / 1e9,
            remaining_time_s=None if self.limits.deadline_s is None else self.limits.deadline_s - now,
            elapsed_s=now,
            estimates=self.estimates.table,
            prices=self._prices,
            attempts=MappingProxyType(self._attempt_counts),
            decision_index=self._decisions,
        )

    async def _subtask_changed(self, sub: _SubtaskRun) -> None:
        await self.recorder.subtask_changed(
            SubtaskRecord(
                run_id=self.run_id,
                subtask=sub.name,
                status=sub.status,
                attempts=sub.attempts,
                winner_attempt_id=sub.winner,
                output_preview=sub.text[:_PREVIEW] if sub.winner else None,
                started_s=sub.started_s,
                ended_s=sub.ended_s,
                spent_usd=nano_to_usd(sub.spent_nano),
            )
        )

    def _count_input_tokens(self, spec: ModelSpec, messages: list[ChatMessage], subtask: str) -> int:
        if spec.simulated:
            return self.estimates.get(subtask, spec.name).input_tokens
        # ~4 characters a token plus per-message overhead, with a 10% margin: a hold, not a bill.
        chars = sum(len(m["content"]) for m in messages)
        return int((chars / 4 + 8 * len(messages)) * 1.1) + 16


class _AncestorView(Mapping[str, Any]):
    """Ancestors' outputs (or texts) by name, read from the run's state without copying."""

    def __init__(self, subs: Mapping[str, _SubtaskRun], ancestry: Ancestry, subtask: str, attr: str) -> None:
        self._subs = subs
        self._ancestry = ancestry
        self._subtask = subtask
        self._attr = attr

    def __getitem__(self, key: str) -> Any:
        if not self._ancestry.is_ancestor(key, of=self._subtask):
            raise KeyError(key)
        return getattr(self._subs[key], self._attr)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._ancestry.is_ancestor(key, of=self._subtask)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._ancestry.of(self._subtask)))

    def __len__(self) -> int:
        return len(self._ancestry.of(self._subtask))


class _SetView(AbstractSet[str]):
    """A read-only view of a set the executor keeps (valid during the `decide` call)."""

    def __init__(self, members: set[str]) -> None:
        self._members = members

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


_SUMMARY_LIMIT = 50
"""Longest list a decision record keeps (a 10,000-way fan-out is summarised, not copied)."""


def _state_summary(state: PlanState) -> dict[str, Any]:
    return {
        "ready": list(state.ready[:_SUMMARY_LIMIT]),
        "ready_count": len(state.ready),
        "completed_count": len(state.completed),
        "in_flight": [
            {"subtask": f.subtask, "model": f.model, "samples": f.samples, "elapsed_s": round(f.elapsed_s, 3)}
            for f in state.in_flight[:_SUMMARY_LIMIT]
        ],
        "in_flight_count": len(state.in_flight),
        "remaining_budget_usd": round(state.remaining_budget_usd, 9),
        "remaining_time_s": None if state.remaining_time_s is None else round(state.remaining_time_s, 3),
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    return repr(value)
