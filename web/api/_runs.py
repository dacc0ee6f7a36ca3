"""The routes of runs: submit, list, detail, follow (server-sent events), cancel."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Final

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from budgetflow.policy_names import check_policy
from orchestrator.errors import ConfigError, StorageError, WorkflowError, did_you_mean
from orchestrator.records import Outcome, RunRecord
from storage import get_run, search_runs
from storage.run_search import MAX_PAGE, RunSort
from web.api._access import require
from web.api._detail import detail_out, unrecorded_out
from web.api._errors import FieldError
from web.api._payload import snapshot_json
from web.api._state import ApiState, api_state
from web.api.relay import follow_relay, is_relay_id, relayed
from web.api.runner import RunOrder
from web.api.schemas import CancelOut, RunDetailOut, RunPageOut, RunSubmission, SubmittedRun

__all__ = ["KEEPALIVE_S", "runs_router"]

KEEPALIVE_S: Final = 15.0
"""Seconds without an event after which the event stream sends a comment, so proxies keep it open."""

_RELAY_CHECK_S: Final = 2.0
"""While a relayed stream is quiet, how often its record is read (a worker that died, or a run
that ended before its last event was relayed, ends the stream with the record)."""

State = Annotated[ApiState, Depends(api_state)]
_OUTCOMES = [o.value for o in Outcome]


def _not_found(run_id: str) -> FieldError:
    return FieldError("run_id", f"no run `{run_id}` is recorded here; `GET /runs` lists the runs", status=404)


async def _recorded(api: ApiState, run_id: str) -> RunRecord | None:
    try:
        detail = await asyncio.to_thread(get_run, api.engine, run_id)
    except StorageError as exc:
        if "not found" in str(exc):
            return None
        raise
    return detail.run


def runs_router() -> APIRouter:
    """`/runs` and everything under it."""
    router = APIRouter(tags=["runs"])

    @router.post(
        "/runs",
        status_code=202,
        response_model=SubmittedRun,
        dependencies=[Depends(require("submit"))],
        summary="Start a run of a registered workflow (it runs outside the request)",
    )
    async def submit(body: RunSubmission, api: State, request: Request, response: Response) -> SubmittedRun:
        try:
            registered = api.workflows.get(body.workflow)
        except KeyError as exc:
            raise FieldError("workflow", str(exc.args[0])) from None
        budget = body.budget_usd if body.budget_usd is not None else registered.budget_usd
        if budget is None:
            raise FieldError(
                "budget_usd",
                f"workflow `{registered.name}` has no default budget; give `budget_usd`, e.g. `0.05`",
            )
        deadline = body.deadline_s if "deadline_s" in body.model_fields_set else registered.deadline_s
        declared = registered.workflow.inputs
        unknown = sorted(set(body.inputs) - set(declared)) if declared is not None else []
        if unknown:
            names = ", ".join(f"`{n}`" for n in sorted(declared or ())) or "none"
            raise FieldError(
                "inputs",
                f"workflow `{registered.name}` has no input `{unknown[0]}`"
                f"{did_you_mean(unknown[0], declared or ())}; its inputs: {names}",
            )
        inputs = {**registered.inputs, **body.inputs}
        try:
            registered.workflow.validate(
                catalog=registered.catalog,
                inputs=inputs,
                how_to_pass=lambda names: "give " + ", ".join(f"`inputs.{n}`" for n in names),
            )
        except WorkflowError as exc:
            raise FieldError("inputs", str(exc)) from None
        try:
            await asyncio.to_thread(check_policy, body.policy, registered.workflow, registered.catalog)
        except ConfigError as exc:
            raise FieldError("policy", f"{exc}; `budgetflow policies` lists them") from None
        principal = getattr(request.state, "principal", None)
        token_id: int | None = getattr(principal, "token_id", None)
        await _refuse_if_paused(api, registered.name, token_id)
        run_id = uuid.uuid4().hex[:12]
        order = RunOrder(
            run_id=run_id,
            workflow=registered,
            inputs=inputs,
            budget_usd=budget,
            deadline_s=deadline,
            policy=body.policy,
            seed=body.seed,
            explore=body.explore,
            api_token_id=token_id,
        )
        await api.queue.submit(order)
        response.headers["Location"] = f"/runs/{run_id}"
        return SubmittedRun(
            run_id=run_id,
            workflow=registered.name,
            status="queued",
            links={
                "self": f"/runs/{run_id}",
                "events": f"/runs/{run_id}/events",
                "cancel": f"/runs/{run_id}/cancel",
            },
        )

    @router.get(
        "/runs",
        response_model=RunPageOut,
        dependencies=[Depends(require("read"))],
        summary="Runs, filtered, sorted and paged (follow `next_cursor`)",
    )
    async def list_runs(
        api: State,
        workflow: Annotated[str | None, Query(description="only runs of this workflow")] = None,
        outcome: Annotated[
            Outcome | None, Query(description=f"only runs with this outcome: {', '.join(_OUTCOMES)}")
        ] = None,
        started_after: Annotated[
            datetime | None, Query(description="ISO 8601; runs started at or after")
        ] = None,
        started_before: Annotated[datetime | None, Query(description="ISO 8601; runs started before")] = None,
        sort: Annotated[RunSort, Query(description="a column, `-` first for descending")] = "-started_at",
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="runs per page")] = 50,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
    ) -> RunPageOut:
        try:
            page = await asyncio.to_thread(
                search_runs,
                api.engine,
                workflow=workflow,
                outcome=outcome,
                started_after=started_after,
                started_before=started_before,
                sort=sort,
                limit=limit,
                cursor=cursor,
            )
        except ConfigError as exc:  # the only parameter FastAPI cannot check itself
            raise FieldError("cursor", str(exc)) from None
        return RunPageOut.model_validate(page)

    @router.get(
        "/runs/{run_id}",
        response_model=RunDetailOut,
        dependencies=[Depends(require("read"))],
        summary="A run: summary, subtasks, decisions, and the calling tree with cost and latency rolled up",
    )
    async def run_detail(run_id: str, api: State) -> RunDetailOut:
        ticket = api.queue.ticket(run_id)
        live = ticket is not None and ticket.state in ("queued", "running")
        try:
            detail = await asyncio.to_thread(get_run, api.engine, run_id)
        except StorageError as exc:
            if "not found" not in str(exc):
                raise
            if ticket is None:
                raise _not_found(run_id) from None
            return unrecorded_out(ticket.order, error=ticket.error)
        return detail_out(detail, live=live)

    @router.get(
        "/runs/{run_id}/events",
        dependencies=[Depends(require("read"))],
        summary="The run's events as server-sent events (resumable with `Last-Event-ID`)",
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    async def run_events(
        run_id: str,
        api: State,
        request: Request,
        last_event_id: Annotated[str | None, Header(description="resume after this event's id")] = None,
        after: Annotated[
            int | None, Query(ge=-1, description="resume after this `seq` (as Last-Event-ID)")
        ] = None,
    ) -> StreamingResponse:
        resume = after
        relayed_after: str | None = None
        if last_event_id is not None and is_relay_id(last_event_id.strip()):
            relayed_after, last_event_id = last_event_id.strip(), None
        if last_event_id is not None and last_event_id.strip():
            if not last_event_id.strip().lstrip("-").isdigit():
                raise FieldError(
                    "Last-Event-ID",
                    f"`{last_event_id[:40]}` is not an event id; send the `id` of the last event read",
                )
            resume = int(last_event_id)
        ticket = api.queue.ticket(run_id)
        events = None if ticket is None else ticket.events
        if events is None:
            record = await _recorded(api, run_id)
            kept = api.relay is not None and await relayed(api.relay, run_id)
            if record is None and ticket is None and not kept:
                raise _not_found(run_id)
            if api.relay is not None and (record is None or record.outcome is Outcome.RUNNING or kept):
                return _sse(_relayed(api, run_id, relayed_after))
            if record is None:
                raise _not_found(run_id)
            return _sse(_one(snapshot_json(record)))

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            async for item in events.follow(resume, idle_s=KEEPALIVE_S):
                if item is None:
                    yield ": keep-alive\n\n"
                    continue
                yield f"id: {item.seq}\nevent: {item.type}\ndata: {item.data}\n\n"
            if (
                not events.finished
            ):  # it never started, or its last event was lost: the record says how it ended
                record = await _recorded(api, run_id)
                if record is not None:
                    async for message in _one(snapshot_json(record)):
                        yield message
                elif ticket is not None and ticket.error is not None:
                    yield f"event: error\ndata: {ticket.error.splitlines()[0]}\n\n"

        return _sse(stream())

    @router.post(
        "/runs/{run_id}/cancel",
        status_code=202,
        response_model=CancelOut,
        dependencies=[Depends(require("submit"))],
        summary="Stop a run: in-flight calls are cancelled and settled, the run is recorded `cancelled`",
    )
    async def cancel(run_id: str, api: State) -> CancelOut:
        if await api.queue.cancel(run_id):
            return CancelOut(run_id=run_id, status="cancelling")
        record = await _recorded(api, run_id)
        if record is None:
            raise _not_found(run_id)
        if record.outcome is Outcome.RUNNING:
            raise FieldError(
                "run_id",
                f"run `{run_id}` is running in another process, which this server cannot stop;"
                " stop it where it runs",
                status=409,
            )
        return CancelOut(run_id=run_id, status="already_finished")

    return router


async def _refuse_if_paused(api: ApiState, workflow: str, token_id: int | None) -> None:
    """409 when a shared budget above the run is set to pause new runs and has passed its point
    (`storage.shared_budgets`; the run's start would refuse it anyway, after the 202)."""
    if not api.settings.redis_url:
        return
    from storage.shared_budgets import RunScope, budgets_for, paused_by, read_budget_states

    scope = RunScope(
        workflow=workflow, team=api.settings.team, token=None if token_id is None else str(token_id)
    )
    budgets = await asyncio.to_thread(budgets_for, api.engine, scope)
    if not any(b.on_cross == "pause" for b in budgets):
        return
    from redis.asyncio import Redis

    client = Redis.from_url(api.settings.redis_url)
    try:
        refused = paused_by(budgets, await read_budget_states(client, budgets, now=datetime.now(UTC)))
    finally:
        await client.aclose()
    if refused is not None:
        raise FieldError("budget", str(refused), status=409)


async def _relayed(api: ApiState, run_id: str, after: str | None) -> AsyncIterator[str]:
    """The events a worker relays for the run (`web.api.relay`), until it finishes; if the stream
    goes quiet and the record says the run ended (its worker died before relaying the end, or it
    ended before this follower came), the record as one event."""
    yield "retry: 2000\n\n"
    quiet = 0.0
    async for item in follow_relay(api.relay, run_id, after=after, idle_s=_RELAY_CHECK_S):
        if item is not None:
            quiet = 0.0
            yield f"id: {item.id}\nevent: {item.type}\ndata: {item.data}\n\n"
            continue
        record = await _recorded(api, run_id)
        if record is not None and record.outcome is not Outcome.RUNNING:
            async for message in _one(snapshot_json(record)):
                yield message
            return
        quiet += _RELAY_CHECK_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"


async def _one(snapshot: tuple[str, str]) -> AsyncIterator[str]:
    """A recorded run's state as one message (without an id: it is not part of the live sequence)."""
    kind, data = snapshot
    yield f"event: {kind}\ndata: {data}\n\n"


def _sse(body: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
