"""The dashboard's pages: overview, runs, run detail (live), models, pool.

Pages are rendered on the server (Jinja2, autoescaped: recorded text is always shown
as text) with inline SVG charts; the only script, `static/live.js`, follows a running
run's event stream and swaps in the refreshed part of its page. Every page asks the
app's authorizer for scope `read`; without credentials it answers 401 with how to log in.
"""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, get_args

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from budgetflow._format import money
from orchestrator.errors import ConfigError, StorageError
from orchestrator.records import Outcome
from storage import get_run, search_runs
from storage.queries import workflow_names
from storage.run_search import RunSort
from storage.usage import replica_usage, subtask_success, usage_since
from web.api._catalog import known_models
from web.api._state import ApiState, api_state
from web.dashboard._run_view import run_view
from web.dashboard._saving import saving_estimate
from web.dashboard._svg import PALETTE, Bar, bars, stacked_days

__all__ = ["pages_router"]

_HERE = Path(__file__).parent
_TEMPLATES: Final = Jinja2Templates(directory=str(_HERE / "templates"))
WINDOWS: Final = {"1d": 1, "7d": 7, "30d": 30, "90d": 90}
"""The overview's time windows."""
_OUTCOME_COLOURS: Final = {
    "completed": "#59a14f",
    "running": "#4e79a7",
    "budget_exhausted": "#f28e2b",
    "deadline_exceeded": "#edc948",
    "failed": "#e15759",
    "cancelled": "#bab0ac",
    "abandoned": "#9c755f",
}
State = Annotated[ApiState, Depends(api_state)]


def _usd(value: Decimal | float | None) -> str:
    return "–" if value is None else money(value)


def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


def _pretty_json(value: object) -> str:
    """JSON for people (indented, non-ASCII kept); autoescaping makes it safe in the page."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


_TEMPLATES.env.filters.update(usd=_usd, secs=_secs, pct=_pct, pretty_json=_pretty_json)
_TEMPLATES.env.globals.update(outcome_colours=_OUTCOME_COLOURS)


async def _guard(request: Request) -> Response | None:
    """`None` when the request may read; else the page to answer instead (401/403)."""
    try:
        await request.app.state.authorizer.authorize(request, "read")
    except HTTPException as exc:
        return _TEMPLATES.TemplateResponse(
            request,
            "denied.html",
            {"status": exc.status_code, "detail": exc.detail, "next": request.url.path},
            status_code=exc.status_code,
        )
    return None


def _page(
    request: Request, template: str, page: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    return _TEMPLATES.TemplateResponse(request, template, {"page": page, **context}, status_code=status_code)


def _window(asked: str, default: str) -> tuple[str, datetime]:
    """The window shown (`asked` if it is one of `WINDOWS`, else `default`) and its start."""
    shown = asked if asked in WINDOWS else default
    return shown, datetime.now(UTC) - timedelta(days=WINDOWS[shown])


def pages_router() -> APIRouter:
    """`/` (to the overview) and `/ui/...`."""
    router = APIRouter(include_in_schema=False)

    @router.get("/")
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    @router.get("/ui", response_class=HTMLResponse)
    async def overview(request: Request, api: State, window: str = "30d") -> Response:
        if (denied := await _guard(request)) is not None:
            return denied
        window, since = _window(window, "30d")
        usage = await asyncio.to_thread(usage_since, api.engine, since)
        outcomes = sorted(usage.outcomes.items(), key=lambda kv: -kv[1])
        saving = saving_estimate(usage.completed_by_workflow, api.workflows)
        latency_rows = [m for m in usage.models if m.calls]
        slowest = max((m.latency_p99_s or 0.0 for m in latency_rows), default=0.0)
        charts = {
            "spend_model": stacked_days(
                "spend-by-model",
                "spend per day by model",
                [(d.day, d.key, float(d.spent_usd)) for d in usage.spend_by_model],
            ),
            "spend_workflow": stacked_days(
                "spend-by-workflow",
                "spend per day by workflow",
                [(d.day, d.key, float(d.spent_usd)) for d in usage.spend_by_workflow],
            ),
            "outcomes": bars(
                "outcomes",
                "runs by outcome",
                [Bar(o, n, f"{n:,}", _OUTCOME_COLOURS.get(o, PALETTE[-1])) for o, n in outcomes],
            ),
            "latency": bars(
                "latency",
                "call latency p50, p95, p99 by model",
                [
                    Bar(f"{m.model} {q}", v or 0.0, _secs(v), colour)
                    for m in latency_rows
                    for q, v, colour in (
                        ("p50", m.latency_p50_s, PALETTE[0]),
                        ("p95", m.latency_p95_s, PALETTE[1]),
                        ("p99", m.latency_p99_s, PALETTE[3]),
                    )
                ],
                vmax=slowest or None,
            ),
            "ttft": bars(
                "ttft",
                "time to first token p50, p95 by model",
                [
                    Bar(f"{m.model} {q}", v or 0.0, _secs(v), colour)
                    for m in latency_rows
                    if m.ttft_p50_s is not None
                    for q, v, colour in (("p50", m.ttft_p50_s, PALETTE[4]), ("p95", m.ttft_p95_s, PALETTE[6]))
                ],
            ),
            "completion": bars(
                "completion",
                "completion rate by policy",
                [
                    Bar(p.policy, p.completion_rate or 0.0, _pct(p.completion_rate), PALETTE[2])
                    for p in usage.policies
                ],
                vmax=1.0,
            ),
        }
        return _page(
            request,
            "overview.html",
            "overview",
            usage=usage,
            outcomes=outcomes,
            charts=charts,
            saving=saving,
            window=window,
            windows=list(WINDOWS),
        )

    @router.get("/ui/runs", response_class=HTMLResponse)
    async def runs(
        request: Request,
        api: State,
        workflow: str | None = None,
        outcome: str | None = None,
        sort: str = "-started_at",
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Response:
        if (denied := await _guard(request)) is not None:
            return denied
        error = None
        page = None
        chosen = Outcome(outcome) if outcome in {o.value for o in Outcome} else None
        try:
            page = await asyncio.to_thread(
                search_runs,
                api.engine,
                workflow=workflow or None,
                outcome=chosen,
                sort=sort if sort in get_args(RunSort) else "-started_at",  # type: ignore[arg-type]
                limit=limit,
                cursor=cursor or None,
            )
        except ConfigError as exc:
            error = str(exc)
        names = await asyncio.to_thread(workflow_names, api.engine)
        return _page(
            request,
            "runs.html",
            "runs",
            result=page,
            error=error,
            workflow=workflow or "",
            outcome=chosen.value if chosen else "",
            sort=sort,
            limit=limit,
            workflows=names,
            outcomes=[o.value for o in Outcome],
        )

    async def _view(api: ApiState, run_id: str) -> Any:
        try:
            detail = await asyncio.to_thread(get_run, api.engine, run_id)
        except StorageError as exc:
            if "not found" in str(exc):
                return None
            raise
        ticket = api.queue.ticket(run_id)
        # Followed live when its events reach this server: it runs here, or a worker relays them.
        live = detail.run.outcome is Outcome.RUNNING and (ticket is not None or api.relay is not None)
        latest = ticket.events.latest if ticket is not None and ticket.events is not None else None
        return await asyncio.to_thread(functools.partial(run_view, detail, live=live, latest=latest))

    @router.get("/ui/runs/{run_id}", response_class=HTMLResponse)
    async def run(request: Request, api: State, run_id: str) -> Response:
        if (denied := await _guard(request)) is not None:
            return denied
        view = await _view(api, run_id)
        if view is None:
            ticket = api.queue.ticket(run_id)
            if ticket is None:
                return _page(request, "missing.html", "run", run_id=run_id, status_code=404)
            return _page(request, "queued.html", "run", run_id=run_id, ticket=ticket)
        return _page(request, "run.html", "run", view=view, run=view.detail.run)

    @router.get("/ui/runs/{run_id}/live", response_class=HTMLResponse)
    async def run_live(request: Request, api: State, run_id: str) -> Response:
        if (denied := await _guard(request)) is not None:
            return denied
        view = await _view(api, run_id)
        if view is None:
            return HTMLResponse("", status_code=404)
        return _page(request, "run_live.html", "run", view=view, run=view.detail.run)

    @router.get("/ui/models", response_class=HTMLResponse)
    async def models(request: Request, api: State, window: str = "30d") -> Response:
        if (denied := await _guard(request)) is not None:
            return denied
        window, since = _window(window, "30d")
        usage = await asyncio.to_thread(usage_since, api.engine, since)
        success = await asyncio.to_thread(subtask_success, api.engine, since)
        catalog = await known_models(api)
        learned = {
            (entry.workflow, entry.subtask, model.name): entry for model in catalog for entry in model.learned
        }
        priors = []
        for registered in api.workflows:
            for subtask in registered.workflow.subtasks.values():
                for name, est in subtask.estimates.items():
                    got = learned.get((registered.name, subtask.name, name))
                    priors.append(
                        {
                            "workflow": registered.name,
                            "subtask": subtask.name,
                            "model": name,
                            "prior_p": est.success_prob,
                            "prior_latency": est.latency_s.mean,
                            "learned": got,
                        }
                    )
        return _page(
            request,
            "models.html",
            "models",
            usage=usage,
            success=success,
            priors=priors,
            catalog=catalog,
            window=window,
            windows=list(WINDOWS),
        )

    @router.get("/ui/pool", response_class=HTMLResponse)
    async def pool(request: Request, api: State, window: str = "1d") -> Response:
        if (denied := await _guard(request)) is not None:
            return denied
        window, since = _window(window, "1d")
        replicas = await asyncio.to_thread(replica_usage, api.engine, since)
        health = await _replica_health(api)
        return _page(
            request,
            "pool.html",
            "pool",
            replicas=replicas,
            health=health,
            chart=bars(
                "hit-rate",
                "prefix-cache hit rate by replica",
                [Bar(f"{r.model} {r.replica}", r.hit_rate or 0.0, _pct(r.hit_rate)) for r in replicas],
                vmax=1.0,
            ),
            window=window,
            windows=list(WINDOWS),
        )

    return router


async def _replica_health(api: ApiState) -> list[dict[str, Any]]:
    """Each configured pool replica's `/health`, asked now (1 s timeout)."""
    import httpx

    urls: list[tuple[str, str]] = []
    for registered in api.workflows:
        for pool in registered.catalog.pools.values():
            for replica in pool.replicas:
                urls.append((pool.name, str(replica)))
    urls = sorted(set(urls))
    if not urls:
        return []

    async def ask(client: httpx.AsyncClient, pool: str, url: str) -> dict[str, Any]:
        base = url.rstrip("/").removesuffix("/v1")
        try:
            answer = await client.get(f"{base}/health")
            ok = answer.status_code == 200
            detail = f"HTTP {answer.status_code}"
        except httpx.HTTPError as exc:
            ok, detail = False, type(exc).__name__
        return {"pool": pool, "url": url, "healthy": ok, "detail": detail}

    async with httpx.AsyncClient(timeout=1.0) as client:
        return list(await asyncio.gather(*(ask(client, p, u) for p, u in urls)))
