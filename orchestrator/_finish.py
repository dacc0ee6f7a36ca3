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

__all__ = ["finish_anyway"]

T = TypeVar("T")


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
