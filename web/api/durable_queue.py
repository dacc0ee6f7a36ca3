"""`DurableRunQueue`: the API enqueues runs on DBOS; `budgetflow worker` processes execute them.

The API process only talks to DBOS's system database through a `DBOSClient`: it never
executes a run. `submit` enqueues the registered workflow `budgetflow.run` with the
order as plain JSON (`budgetflow.worker.RunPayload`), under the run's id as the DBOS
workflow id, on `budgetflow.worker.QUEUE_NAME`. `cancel` cancels the DBOS workflow; the
worker running it sees that within half a second and stops the run, which is recorded
`cancelled` (a run cancelled before any worker took it is never recorded). `ticket`
tells what DBOS said at the last look (every `refresh_s`) for the runs submitted through
this process; live events stay on the worker, so a run's event stream is its record.
`aclose` leaves the runs to the workers: they are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from budgetflow.settings import Settings
from budgetflow.worker import APP_NAME, QUEUE_NAME, WORKFLOW_NAME, RunPayload, migrate_dbos
from web.api.runner import RunOrder, Ticket, TicketState

if TYPE_CHECKING:
    from dbos import DBOSClient

__all__ = ["DurableRunQueue"]

_log = logging.getLogger(__name__)

_STATES: dict[str, TicketState] = {
    "ENQUEUED": "queued",
    "DELAYED": "queued",
    "PENDING": "running",
    "SUCCESS": "ended",
    "CANCELLED": "ended",
    "ERROR": "failed_to_start",
    "MAX_RECOVERY_ATTEMPTS_EXCEEDED": "failed_to_start",
}


def payload_of(order: RunOrder) -> RunPayload:
    """The order as the DBOS workflow's JSON argument."""
    return RunPayload(
        workflow=order.workflow.name,
        run_id=order.run_id,
        inputs=dict(order.inputs),
        budget_usd=str(order.budget_usd),
        deadline_s=order.deadline_s,
        policy=order.policy,
        seed=order.seed,
        explore=order.explore,
        api_token_id=order.api_token_id,
    )


class DurableRunQueue:
    """A `RunQueue` on DBOS: runs survive this process and go to whichever worker is free."""

    def __init__(self, client: DBOSClient, *, keep: int = 1000, refresh_s: float = 1.0) -> None:
        """A queue on a connected `DBOSClient` (use `open`)."""
        self._client = client
        self._tickets: dict[str, Ticket] = {}
        self._keep = keep
        self._refresh_s = refresh_s
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, settings: Settings, *, refresh_s: float = 1.0) -> DurableRunQueue:
        """Migrate DBOS's system database (`budgetflow.worker.dbos_url`) and connect to it.

        Raises:
            ConfigError: the runs' database is an in-memory SQLite one.
        """
        from dbos import DBOSClient

        url = await asyncio.to_thread(migrate_dbos, settings)
        client = await asyncio.to_thread(DBOSClient, system_database_url=url, application_name=APP_NAME)
        queue = cls(client, refresh_s=refresh_s)
        queue._refresher = asyncio.create_task(queue._refresh_forever(), name="durable queue tickets")
        return queue

    async def submit(self, order: RunOrder) -> None:
        """Enqueue `order` (durable when this returns)."""
        await self._client.enqueue_async(
            {"workflow_name": WORKFLOW_NAME, "queue_name": QUEUE_NAME, "workflow_id": order.run_id},
            payload_of(order),
        )
        self._tickets[order.run_id] = Ticket(order=order)
        while len(self._tickets) > self._keep:
            self._tickets.pop(next(iter(self._tickets)))

    async def cancel(self, run_id: str) -> bool:
        """Cancel the run's DBOS workflow wherever it is (queued, or on any worker); `False` when DBOS
        holds no such run or it has ended."""
        found = await self._client.list_workflows_async(
            workflow_ids=[run_id], load_input=False, load_output=False
        )
        if not found or found[0].status not in ("ENQUEUED", "DELAYED", "PENDING"):
            return False
        await self._client.cancel_workflow_async(run_id)
        ticket = self._tickets.get(run_id)
        if ticket is not None:
            ticket.cancel.set()
        return True

    def ticket(self, run_id: str) -> Ticket | None:
        """The run as DBOS told at the last look, when it was submitted here."""
        return self._tickets.get(run_id)

    async def refresh(self) -> None:
        """Ask DBOS where the runs submitted here are."""
        open_ids = [i for i, t in self._tickets.items() if t.state in ("queued", "running")]
        if not open_ids:
            return
        found = await self._client.list_workflows_async(
            workflow_ids=open_ids, load_input=False, load_output=False
        )
        for status in found:
            ticket = self._tickets.get(status.workflow_id)
            if ticket is None:
                continue
            ticket.state = _STATES.get(status.status, ticket.state)
            if ticket.state == "failed_to_start" and status.error is not None:
                ticket.error = f"{type(status.error).__name__}: {status.error}"

    async def _refresh_forever(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the database may be away for a while; tickets are only hints
                _log.exception("cannot read the runs' DBOS workflows; trying again")
            await asyncio.sleep(self._refresh_s)

    async def aclose(self) -> None:
        """Stop looking and disconnect; the runs stay with the workers."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await asyncio.to_thread(self._client.destroy)
