"""Hooks around a run's work, for instrumentation that must run *inside* it.

Observers (`orchestrator.events`) watch a run from outside, after the fact and off
its critical path. Some instrumentation cannot: an OpenTelemetry span for a model
call must be the current span *while* the provider is called, so that litellm's or
the HTTP client's own instrumentation nests under it. An `Interceptor` is for that.
Each of its hooks is a context manager that the executor enters and leaves around
one piece of work, in the task doing that work:

| hook       | around                                                    | entered in               |
|------------|-----------------------------------------------------------|--------------------------|
| `run`      | the whole run, from its first record to its last          | the task running it      |
| `decision` | one policy decision: its state, the policy, the record    | the run's loop           |
| `attempt`  | one attempt: its agent, its check, the record of its span | the attempt's task       |
| `call`     | one try of one model call: the provider call              | the task calling `chat`  |

Every hook has the same shape, taken from Temporal's interceptors (one input object
per hook, a base class that passes through): it gets one info object describing the
work as it starts (`RunInfo`, `DecisionInfo`, `AttemptInfo`, `CallInfo`), and the
executor sets the info's `finished` field to the work's finished record just before
the block ends, so the code after the hook's `yield` can read it:

```python
class Timing(Interceptor):
    @contextlib.contextmanager
    def call(self, info: CallInfo) -> Iterator[None]:
        started = time.perf_counter()
        yield  # the provider is called here, in this task and context
        if info.finished is not None:
            print(info.finished.model, info.finished.cost_usd, time.perf_counter() - started)
```

The block ends normally whenever the work produced its record, also when the work
failed: how it went is in the record (a call's `status` and `error`, a run's
`outcome`). It ends with an exception only when the work raised without a record (a
decision cut short by the deadline, a database that refused the run's first record).

Hooks run on the run's critical path, unlike observers: they must be quick and must
not block (no I/O; hand slow work to a queue or a thread, as OpenTelemetry's batch
span processor does). They can never break the run's guarantees: a hook that raises,
when entered or when left, is logged (once per interceptor and hook in a run) and
counted (`InterceptorStats`), and the run goes on as if that interceptor were absent
for that piece of work. Hooks are synchronous on purpose: entering and leaving them
adds no await, so no new point where a cancellation could land between a call and
its recording. An interceptor that overrides no hook costs nothing; with none given,
the executor builds no info object at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Generic, Literal, TypeVar

from orchestrator.catalog import ModelSpec
from orchestrator.errors import ConfigError
from orchestrator.model_client import ChatRequest, ChatResponse
from orchestrator.plan import DagView
from orchestrator.records import AttemptRecord, AttemptStatus, CallRecord, DecisionRecord, RunRecord

__all__ = [
    "AttemptInfo",
    "CallInfo",
    "DecisionInfo",
    "Interceptor",
    "InterceptorStats",
    "RunHooks",
    "RunInfo",
]

_log = logging.getLogger(__name__)

R = TypeVar("R")
I = TypeVar("I", bound="_Info[Any]")  # noqa: E741 - the info type of a hook

HookName = Literal["run", "decision", "attempt", "call"]


@dataclass(kw_only=True, slots=True)
class _Info(Generic[R]):
    finished: R | None = None
    """The work's finished record, set by the executor just before the hook's block ends
    (`None` while the work runs, and when it raised without producing one)."""


@dataclass(kw_only=True, slots=True)
class RunInfo(_Info[RunRecord]):
    """A run, for the `run` hook; `finished` is its final record (outcome, spend, makespan)."""

    run: RunRecord
    """The run as it started (outcome `running`)."""
    dag: DagView
    """The workflow's shape."""


@dataclass(kw_only=True, slots=True)
class DecisionInfo(_Info[DecisionRecord]):
    """One policy decision, for the `decision` hook; `finished` is its record (the allocation)."""

    run_id: str
    """The run."""
    index: int
    """0, 1, 2, ... within the run."""
    policy: str
    """The policy's name."""
    ready: tuple[str, ...]
    """The subtasks it decides for, in the workflow's order."""


@dataclass(kw_only=True, slots=True)
class AttemptInfo(_Info[CallRecord]):
    """One attempt, for the `attempt` hook; `finished` is its agent span as recorded.

    The agent span (`CallKind.AGENT`, `call_id == span_id`) is the parent of the
    attempt's model calls in the calling tree; its `status` is `ok`, `error` or
    `cancelled` and its `latency_s` the attempt's duration.
    """

    attempt: AttemptRecord
    """The attempt as it started (subtask, model, batch, sample, max_tokens)."""
    model: ModelSpec
    """The model the policy chose for it."""
    span_id: str
    """The call id of its agent span (the parent of its calls)."""
    status: AttemptStatus | None = None
    """How it ended as it saw it: `passed`, `failed`, `error` or `cancelled` (set when it ends).

    A `passed` attempt may still be recorded `passed_late` when a sibling passed first:
    the executor's `AttemptFinished` event has the final word."""
    detail: str | None = None
    """The check's verdict, or the error (set when it ends)."""
    error: BaseException | None = None
    """The exception that made it an error, if one did (set when it ends)."""
    spent_usd: Decimal = Decimal(0)
    """What its calls were charged (set when it ends)."""


@dataclass(kw_only=True, slots=True)
class CallInfo(_Info[CallRecord]):
    """One try of one model call, for the `call` hook; `finished` is the call's record.

    The block is exactly the provider call: the prompt is counted and its worst case
    reserved before, and the record is made durable and the ledger settled after.
    """

    run_id: str
    """The run."""
    attempt_id: str
    """The attempt making the call."""
    subtask: str
    """Its subtask."""
    call_id: str
    """The call's id in the calling tree (its record's `call_id`)."""
    parent_call_id: str
    """Its parent in the calling tree: the attempt's agent span, or an inner span."""
    retry: int
    """0 for the first try, then 1, 2, ..."""
    request: ChatRequest
    """What is sent: the model, the messages, the output cap, the timeout."""
    response: ChatResponse | None = None
    """The provider's reply, when one came (set when it ends)."""
    error: BaseException | None = None
    """The exception the call ended with, if any (set when it ends; also in the record's
    `status` and `error`)."""


@dataclass(frozen=True, kw_only=True)
class InterceptorStats:
    """How one interceptor fared in a run."""

    interceptor: str
    """Its class name."""
    errors: int
    """Times one of its hooks raised (entering or leaving); each was logged and ignored."""


class Interceptor:
    """Hooks around a run's work; each passes through unless overridden.

    Override a hook with a generator context manager (`@contextlib.contextmanager`)
    that yields once; read `info.finished` after the `yield`. See the module's
    docstring for when each hook runs and what it may do.
    """

    def run(self, info: RunInfo) -> AbstractContextManager[None]:
        """Around a whole run."""
        return contextlib.nullcontext()

    def decision(self, info: DecisionInfo) -> AbstractContextManager[None]:
        """Around one policy decision (the attempts it starts are not inside it)."""
        return contextlib.nullcontext()

    def attempt(self, info: AttemptInfo) -> AbstractContextManager[None]:
        """Around one attempt: its agent's work, its check and the recording of its span."""
        return contextlib.nullcontext()

    def call(self, info: CallInfo) -> AbstractContextManager[None]:
        """Around one try of one model call: exactly the provider call."""
        return contextlib.nullcontext()


class _Errors:
    """Hook failures of one run, per interceptor; each (interceptor, hook) logged once."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self._logged: set[tuple[int, str]] = set()

    def note(self, interceptor: Interceptor, hook: HookName, when: str) -> None:
        key = id(interceptor)
        self.counts[key] = self.counts.get(key, 0) + 1
        if (key, hook) not in self._logged:
            self._logged.add((key, hook))
            _log.warning(
                "interceptor %s raised %s its `%s` hook; ignored (the run goes on without it there)",
                type(interceptor).__name__,
                when,
                hook,
                exc_info=True,
            )


class _Entered(Generic[I]):
    """The hooks entered around one piece of work; `finish` leaves them, innermost first."""

    __slots__ = ("_errors", "_hook", "_managers", "info")

    def __init__(
        self,
        info: I,
        hook: HookName,
        managers: list[tuple[Interceptor, AbstractContextManager[None]]],
        errors: _Errors,
    ) -> None:
        self.info = info
        """The info object the hooks received."""
        self._hook = hook
        self._managers = managers
        self._errors = errors

    def finish(self, finished: object | None, *, error: BaseException | None = None) -> None:
        """Set `info.finished` and leave every hook (with `error` raised in them, if given).

        Never raises: a hook that raises is logged and counted.
        """
        self.info.finished = finished
        exc_type = None if error is None else type(error)
        tb = None if error is None else error.__traceback__
        while self._managers:
            interceptor, manager = self._managers.pop()
            try:
                manager.__exit__(exc_type, error, tb)
            except BaseException as exc:
                if exc is error:
                    continue  # handed back unchanged: not the hook's failure
                if not isinstance(exc, Exception):
                    raise
                self._errors.note(interceptor, self._hook, "when leaving")


class _Hook(Generic[I]):
    """One hook of every interceptor that overrides it."""

    __slots__ = ("_errors", "_name", "_overriders")

    def __init__(self, name: HookName, interceptors: Sequence[Interceptor], errors: _Errors) -> None:
        base = getattr(Interceptor, name)
        self._name: HookName = name
        self._overriders: tuple[tuple[Interceptor, Callable[[I], AbstractContextManager[None]]], ...] = tuple(
            (i, getattr(i, name)) for i in interceptors if getattr(type(i), name) is not base
        )
        self._errors = errors

    def __bool__(self) -> bool:
        return bool(self._overriders)

    def enter(self, info: I) -> _Entered[I]:
        """Enter the hook of every interceptor, outermost first; skip one whose hook raises."""
        managers: list[tuple[Interceptor, AbstractContextManager[None]]] = []
        for interceptor, hook in self._overriders:
            try:
                manager = hook(info)
                manager.__enter__()
            except Exception:
                self._errors.note(interceptor, self._name, "when entered")
                continue
            managers.append((interceptor, manager))
        return _Entered(info, self._name, managers, self._errors)


class RunHooks:
    """A run's interceptors, hook by hook, with their failures isolated and counted.

    The executor holds one per run and, for each piece of work, enters a hook only when
    some interceptor overrides it:

    ```python
    around = hooks.call.enter(CallInfo(...)) if hooks.call else None
    ...  # the work
    if around is not None:
        around.finish(record)
    ```
    """

    def __init__(self, interceptors: Sequence[Interceptor] = ()) -> None:
        """Args:
        interceptors: outermost first (the first one's hooks wrap the others').
        """
        for interceptor in interceptors:
            if not isinstance(interceptor, Interceptor):
                raise ConfigError(
                    f"interceptors must subclass `orchestrator.interceptors.Interceptor`, got"
                    f" {type(interceptor).__name__}; derive it from `Interceptor` and override the hooks"
                    " it needs"
                )
        self._interceptors = tuple(interceptors)
        self._errors = _Errors()
        self.run: _Hook[RunInfo] = _Hook("run", interceptors, self._errors)
        """Around the whole run."""
        self.decision: _Hook[DecisionInfo] = _Hook("decision", interceptors, self._errors)
        """Around each policy decision."""
        self.attempt: _Hook[AttemptInfo] = _Hook("attempt", interceptors, self._errors)
        """Around each attempt."""
        self.call: _Hook[CallInfo] = _Hook("call", interceptors, self._errors)
        """Around each try of each model call."""

    def stats(self) -> tuple[InterceptorStats, ...]:
        """Per interceptor, how often its hooks raised."""
        return tuple(
            InterceptorStats(interceptor=type(i).__name__, errors=self._errors.counts.get(id(i), 0))
            for i in self._interceptors
        )
