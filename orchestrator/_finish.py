"""Work that must finish even when the task doing it is cancelled.

Recording a finished call and settling its reservation must both happen, in that
order, whatever else happens: a sibling's pass cancels the attempt, the deadline
cancels the run, a user presses Ctrl-C. `asyncio.shield` alone does not do it: the
awaiting task still receives `CancelledError` at the shield and skips whatever
comes after. `finish_anyway` keeps waiting for the shielded work and only then
lets the cancellation through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from orchestrator.errors import StorageError

__all__ = ["DURABLE_GRACE_S", "durable_by", "finish_anyway"]

T = TypeVar("T")

DURABLE_GRACE_S = 0.5
"""How long after the deadline a run still waits for the database to confirm a record.

Past it the record stays queued in the recorder (written when the database answers, or
kept in its spill file) and the run ends `failed` with the storage error, on time."""


async def finish_anyway(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` to its end; if the caller was cancelled meanwhile, raise `CancelledError` after.

    The work's own exception, if any, propagates (when the caller was also cancelled,
    the cancellation wins and the exception is chained to it).
    """
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                # The work itself was cancelled (not us through the shield): propagate.
                raise
            cancelled = True
            continue
        except BaseException as error:
            if cancelled:
                raise asyncio.CancelledError() from error
            raise
        if cancelled:
            raise asyncio.CancelledError()
        return result


async def durable_by(
    write: Coroutine[Any, Any, None],
    deadline_at: float | None,
    *,
    what: str,
    min_wait_s: float = 0.5,
) -> None:
    """Await a recorder's durable write, but no later than `deadline_at` + `DURABLE_GRACE_S`.

    Past that (and at least `min_wait_s`) the write goes on in the background (the
    recorder retries, then spills) and a `StorageError` says so; without a deadline, the
    recorder's own retry window bounds the wait.

    Raises:
        StorageError: the write failed, or did not complete in time.
    """
    if deadline_at is None:
        await write
        return
    loop = asyncio.get_running_loop()
    # At least `min_wait_s` even past the deadline: a commit that is merely slow must not
    # turn into a failed run.
    wait = max(min_wait_s, deadline_at + DURABLE_GRACE_S - loop.time())
    task = asyncio.ensure_future(write)
    try:
        # `asyncio.timeout`, not `wait_for`: on Python 3.11 `wait_for` loses a cancellation
        # that arrives as the write completes, and the caller would go on (e.g. send a call).
        async with asyncio.timeout(wait):
            await asyncio.shield(task)
    except TimeoutError:
        task.add_done_callback(_consume)
        raise StorageError(
            f"the database did not confirm {what} in time for the deadline; the record is still"
            " queued and is written when the database answers (or kept in the recorder's spill"
            " file); check that the database is reachable"
        ) from None


def _consume(task: asyncio.Future[None]) -> None:
    """Retrieve a background write's outcome (the recorder reports its failure itself)."""
    if not task.cancelled():
        task.exception()
