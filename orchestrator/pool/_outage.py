"""Waiting through a pool outage: calls wait inside `complete`, one task probes for the way back.

When no replica is healthy, a call waits for one instead of failing at once: failing
at once makes the gateway retry, and record a failed call, every few hundred
milliseconds for as long as the outage lasts. Every waiting call of a pool waits on
the router (`PoolRouter.wait_for_healthy`), woken by whoever puts a replica back: the
`HealthChecker`, or the one recovery task here, which probes the down replicas'
``/health`` with exponential backoff while at least one call waits (so recovery is
noticed even with health checks off, and the probes do not multiply with the calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from orchestrator.errors import ReplicaUnavailable
from orchestrator.pool.router import PoolRouter

__all__ = ["DEFAULT_UNAVAILABLE_WAIT_S", "OutageWait"]

_log = logging.getLogger(__name__)

DEFAULT_UNAVAILABLE_WAIT_S = 30.0
"""How long a call waits for a replica when none is healthy, unless the caller says otherwise.

Long enough to ride out what heals by itself: health checks that time out on a loaded
machine, a paused or briefly overloaded replica, a process supervisor restarting the
API server. Short enough that a pool that is really gone (a vLLM replica needs ~90 s to
load even the tiny test model on CPU, minutes for a real model on a GPU) fails the call
with a clear reason while the run still has time and budget to do something else.
"""


class OutageWait:
    """The outage waits of one pool's calls and the task that probes the down replicas.

    Args:
        router: the pool's router (its health view is what the calls wait on).
        health_failure: one ``/health`` probe of a replica: why it failed, or `None`.
        wait_s: longest wait of one call, or `None` for no limit but the call's own.
        first_delay_s: first pause between probe rounds; it doubles up to `max_delay_s`,
            so a replica that comes back is noticed within `max_delay_s`.
        max_delay_s: longest pause between probe rounds.
    """

    def __init__(
        self,
        router: PoolRouter,
        health_failure: Callable[[str], Awaitable[str | None]],
        *,
        wait_s: float | None = DEFAULT_UNAVAILABLE_WAIT_S,
        first_delay_s: float = 0.25,
        max_delay_s: float = 2.0,
    ) -> None:
        self._router = router
        self._health_failure = health_failure
        self.wait_s = wait_s
        self._first_delay_s = first_delay_s
        self._max_delay_s = max_delay_s
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None

    async def wait(self, *, deadline: float | None, timeout_s: float | None) -> None:
        """Return once a replica is healthy (at once if one is).

        Args:
            deadline: loop time by which the call must end (its timeout), or `None`.
            timeout_s: the call's timeout, for the message.

        Raises:
            ReplicaUnavailable: (not retryable) no replica came back within `wait_s` or
                before `deadline`; the message gives each replica's state, since when
                and why it is down.
        """
        if self._router.any_healthy():
            return
        loop = asyncio.get_running_loop()
        began = loop.time()
        limit = "the pool's `unavailable_wait_s`"
        until = None if self.wait_s is None else began + self.wait_s
        if deadline is not None and (until is None or deadline < until):
            until, limit = deadline, f"the request's `timeout_s` of {timeout_s:g} s"
        self._waiting += 1
        try:
            if self._task is None or self._task.done():
                self._task = loop.create_task(self._probe_until_back(), name="budgetflow-pool-recovery")
            found = await self._router.wait_for_healthy(
                None if until is None else max(0.0, until - loop.time())
            )
        finally:
            self._waiting -= 1
        waited = loop.time() - began
        if found:
            _log.info("pool %s: a replica came back after %.1f s", self._router.pool.name, waited)
            return
        error = ReplicaUnavailable(
            f"no healthy replica in pool `{self._router.pool.name}` after waiting {waited:.1f} s"
            f" ({limit}): {self._router.describe_replicas()}; start or fix the replicas (their"
            " logs say why they stopped), or raise `unavailable_wait_s` to wait longer for them"
        )
        raise error

    async def _probe_until_back(self) -> None:
        delay = self._first_delay_s
        while self._waiting > 0 and not self._router.any_healthy():
            down = [r for r in self._router.replicas if not self._router.is_healthy(r)]
            await asyncio.gather(*(self._probe(r) for r in down))
            if await self._router.wait_for_healthy(delay):
                return
            delay = min(2 * delay, self._max_delay_s)

    async def _probe(self, replica: str) -> None:
        # A failed probe changes nothing: the replica is down already, and why it went
        # down says more than the probes that follow.
        if await self._health_failure(replica) is None:
            _log.info("replica %s answers its health check again: back in rotation", replica)
            self._router.mark_up(replica)

    async def aclose(self) -> None:
        """Stop the probing task."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
