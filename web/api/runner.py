"""Running submitted runs outside the request: the `RunQueue` seam and its in-process runner.

The API only enqueues (`RunQueue.submit`), asks to stop (`cancel`) and follows
(`live`); something else executes. `InProcessRunner` executes in the API's own
process, as a task per run on its event loop, with the composition root
(`budgetflow.services`) as `budgetflow run` uses it: the SQL recorder, the ledger,
learned estimates, tracing, and the simulated backend for models without keys. A
durable worker tier can replace it behind the same protocol.

At shutdown (`aclose`), runs still going are cancelled: in-flight calls are cancelled
and settled and each run is recorded `cancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from budgetflow.services import default_client, open_run_services, pool_callers, resolve_policy
from budgetflow.settings import Settings
from orchestrator.catalog import Catalog
from orchestrator.events import Observer
from orchestrator.run import arun
from web.api.live import DEFAULT_CAPACITY, LiveEvents, LiveEventsObserver
from web.api.registry import RegisteredWorkflow

__all__ = ["InProcessRunner", "RunOrder", "RunQueue", "Ticket", "TicketState"]

_log = logging.getLogger(__name__)

TicketState = Literal["queued", "running", "ended", "failed_to_start"]
"""Where a submitted run is, as its runner sees it."""


@dataclass(frozen=True, kw_only=True)
class RunOrder:
    """A run to execute, checked by the API."""

    run_id: str
    """The id the run will be recorded under."""
    workflow: RegisteredWorkflow
    """What to run, with its catalog."""
    inputs: Mapping[str, Any]
    """Run inputs (the workflow's defaults merged with the request's)."""
    budget_usd: Decimal
    """Hard budget."""
    deadline_s: float | None
    """Deadline; `None`: none."""
    policy: str
    """Policy name."""
    seed: int
    """Seed."""
    explore: bool = False
    """Plan on the beliefs drawn once from their uncertainty, seeded by `seed`
    (`open_run_services(explore_seed=...)`)."""
    api_token_id: int | None = None
    """The API token that submitted it (shared budgets per token are above it)."""


@dataclass(kw_only=True)
class Ticket:
    """A submitted run as its runner knows it."""

    order: RunOrder
    """What was submitted."""
    state: TicketState = "queued"
    """Where it is."""
    error: str | None = None
    """Why it could not start (`failed_to_start`); nothing was recorded then."""
    events: LiveEvents | None = None
    """Its events, while it runs and for a while after."""
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to stop it."""


class RunQueue(Protocol):
    """Where the API puts runs; something else executes them."""

    async def submit(self, order: RunOrder) -> None:
        """Accept `order`; it runs later, outside the request."""
        ...

    async def cancel(self, run_id: str) -> bool:
        """Ask run `run_id` to stop; `False` when this queue does not hold it or it has ended."""
        ...

    def ticket(self, run_id: str) -> Ticket | None:
        """Run `run_id` as this queue knows it (`None`: not submitted here, or forgotten)."""
        ...

    async def aclose(self) -> None:
        """Stop: runs still going are cancelled and recorded `cancelled`."""
        ...


class InProcessRunner:
    """Executes runs as tasks on the running event loop, at most `max_concurrent` at once."""

    def __init__(
        self,
        settings: Settings,
        *,
        observers: Callable[[Catalog], list[Observer]] = lambda catalog: [],
        max_concurrent: int = 8,
        keep_ended: int = 100,
        event_capacity: int = DEFAULT_CAPACITY,
        sim_time_scale: float = 1.0,
        learn: bool = True,
        shutdown_timeout_s: float = 30.0,
    ) -> None:
        """A runner on `settings`' database, ledger and telemetry.

        Args:
            settings: where runs are recorded and how services are built.
            observers: extra observers for a run on a catalog (the API's metrics).
            max_concurrent: runs executing at once; later ones wait their turn (`queued`).
            keep_ended: ended runs whose events stay in memory for late followers.
            event_capacity: events kept per run (`LiveEvents`).
            sim_time_scale: speed of the simulated backend's latencies (0.1: ten times faster).
            learn: plan from estimates learned from recorded runs.
            shutdown_timeout_s: how long `aclose` waits for cancelled runs to be recorded.
        """
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be at least 1, got {max_concurrent}")
        self._settings = settings
        self._observers = observers
        self._slots = asyncio.Semaphore(max_concurrent)
        self._keep_ended = keep_ended
        self._event_capacity = event_capacity
        self._time_scale = sim_time_scale
        self._learn = learn
        self._shutdown_timeout_s = shutdown_timeout_s
        self._tickets: dict[str, Ticket] = {}
        self._ended: list[str] = []
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def submit(self, order: RunOrder) -> None:
        """Start `order` in a task of its own (it waits for a slot when `max_concurrent` runs go)."""
        ticket = Ticket(
            order=order,
            events=LiveEvents(
                order.run_id, capacity=self._event_capacity, with_content=self._settings.record_content
            ),
        )
        self._tickets[order.run_id] = ticket
        self._tasks[order.run_id] = asyncio.create_task(self._execute(ticket), name=f"run {order.run_id}")

    async def cancel(self, run_id: str) -> bool:
        """Ask run `run_id` to stop; it is recorded `cancelled` (also when it had not started yet)."""
        ticket = self._tickets.get(run_id)
        if ticket is None or ticket.state in ("ended", "failed_to_start"):
            return False
        ticket.cancel.set()
        return True

    def ticket(self, run_id: str) -> Ticket | None:
        """Run `run_id` as this runner knows it."""
        return self._tickets.get(run_id)

    @property
    def running(self) -> list[str]:
        """Ids of the runs queued or executing."""
        return [t.order.run_id for t in self._tickets.values() if t.state in ("queued", "running")]

    async def aclose(self) -> None:
        """Cancel every run still queued or going and wait until each is recorded."""
        for ticket in self._tickets.values():
            ticket.cancel.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._shutdown_timeout_s)
        for task in pending:  # the executor records a cancelled task as `cancelled` too
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self._shutdown_timeout_s)

    async def _execute(self, ticket: Ticket) -> None:
        order = ticket.order
        try:
            async with self._slots:
                ticket.state = "running"
                await self._run(ticket)
        except asyncio.CancelledError:
            _log.info("run %s was cancelled at shutdown", order.run_id)
        except Exception as exc:  # a run that cannot start must not take the server down
            _log.exception("run %s failed to start", order.run_id)
            ticket.state = "failed_to_start"
            ticket.error = f"{type(exc).__name__}: {exc}"
        finally:
            if ticket.state != "failed_to_start":
                ticket.state = "ended"
            if ticket.events is not None:
                ticket.events.close()
            self._tasks.pop(order.run_id, None)
            self._forget_old(order.run_id)

    async def _run(self, ticket: Ticket) -> None:
        order = ticket.order
        registered = order.workflow
        catalog = registered.catalog
        async with open_run_services(
            self._settings,
            workflow=registered.workflow,
            catalog=catalog,
            budget_usd=order.budget_usd,
            run_id=order.run_id,
            learn=self._learn,
            explore_seed=order.seed if order.explore else None,
            api_token_id=order.api_token_id,
        ) as services:
            pools = pool_callers(registered.workflow, catalog)
            client = default_client(
                registered.workflow, catalog, seed=order.seed, sim_time_scale=self._time_scale, pools=pools
            )
            observers: list[Observer] = [*self._observers(catalog)]
            if ticket.events is not None:
                observers.append(LiveEventsObserver(ticket.events))
            try:
                await arun(
                    registered.workflow,
                    catalog=catalog,
                    client=client,
                    policy=services.wrap_policy(resolve_policy(order.policy, order.seed)),
                    budget_usd=order.budget_usd,
                    deadline_s=order.deadline_s,
                    inputs=order.inputs,
                    seed=order.seed,
                    recorder=services.recorder,
                    ledger=services.ledger,
                    observers=observers,
                    interceptors=services.interceptors,
                    record_content=self._settings.record_content,
                    estimator=services.estimator,
                    run_id=order.run_id,
                    cancel=ticket.cancel,
                )
            finally:
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _forget_old(self, run_id: str) -> None:
        self._ended.append(run_id)
        while len(self._ended) > self._keep_ended:
            self._tickets.pop(self._ended.pop(0), None)
