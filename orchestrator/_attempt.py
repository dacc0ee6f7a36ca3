"""One attempt: the agent's work, its check, and its closing, whatever cancels it.

An attempt never decides its own final status (the executor's loop does, exactly once:
`passed` for the winner, `passed_late` for a later pass). It reports how it ended: an
`AttemptEnded`. Its calls are recorded and settled by the gateway, and its unused
up-front hold is released and its span recorded here, before that ending exists, even
when the attempt is cancelled meanwhile (`finish_anyway`).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from orchestrator._finish import durable_by, finish_anyway
from orchestrator._run_views import AncestorView
from orchestrator.agent import AttemptContext, AttemptOutput, CheckResult
from orchestrator.catalog import ModelSpec
from orchestrator.errors import (
    BudgetExhausted,
    BudgetflowError,
    CheckError,
    DeadlineExceeded,
    ProviderError,
    StorageError,
    UserError,
)
from orchestrator.events import CallFinished
from orchestrator.gateway import AttemptGateway, _Shared
from orchestrator.interceptors import AttemptInfo
from orchestrator.ledger import Reservation, nano_to_usd
from orchestrator.records import AttemptRecord, AttemptStatus, CallKind, CallRecord, CallStatus
from orchestrator.workflow import Ancestry, Subtask

__all__ = ["AttemptEnded", "AttemptScope", "attempt_seed", "run_attempt"]


@dataclass(frozen=True, kw_only=True)
class AttemptEnded:
    """How one attempt ended, as it saw it (the loop decides the final status)."""

    attempt_id: str
    """The attempt."""
    status: AttemptStatus
    """`passed`, `failed`, `error` or `cancelled`."""
    output: AttemptOutput | None = None
    """What the agent produced, if it finished."""
    verdict: CheckResult | None = None
    """The check's verdict, if one was reached."""
    detail: str | None = None
    """The verdict's detail, or the error."""
    fatal: BudgetflowError | None = None
    """An error that ends the run (a mistake in the input, a storage failure)."""
    spent_nano: int = 0
    """What its calls were charged."""
    ended_s: float = 0.0
    """Run-relative end."""
    truncated_at: int | None = None
    """The `max_tokens` one of its model calls stopped at, if one did."""


@dataclass(frozen=True, kw_only=True)
class AttemptScope:
    """What every attempt of a run shares."""

    shared: _Shared
    """The gateway's run-wide services (client, ledger, recorder, deadline)."""
    subtasks: Mapping[str, Subtask]
    """The workflow's subtasks."""
    inputs: Mapping[str, Any]
    """The run's inputs."""
    ancestry: Ancestry
    """Who is whose ancestor."""
    output_of: Callable[[str], Any]
    """A completed subtask's output."""
    text_of: Callable[[str], str]
    """A completed subtask's text."""
    seed: int
    """The run's seed."""
    now: Callable[[], float]
    """Run-relative time."""
    span_ids: itertools.count[int]
    """Numbers for span ids, shared with the executor."""


def attempt_seed(run_seed: int, subtask: str, batch: int, sample: int) -> int:
    """The seed an attempt's agent gets: the same in every process for the same run seed."""
    digest = hashlib.blake2b(f"{run_seed}\x00{subtask}\x00{batch}\x00{sample}".encode(), digest_size=4)
    return int.from_bytes(digest.digest(), "big") & 0x7FFFFFFF


async def run_attempt(
    scope: AttemptScope, record: AttemptRecord, *, model: ModelSpec, max_tokens: int, hold: Reservation
) -> tuple[AttemptEnded, bool]:
    """Run one attempt to its ending; never raises.

    Returns the ending and whether the attempt was cancelled (its cancellation is
    absorbed once its calls are recorded and settled: the canceller reads the ending).
    """
    name = record.subtask
    definition = scope.subtasks[name]
    shared = scope.shared
    span_id = f"{shared.run_id}.s{next(scope.span_ids)}"
    gateway = AttemptGateway(
        shared,
        attempt_id=record.attempt_id,
        subtask=name,
        model=model,
        max_tokens=max_tokens,
        span_id=span_id,
        held=hold,
    )
    around = (
        shared.hooks.attempt.enter(AttemptInfo(attempt=record, model=model, span_id=span_id))
        if shared.hooks.attempt
        else None
    )
    status, output, verdict = AttemptStatus.ERROR, None, None
    detail: str | None = None
    fatal: BudgetflowError | None = None
    error: BaseException | None = None
    cancelled = False
    try:
        ctx = AttemptContext(
            run_id=shared.run_id,
            subtask=name,
            attempt_id=record.attempt_id,
            model=model,
            max_tokens=max_tokens,
            inputs=scope.inputs,
            outputs=AncestorView(scope.output_of, scope.ancestry, name),
            texts=AncestorView(scope.text_of, scope.ancestry, name),
            chat=gateway,
            seed=attempt_seed(scope.seed, name, record.batch, record.sample),
            span_id=span_id,
        )
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
                raise CheckError(f"check of subtask `{name}` crashed: {exc!r}") from exc
        else:
            verdict = CheckResult(passed=True, detail="no check")
        status = AttemptStatus.PASSED if verdict.passed else AttemptStatus.FAILED
        detail = verdict.detail
    except asyncio.CancelledError:
        status, detail, cancelled = AttemptStatus.CANCELLED, "cancelled", True
    except (UserError, StorageError) as exc:
        fatal, detail, error = exc, str(exc), exc
    except (ProviderError, BudgetExhausted, DeadlineExceeded, CheckError) as exc:
        detail, error = f"{type(exc).__name__}: {exc}", exc
    except Exception as exc:  # a bug in the agent: the attempt errs, the run goes on
        detail, error = "agent raised " + "".join(traceback.format_exception_only(exc)).strip(), exc
    ending = AttemptEnded(
        attempt_id=record.attempt_id,
        status=status,
        output=output,
        verdict=verdict,
        detail=detail,
        fatal=fatal,
    )
    closed: list[AttemptEnded] = []
    spans: list[CallRecord] = []
    try:
        await finish_anyway(_close(scope, record, model, gateway, span_id, ending, closed, spans))
    except asyncio.CancelledError:
        cancelled = True
    if around is not None:
        info, final = around.info, closed[0]
        info.status, info.detail, info.error = final.status, final.detail, error
        info.spent_usd = nano_to_usd(final.spent_nano)
        around.finish(spans[0] if spans else None)
    return closed[0], cancelled


async def _close(
    scope: AttemptScope,
    record: AttemptRecord,
    model: ModelSpec,
    gateway: AttemptGateway,
    span_id: str,
    ending: AttemptEnded,
    closed: list[AttemptEnded],
    spans: list[CallRecord],
) -> None:
    """Release an unused hold and record the attempt's span; put the final ending in `closed`
    and the span's record in `spans` (they outlive a cancellation of the caller)."""
    shared = scope.shared
    fatal = ending.fatal
    try:
        unused = gateway.release_unused()
        if unused is not None:
            await shared.ledger.settle(unused, 0)
        ended = scope.now()
        span = CallRecord(
            call_id=span_id,
            run_id=shared.run_id,
            attempt_id=record.attempt_id,
            parent_call_id=None,
            kind=CallKind.AGENT,
            subtask=record.subtask,
            model=model.name,
            started_s=record.started_s,
            latency_s=ended - record.started_s,
            status=CallStatus.CANCELLED
            if ending.status is AttemptStatus.CANCELLED
            else CallStatus.ERROR
            if ending.status is AttemptStatus.ERROR
            else CallStatus.OK,
            error=ending.detail if ending.status is AttemptStatus.ERROR else None,
            simulated=model.simulated,
        )
        spans.append(span)
        await durable_by(
            shared.recorder.call_finished(span),
            shared.deadline_at,
            what=f"the span of attempt `{record.attempt_id}`",
            min_wait_s=0.0 if isinstance(fatal, StorageError) or shared.storage_failure else 0.5,
        )
        shared.emit(CallFinished, call=span)
    except StorageError as exc:
        fatal = fatal or exc
        shared.storage_failure = shared.storage_failure or exc
    finally:
        closed.append(
            replace(
                ending,
                fatal=fatal,
                spent_nano=gateway.spent_nano,
                ended_s=scope.now(),
                truncated_at=gateway.truncated_at,
            )
        )
