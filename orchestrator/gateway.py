"""The call gateway: the one path by which an attempt calls a model.

For every call it: counts the prompt's tokens (exactly, or a provable upper
bound: `orchestrator.tokens`), reserves the worst case in the ledger (refusing
a call that could overspend), sets the timeout from the time left before the
deadline, calls the model client, retries retryable provider errors with
seeded exponential backoff inside the budget and the deadline, records the
call in the calling tree (durably, before settling), and settles the ledger
to the actual cost. A cancelled call is recorded and settled from the usage
it had streamed so far (or its whole reservation when nothing is known).

Recording and settling happen whatever cancels the attempt meanwhile
(`finish_anyway`): a hold is never left reserved and a paid call never
unrecorded. A reply that arrives after the deadline is recorded `cancelled`
(it is paid for, but not used).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator._finish import durable_by, finish_anyway
from orchestrator.catalog import NO_MODEL, Catalog, ModelSpec
from orchestrator.errors import (
    BudgetExhausted,
    ConfigError,
    DeadlineExceeded,
    ProviderError,
    ReplicaUnavailable,
    StorageError,
)
from orchestrator.events import CallFinished
from orchestrator.interceptors import CallInfo, RunHooks
from orchestrator.ledger import Ledger, Reservation, nano_to_usd
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse, ModelClient
from orchestrator.prompt_rendering import prompt_text
from orchestrator.records import CallKind, CallRecord, CallStatus, Recorder

__all__ = ["AttemptGateway", "RetryPolicy"]

_DEADLINE_GRACE_S = 0.25


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How failed calls are retried."""

    max_retries: int = 3
    """Retries after the first try (retryable errors only)."""
    base_delay_s: float = 0.5
    """First backoff; doubles each retry, with full jitter."""
    max_delay_s: float = 8.0
    """Cap on one backoff."""
    call_timeout_s: float | None = 300.0
    """Timeout of one call (also bounded by the time left before the deadline)."""


@dataclass(kw_only=True)
class _Shared:
    """What every gateway of a run shares."""

    run_id: str
    catalog: Catalog
    client: ModelClient
    ledger: Ledger
    recorder: Recorder
    retry: RetryPolicy
    deadline_at: float | None
    started_at: float
    record_content: bool
    rng: random.Random
    emit: Callable[..., None]
    """The run's one way to publish an event (`Executor._emit`)."""
    hooks: RunHooks
    """The run's interceptors (`orchestrator.interceptors`)."""
    storage_failure: StorageError | None = None
    """The first failure of the durable recorder in this run (it fails the run)."""


class AttemptGateway:
    """A `ChatGateway` bound to one attempt."""

    def __init__(
        self,
        shared: _Shared,
        *,
        attempt_id: str,
        subtask: str,
        model: ModelSpec,
        max_tokens: int,
        span_id: str,
        held: Reservation | None,
    ) -> None:
        self._s = shared
        self._attempt_id = attempt_id
        self._subtask = subtask
        self._model = model
        self._max_tokens = max_tokens
        self._span_id = span_id
        self._held = held
        self.spent_nano = 0
        """Settled cost of this attempt's calls so far (what the ledger charged)."""
        self.billed_nano = 0
        """What providers billed for this attempt's calls (above `spent_nano` by any overrun)."""
        self.truncated_at: int | None = None
        """The largest `max_tokens` one of this attempt's calls stopped at, if one did."""

    def release_unused(self) -> Reservation | None:
        """The up-front hold if no call used it (the executor settles it at zero)."""
        held, self._held = self._held, None
        return held

    async def __call__(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        model: str | None = None,
        parent_call_id: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> ChatResponse:
        """Make one budgeted, recorded call, with retries (a seed is sent only when given)."""
        spec = self._model if model is None else self._s.catalog.get(model)
        if spec.name == NO_MODEL:
            raise ConfigError(
                f"subtask `{self._subtask}` lists no models, so its agent cannot call one; give the"
                ' subtask the models it may use, e.g. models=["small"], or pass `model=` to the call'
            )
        cap = self._max_tokens if max_tokens is None else min(max_tokens, self._max_tokens)
        parent = parent_call_id or self._span_id
        loop = asyncio.get_running_loop()
        retry = 0
        while True:
            try:
                return await self._one_try(spec, messages, cap, parent, temperature, seed, retry)
            except ReplicaUnavailable:
                raise  # the pool already waited for a replica; another try would wait again
            except ProviderError as exc:
                if not exc.retryable or retry >= self._s.retry.max_retries:
                    raise
                delay = min(self._s.retry.max_delay_s, self._s.retry.base_delay_s * 2**retry)
                delay *= self._s.rng.random()
                if self._s.deadline_at is not None and loop.time() + delay >= self._s.deadline_at:
                    raise
                await asyncio.sleep(delay)
                retry += 1

    async def _reserve(self, spec: ModelSpec, input_tokens: int, cap: int) -> Reservation:
        needed = spec.hold_nano(input_tokens=input_tokens, max_tokens=cap)
        held, self._held = self._held, None
        if held is not None and held.amount_nano >= needed:
            return held
        if held is not None:
            await self._s.ledger.settle(held, 0)
        reservation = await self._s.ledger.reserve(needed)
        if reservation is None:
            snap = await self._s.ledger.snapshot()
            raise BudgetExhausted(
                f"call to `{spec.name}` for subtask `{self._subtask}` needs"
                f" ${nano_to_usd(needed):.6f} reserved but only ${nano_to_usd(snap.available_nano):.6f}"
                " is left; raise the budget or lower max_tokens"
            )
        return reservation

    async def _one_try(
        self,
        spec: ModelSpec,
        messages: list[ChatMessage],
        cap: int,
        parent: str,
        temperature: float | None,
        seed: int | None,
        retry: int,
    ) -> ChatResponse:
        s = self._s
        loop = asyncio.get_running_loop()
        timeout = s.retry.call_timeout_s
        if s.deadline_at is not None:
            left = s.deadline_at - loop.time()
            if left <= 0:
                raise DeadlineExceeded(f"no time left to call `{spec.name}` for `{self._subtask}`")
            # A hair past the deadline, so that the deadline's cancellation (which settles
            # and records the call as cancelled) is what ends it, not a racing timeout.
            left += _DEADLINE_GRACE_S
            timeout = left if timeout is None else min(timeout, left)
        prompt = await s.client.count_prompt_tokens(spec, messages)
        reservation = await self._reserve(spec, prompt.tokens, cap)
        request = ChatRequest(
            model=spec,
            messages=tuple(messages),
            max_tokens=cap,
            timeout_s=timeout,
            temperature=temperature,
            seed=seed,
            sim_key=self._subtask,
            metadata={"run_id": s.run_id, "subtask": self._subtask, "attempt_id": self._attempt_id},
        )
        progress = CallProgress()
        call_id = uuid.uuid4().hex
        await self._journal(call_id, parent, spec, retry, prompt.tokens, reservation, loop.time())
        around = (
            s.hooks.call.enter(
                CallInfo(
                    run_id=s.run_id,
                    attempt_id=self._attempt_id,
                    subtask=self._subtask,
                    call_id=call_id,
                    parent_call_id=parent,
                    retry=retry,
                    request=request,
                )
            )
            if s.hooks.call
            else None
        )
        started = loop.time()
        response: ChatResponse | None = None
        error: BaseException | None = None
        try:
            response = await s.client.complete(request, progress)
        except asyncio.CancelledError as exc:
            error = exc
        except ProviderError as exc:
            error = exc
        except Exception as exc:  # a client bug or unexpected wire error: a failed call, not a crash
            error = ProviderError(f"call to `{spec.name}` failed: {exc!r}", retryable=False)
        ended = loop.time()
        if response is not None and s.deadline_at is not None and ended > s.deadline_at:
            # Paid for, but too late to be used: the run's deadline is hard.
            error = DeadlineExceeded(
                f"`{spec.name}` replied {ended - s.deadline_at:.3f}s after the deadline; the reply"
                " is paid for but not used"
            )
        if response is not None:
            cost = spec.cost_nano(
                input_tokens=response.input_tokens,
                output_tokens=response.output_tokens,
                cached_tokens=response.cached_tokens,
            )
        elif progress.output_tokens == 0 and isinstance(error, asyncio.CancelledError):
            # Nothing streamed yet: the provider may have generated up to max_tokens unseen.
            cost = reservation.amount_nano
        elif progress.output_tokens == 0:
            # Refused before any output (429, 5xx, a dead replica): billed only if reported.
            cost = spec.cost_nano(input_tokens=progress.input_tokens or 0, output_tokens=0)
        else:
            # Cut mid-stream (or failed): the prompt, as counted or reported, and what streamed.
            prompt_tokens = prompt.tokens if progress.input_tokens is None else progress.input_tokens
            cost = spec.cost_nano(input_tokens=prompt_tokens, output_tokens=progress.output_tokens)
        status = (
            CallStatus.OK
            if error is None
            else CallStatus.CANCELLED
            if isinstance(error, asyncio.CancelledError | DeadlineExceeded)
            else CallStatus.ERROR
        )
        record = CallRecord(
            call_id=call_id,
            run_id=s.run_id,
            attempt_id=self._attempt_id,
            parent_call_id=parent,
            kind=CallKind.LLM,
            subtask=self._subtask,
            model=spec.name,
            litellm_model=spec.litellm_model,
            provider=response.provider if response else spec.provider,
            replica=response.replica if response else progress.replica,
            retry=retry,
            input_tokens=response.input_tokens
            if response
            else (prompt.tokens if progress.input_tokens is None else progress.input_tokens),
            output_tokens=response.output_tokens if response else progress.output_tokens,
            cached_tokens=response.cached_tokens if response else 0,
            cost_usd=nano_to_usd(cost),
            reserved_usd=nano_to_usd(reservation.amount_nano),
            started_s=started - s.started_at,
            latency_s=ended - started,
            ttft_s=(
                response.ttft_s
                if response and response.ttft_s is not None
                else (progress.first_token_s - started if progress.first_token_s else None)
            ),
            status=status,
            error=None if error is None else (str(error) or type(error).__name__),
            finish_reason=response.finish_reason if response else None,
            response_id=response.response_id if response else progress.response_id,
            simulated=spec.simulated,
            prompt=prompt_text(messages) if s.record_content else None,
            response=response.text if (response and s.record_content) else None,
        )
        if around is not None:
            # Left before recording: the hooks' block is the provider call alone.
            around.info.response, around.info.error = response, error
            around.finish(record)
        # Durable record first, then settle: a crash in between loses no completed call.
        # Both happen even if this attempt is cancelled meanwhile.
        await finish_anyway(self._record_then_settle(record, reservation, cost))
        if error is not None:
            raise error
        assert response is not None
        if response.finish_reason == "length":  # stopped at its max_tokens
            self.truncated_at = max(self.truncated_at or 0, cap)
        return response

    async def _journal(
        self,
        call_id: str,
        parent: str | None,
        spec: ModelSpec,
        retry: int,
        prompt_tokens: int,
        reservation: Reservation,
        at: float,
    ) -> None:
        """Make the call's start durable before it is sent, its reservation as its cost: if the
        process dies while it is in flight, resuming the run settles it at that (`lost_in_crash`).
        A journal that cannot be written releases the hold and fails the call unsent."""
        s = self._s
        journal = CallRecord(
            call_id=call_id,
            run_id=s.run_id,
            attempt_id=self._attempt_id,
            parent_call_id=parent,
            kind=CallKind.LLM,
            subtask=self._subtask,
            model=spec.name,
            litellm_model=spec.litellm_model,
            provider=spec.provider,
            replica=None,
            retry=retry,
            input_tokens=prompt_tokens,
            output_tokens=0,
            cached_tokens=0,
            cost_usd=nano_to_usd(reservation.amount_nano),
            reserved_usd=nano_to_usd(reservation.amount_nano),
            started_s=at - s.started_at,
            latency_s=0.0,
            ttft_s=None,
            status=CallStatus.IN_FLIGHT,
            error=None,
            finish_reason=None,
            response_id=None,
            simulated=spec.simulated,
            prompt=None,
            response=None,
        )
        try:
            await durable_by(
                s.recorder.call_started(journal),
                s.deadline_at,
                what=f"the start of a call of subtask `{self._subtask}`",
                min_wait_s=0.0 if s.storage_failure else 0.5,
            )
        except BaseException as exc:
            await finish_anyway(s.ledger.settle(reservation, 0))
            if isinstance(exc, StorageError):
                s.storage_failure = s.storage_failure or exc
            else:  # cancelled while journaling: the journal may be durable, so close it, unsent
                unsent = dataclasses.replace(
                    journal,
                    status=CallStatus.CANCELLED,
                    cost_usd=nano_to_usd(0),
                    error="cancelled before it was sent",
                )
                with contextlib.suppress(StorageError):
                    await finish_anyway(s.recorder.call_finished(unsent))
            raise

    async def _record_then_settle(self, record: CallRecord, reservation: Reservation, cost: int) -> None:
        try:
            await durable_by(
                self._s.recorder.call_finished(record),
                self._s.deadline_at,
                what=f"call `{record.call_id}` of subtask `{record.subtask}`",
                min_wait_s=0.0 if self._s.storage_failure else 0.5,
            )
        except StorageError as exc:
            self._s.storage_failure = self._s.storage_failure or exc
            raise
        finally:
            self.spent_nano += await self._s.ledger.settle(reservation, cost)
            self.billed_nano += cost
        self._s.emit(CallFinished, call=record)
