"""`RedisLedger`: one run's budget shared by every worker process, in Redis.

Same semantics as `orchestrator.ledger.InProcessLedger` (reserve the worst
case, settle to the actual cost, charge an overrun only as far as the budget
allows and count the rest in `overrun_nano`), with each operation a single
Lua script that Redis runs atomically. So the invariant

    spent + reserved <= budget

holds across any number of clients and processes. What else keeps it true
when Redis or the network fails (see `docs/ledger.md`):

- **An epoch.** `create` makes a brand-new ledger with a random epoch and
  refuses if the run already has one; workers `join` with that epoch and
  every script checks it. A ledger whose keys are gone (Redis restarted
  without persistence) is never silently re-created: every operation fails
  closed until an operator rebuilds it with `restore`, under a new epoch.
- **A write sequence.** Every write bumps `seq` and every reply carries it;
  a client sends the highest it has seen, and a ledger whose `seq` is lower
  (Redis came back from an older snapshot or a lagging replica) marks
  itself broken and refuses all work.
- **Request ids.** The client picks each reservation id before the first
  attempt and Redis remembers every id's outcome (held, refused, settled
  with its charge, released), so a retried or late-arriving request gets
  the first answer instead of holding or charging twice. Operations are
  retried on connection errors and timeouts for `LedgerRetry.window_s`.

Scripts are sent with EVALSHA and loaded on the first `NOSCRIPT` reply. Lua
numbers are doubles, so amounts must stay below 2**53 nano-USD (about
9 million USD); larger values are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    MasterDownError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from orchestrator.errors import ConfigError, StorageError
from orchestrator.ledger import LedgerSnapshot, Reservation
from storage.redis_keys import ledger_keys

__all__ = ["MAX_LEDGER_NANO", "LedgerRetry", "RedisLedger"]

MAX_LEDGER_NANO = 2**53 - 1
"""Largest amount (nano-USD) the ledger's scripts handle exactly."""

_T = TypeVar("_T")

# Every script takes KEYS totals, held, closed and ARGV[1] the epoch ('' reads any
# epoch), ARGV[2] the highest write sequence the client has seen. Replies are
# {answer, seq, spent, reserved, overrun, budget}.
_PRELUDE = """
local t = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'budget', 'spent', 'reserved', 'overrun', 'broken')
if not t[1] then return redis.error_reply('BUDGETFLOW_LOST') end
if ARGV[1] ~= '' and t[1] ~= ARGV[1] then return redis.error_reply('BUDGETFLOW_EPOCH') end
if t[7] then return redis.error_reply('BUDGETFLOW_BROKEN ' .. t[7]) end
local seq, budget = tonumber(t[2]), tonumber(t[3])
local spent, reserved, overrun = tonumber(t[4]), tonumber(t[5]), tonumber(t[6])
if seq < tonumber(ARGV[2]) then
  local why = 'write #' .. seq .. ' is its newest but a client saw write #' .. ARGV[2]
  redis.call('HSET', KEYS[1], 'broken', why)
  return redis.error_reply('BUDGETFLOW_BROKEN ' .. why)
end
local function reply(answer) return {answer, seq, spent, reserved, overrun, budget} end
local function bump()
  seq = seq + 1
  redis.call('HSET', KEYS[1], 'seq', string.format('%d', seq))
end
-- Settling (ARGV[3] reservation id, [4] actual cost, [5] '1' to release) a reservation no
-- longer held: a release closes an id never held; a retry answers what was charged.
local function settle_closed(answer)
  local closed = redis.call('HGET', KEYS[3], ARGV[3])
  if ARGV[5] == '1' then
    if not closed then
      bump()
      redis.call('HSET', KEYS[3], ARGV[3], 'released')
    end
    return answer(0)
  end
  if not closed or closed == 'refused' or closed == 'released' then
    return redis.error_reply('BUDGETFLOW_UNKNOWN')
  end
  local sep = string.find(closed, ':', 1, true)
  if string.sub(closed, 1, sep - 1) ~= ARGV[4] then
    return redis.error_reply('BUDGETFLOW_SETTLED ' .. closed)
  end
  return answer(tonumber(string.sub(closed, sep + 1)))
end
-- Settling a held reservation: the run is charged the actual cost, beyond its budget as
-- overrun; the id is closed with what it was charged. Returns the charge.
local function settle_held(held)
  bump()
  local actual = tonumber(ARGV[4])
  reserved = reserved - held
  local charged = actual
  if actual > held then charged = math.min(actual, budget - spent - reserved) end
  spent = spent + charged
  overrun = overrun + actual - charged
  redis.call('HDEL', KEYS[2], ARGV[3])
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[4] .. ':' .. string.format('%d', charged))
  redis.call('HSET', KEYS[1], 'spent', string.format('%d', spent),
             'reserved', string.format('%d', reserved), 'overrun', string.format('%d', overrun))
  return charged
end
"""

# ARGV[3] epoch's budget, [4] spent, [5] overrun, [6] '1' to replace an existing ledger.
# The same epoch already in place is a retry of this very call: answer as if it ran.
_INSTALL = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch ~= ARGV[1] then
  if ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) > 0 then
    return redis.error_reply('BUDGETFLOW_EXISTS')
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', '1', 'budget', ARGV[3], 'spent', ARGV[4],
             'reserved', '0', 'overrun', ARGV[5])
end
local t = redis.call('HMGET', KEYS[1], 'seq', 'spent', 'reserved', 'overrun', 'budget')
return {1, tonumber(t[1]), tonumber(t[2]), tonumber(t[3]), tonumber(t[4]), tonumber(t[5])}
"""

# ARGV[3] reservation id, [4] amount. Answer 1 held, 0 refused, -1 the id was used and closed.
_RESERVE = f"""{_PRELUDE}
local held = redis.call('HGET', KEYS[2], ARGV[3])
if held then
  if held ~= ARGV[4] then return redis.error_reply('BUDGETFLOW_HELD ' .. held) end
  return reply(1)
end
local closed = redis.call('HGET', KEYS[3], ARGV[3])
if closed == 'refused' then return reply(0) end
if closed then return reply(-1) end
bump()
if spent + reserved + tonumber(ARGV[4]) > budget then
  redis.call('HSET', KEYS[3], ARGV[3], 'refused')
  return reply(0)
end
reserved = reserved + tonumber(ARGV[4])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[1], 'reserved', string.format('%d', reserved))
return reply(1)
"""

# ARGV[3] reservation id, [4] actual cost, [5] '1' to release (charge nothing; an id
# never held is closed, so a late reserve with it cannot hold). Answer: the charge.
_SETTLE = f"""{_PRELUDE}
local held = redis.call('HGET', KEYS[2], ARGV[3])
if not held then return settle_closed(reply) end
return reply(settle_held(tonumber(held)))
"""

_SNAPSHOT = f"""{_PRELUDE}
return reply(0)
"""

# Deleting a lost or broken ledger is allowed; deleting another epoch's is not.
_DELETE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and epoch ~= ARGV[1] then return redis.error_reply('BUDGETFLOW_EPOCH') end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {0, 0, 0, 0, 0, 0}
"""


@dataclass(frozen=True, kw_only=True)
class LedgerRetry:
    """How long a ledger operation keeps trying while Redis does not answer.

    Every operation carries its own request id, so retrying is safe: it is
    retried on connection errors, timeouts, `LOADING` (Redis reading its AOF
    after a restart), `READONLY`, `MASTERDOWN` and `TRYAGAIN` (a failover in
    progress), with exponential backoff and jitter, until it gets an answer
    or `window_s` has passed since its first attempt.
    """

    window_s: float = 30.0
    """Longest time one operation keeps retrying, from its first attempt. The
    default rides out a Redis restart and a stall of many seconds (a slow
    fork, swapping); past it the operation raises `StorageError`."""
    attempt_timeout_s: float = 2.0
    """Longest wait for one attempt, including the wait for a pooled
    connection. A stalled Redis answers nothing; without this bound a client
    without a socket timeout would wait forever."""
    first_backoff_s: float = 0.05
    """Pause after the first failed attempt; it doubles after each failure."""
    max_backoff_s: float = 1.0
    """Longest pause between two attempts."""

    def __post_init__(self) -> None:
        """Check that the timings are positive and fit in the window."""
        fields = {
            "window_s": self.window_s,
            "attempt_timeout_s": self.attempt_timeout_s,
            "first_backoff_s": self.first_backoff_s,
            "max_backoff_s": self.max_backoff_s,
        }
        for name, value in fields.items():
            if not value > 0:
                raise ConfigError(f"LedgerRetry `{name}` must be positive, got {value}")
        if self.attempt_timeout_s > self.window_s:
            raise ConfigError(
                f"LedgerRetry `attempt_timeout_s` ({self.attempt_timeout_s}) is longer than"
                f" `window_s` ({self.window_s}); shorten the attempt or widen the window"
            )


class _Exists(ConfigError):
    """`create` found a ledger for the run."""


class _Replaced(StorageError):
    """The run's ledger has another epoch than the client's."""


class _Unanswered(StorageError):
    """Redis gave no answer within the retry window."""


_RETRYABLE = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    ReadOnlyError,
    MasterDownError,
    TryAgainError,
)


class RedisLedger:
    """A `Ledger` for one run whose state lives in Redis, shared by all processes.

    The process that starts the run creates the ledger, once, and hands its
    epoch to the workers:

        ledger = await RedisLedger.create(client, run_id, budget_nano)
        ...  # send run_id and ledger.epoch to the workers
        worker_ledger = await RedisLedger.join(client, run_id, epoch)

    `RedisLedger(client, run_id)` without an epoch can only read (`snapshot`).
    """

    def __init__(
        self, client: Redis, run_id: str, epoch: str | None = None, *, retry: LedgerRetry | None = None
    ) -> None:
        """Use the ledger of `run_id` (no I/O; `join` also checks that it exists).

        Args:
            client: an async Redis client (any `decode_responses`).
            run_id: the run whose budget this is.
            epoch: the epoch its creator returned; without it the object can only read.
            retry: how long to keep trying when Redis does not answer; default `LedgerRetry()`.
        """
        self._client = client
        self._run_id = run_id
        self._epoch = epoch
        self._keys = ledger_keys(run_id)
        self._retry = LedgerRetry() if retry is None else retry
        self._install_script = client.register_script(_INSTALL)
        self._reserve_script = client.register_script(_RESERVE)
        self._settle_script = client.register_script(_SETTLE)
        self._snapshot_script = client.register_script(_SNAPSHOT)
        self._delete_script = client.register_script(_DELETE)
        # Reservation ids are unique across processes: a random token per ledger object.
        self._token = secrets.token_hex(8)
        self._ids = itertools.count()
        self._jitter = random.Random()
        self._seen: list[int] = [0, 0, 0, 0, 0, 0]  # the newest reply: answer, seq, spent, reserved, ...
        self._background: set[asyncio.Task[Any]] = set()
        # Settles and releases Redis did not answer: id -> (cost, release?), sent again later.
        self._doubtful: dict[str, tuple[int, bool]] = {}

    @classmethod
    async def create(
        cls, client: Redis, run_id: str, budget_nano: int, *, retry: LedgerRetry | None = None
    ) -> RedisLedger:
        """Create a new ledger for `run_id` with `budget_nano` and a fresh random epoch.

        Call it once per run, in the process that starts it; workers `join`.
        Retrying a `create` whose reply was lost is safe (it carries its epoch).

        Raises:
            ValueError: the budget is not positive or too large.
            ConfigError: the run already has a ledger (or leftover keys of one).
            StorageError: Redis did not answer within the retry window.
        """
        if not 0 < budget_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"budget must be between 1 and {MAX_LEDGER_NANO} nano-USD, got {budget_nano}")
        ledger = cls(client, run_id, secrets.token_hex(8), retry=retry)
        await ledger._install(budget_nano, spent_nano=0, replace=False)
        return ledger

    @classmethod
    async def join(
        cls, client: Redis, run_id: str, epoch: str, *, retry: LedgerRetry | None = None
    ) -> RedisLedger:
        """Join the ledger of `run_id` created (or restored) with `epoch`.

        Raises:
            ConfigError: the run's ledger has another epoch.
            StorageError: the run has no ledger (never created, or lost), it was
                rolled back, or Redis did not answer.
        """
        ledger = cls(client, run_id, epoch, retry=retry)
        try:
            await ledger.snapshot()
        except _Replaced:
            raise ConfigError(
                f"run `{run_id}`'s Redis ledger has another epoch than `{epoch}`; join with the epoch"
                " its creator returned (`ledger.epoch`) or, after a restore, the restored one"
            ) from None
        return ledger

    @classmethod
    async def restore(
        cls,
        client: Redis,
        run_id: str,
        *,
        budget_nano: int,
        spent_nano: int,
        replace: bool = False,
        retry: LedgerRetry | None = None,
    ) -> RedisLedger:
        """Rebuild a lost or rolled-back ledger from spend proven elsewhere, under a new epoch.

        For operators, after stopping the run's workers: nothing is held in the
        new ledger, and clients of the old epoch are refused. `spent_nano` is
        the run's recorded cost (the calling tree's sum of call costs); what
        exceeds the budget is counted as overrun.

        Args:
            client: an async Redis client.
            run_id: the run whose ledger to rebuild.
            budget_nano: the run's budget.
            spent_nano: what the run has spent, proven by its records.
            replace: drop the ledger the run still has (e.g. a rolled-back one).
            retry: how long to keep trying when Redis does not answer.

        Raises:
            ValueError: the budget or the spend is out of range.
            ConfigError: the run still has a ledger and `replace` is false.
            StorageError: Redis did not answer within the retry window.
        """
        if not 0 < budget_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"budget must be between 1 and {MAX_LEDGER_NANO} nano-USD, got {budget_nano}")
        if not 0 <= spent_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"spend must be between 0 and {MAX_LEDGER_NANO} nano-USD, got {spent_nano}")
        ledger = cls(client, run_id, secrets.token_hex(8), retry=retry)
        try:
            await ledger._install(budget_nano, spent_nano=spent_nano, replace=replace)
        except _Exists:
            raise ConfigError(
                f"run `{run_id}` still has a Redis ledger; stop its workers and pass `replace=True`"
                " to replace it (its open holds are dropped)"
            ) from None
        return ledger

    @property
    def run_id(self) -> str:
        """The run whose budget this is."""
        return self._run_id

    @property
    def epoch(self) -> str | None:
        """The incarnation of the ledger this client works on; workers `join` with it."""
        return self._epoch

    async def reserve(self, amount_nano: int, *, reservation_id: str | None = None) -> Reservation | None:
        """Hold `amount_nano` if it fits, else return `None` (nothing is held).

        Retrying with the same `reservation_id` returns the first answer and
        never holds twice; by default the ledger picks a unique id. If the
        caller is cancelled, or Redis does not answer within the retry window,
        the id is released (closed) before the error propagates; if Redis does
        not answer that either, the ledger releases it with its next operation
        that Redis answers. So no hold leaks.

        Raises:
            ValueError: a negative amount, or a `reservation_id` already used.
            StorageError: the ledger is lost, replaced or rolled back, or
                Redis did not answer (the message says whether the id was released).
        """
        if amount_nano < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount_nano})")
        self._require_epoch("reserve")
        if amount_nano > MAX_LEDGER_NANO:
            return None
        rid = f"{self._token}-{next(self._ids)}" if reservation_id is None else reservation_id
        if not rid:
            raise ValueError("a reservation id cannot be empty")
        try:
            answer = (await self._call(self._reserve_script, "reserve", rid, amount_nano, rid=rid))[0]
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await self._finish(self._close(rid, 0, release=True, once=False))
            raise
        except _Unanswered as error:
            try:
                await self._finish(self._close(rid, 0, release=True, once=True))
            except StorageError:
                raise StorageError(
                    f"{error}; reservation `{rid}` may be held: this ledger releases it with its next"
                    f" operation that Redis answers, or release it with `await ledger.release('{rid}')`"
                ) from error
            raise StorageError(f"{error}; reservation `{rid}` was released, nothing is held") from error
        if answer == -1:
            raise ValueError(f"reservation id `{rid}` was already used and closed; use a new id")
        if answer == 0:
            return None
        return Reservation(reservation_id=rid, amount_nano=amount_nano)

    async def settle(self, reservation: Reservation, actual_nano: int) -> int:
        """Release `reservation` and charge `actual_nano`; return what was charged.

        Settling again with the same cost (a retry after a lost reply) returns
        the same charge and charges nothing more. If the caller is cancelled,
        the settle still completes before `CancelledError` propagates; if Redis
        does not answer within the retry window, the ledger settles it again
        with its next operation that Redis answers (the money was spent).

        Raises:
            ValueError: negative or too large cost, an unknown reservation, or
                one already settled with another cost.
            StorageError: the ledger is lost, replaced or rolled back, or
                Redis did not answer (the settle is then retried as above).
        """
        if actual_nano < 0:
            raise ValueError(f"cannot settle a negative cost ({actual_nano})")
        if actual_nano > MAX_LEDGER_NANO:
            raise ValueError(
                f"cost {actual_nano} nano-USD is above the Redis ledger's limit of "
                f"{MAX_LEDGER_NANO}; check the usage the provider reported"
            )
        self._require_epoch("settle")
        rid = reservation.reservation_id
        try:
            return await self._finish(self._close(rid, actual_nano, release=False, once=False))
        except _Unanswered as error:
            raise StorageError(
                f"{error}; settling reservation `{rid}` for {actual_nano} nano-USD may not have happened:"
                " this ledger settles it again with its next operation that Redis answers (it is"
                " charged once), or settle it again with the same cost"
            ) from error

    async def release(self, reservation_id: str) -> None:
        """Give back what `reservation_id` holds without charging; idempotent.

        An id that is not held (never reserved, refused, or settled) is left
        as it is, and a reserve with it arriving later holds nothing.
        """
        self._require_epoch("release")
        await self._finish(self._close(reservation_id, 0, release=True, once=False))

    async def snapshot(self) -> LedgerSnapshot:
        """Current totals, read in one script (which also checks epoch and sequence)."""
        _, _, spent, reserved, overrun, budget = await self._call(self._snapshot_script, "snapshot")
        return LedgerSnapshot(
            budget_nano=budget, spent_nano=spent, reserved_nano=reserved, overrun_nano=overrun
        )

    async def delete(self) -> None:
        """Remove the ledger's keys (when the run is over and its totals are recorded)."""
        self._require_epoch("delete")
        await self._call(self._delete_script, "delete")

    async def _install(self, budget_nano: int, *, spent_nano: int, replace: bool) -> None:
        spent = min(spent_nano, budget_nano)
        args = (budget_nano, spent, spent_nano - spent, int(replace))
        await self._call(self._install_script, "create", *args)

    async def _close(self, rid: str, actual_nano: int, *, release: bool, once: bool) -> int:
        """Settle or release `rid`; if Redis does not answer, remember to do it later."""
        try:
            reply = await self._call(
                self._settle_script,
                "release" if release else "settle",
                rid,
                actual_nano,
                int(release),
                once=once,
                rid=rid,
            )
        except _Unanswered:
            self._doubtful[rid] = (actual_nano, release)
            raise
        self._doubtful.pop(rid, None)
        return reply[0]

    async def _close_doubtful(self) -> None:
        """Send the settles and releases Redis did not answer, now that it answers again."""
        for rid, (actual_nano, release) in list(self._doubtful.items()):
            try:
                await self._close(rid, actual_nano, release=release, once=True)
            except ValueError:
                self._doubtful.pop(rid, None)  # nothing left to do for it
            except StorageError:
                return

    async def _finish(self, write: Coroutine[Any, Any, _T]) -> _T:
        """Run `write` to its end even if the caller is cancelled, then let the cancel through."""
        task = asyncio.ensure_future(write)
        self._background.add(task)
        task.add_done_callback(self._forget)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # A second cancel leaves the write running in the background (kept in `_background`).
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            raise

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: its caller saw it, or had gone

    def _require_epoch(self, op: str) -> None:
        if self._epoch is None:
            raise ConfigError(
                f"this RedisLedger of run `{self._run_id}` has no epoch, so it can only read (`snapshot`);"
                f" to {op}, join the ledger with `await RedisLedger.join(client, run_id, epoch)`"
            )

    def _request(self, rid: str | None) -> tuple[list[str], list[str | int]]:
        """The keys a script about reservation `rid` touches and the arguments it appends.

        The run's own keys and nothing more; `storage.shared_budgets.SharedBudgetLedger`
        adds the keys of the shared budgets the reservation is held in.
        """
        return self._keys, []

    def _replied(self, op: str, rid: str | None, values: list[int]) -> None:
        """Hook: Redis answered `op` about `rid` with `values` (a subclass reads its own part)."""

    async def _call(
        self, script: AsyncScript, op: str, *args: str | int, once: bool = False, rid: str | None = None
    ) -> list[int]:
        """Run `script` until Redis answers or the retry window closes (`once`: one attempt).

        `rid` is the reservation the operation is about (its keys: `_request`)."""
        keys, extra = self._request(rid)
        loop = asyncio.get_running_loop()
        policy = self._retry
        deadline = loop.time() + policy.window_s
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout(policy.attempt_timeout_s):
                    reply = await script(keys=keys, args=[*self._identity(), *args, *extra])
            except (AuthenticationError, AuthorizationError) as error:
                raise self._failed(error) from error
            except _RETRYABLE as error:
                delay = min(policy.max_backoff_s, policy.first_backoff_s * 2 ** min(attempt - 1, 30))
                delay *= 0.5 + 0.5 * self._jitter.random()
                if once or loop.time() + delay >= deadline:
                    raise _Unanswered(
                        f"the Redis ledger of run `{self._run_id}` did not answer `{op}` within"
                        f" {policy.window_s:g} s ({attempt} attempts; last: {type(error).__name__}"
                        f" {error}); check that Redis is reachable"
                    ) from error
                await asyncio.sleep(delay)
                continue
            except ResponseError as error:
                raise self._refusal(error, op, args) from None
            except RedisError as error:
                raise self._failed(error) from error
            values = [int(v) for v in reply]
            if values[1] > self._seen[1]:
                self._seen = values
            self._replied(op, rid, values)
            if self._doubtful and not once:
                await self._close_doubtful()
            return values

    def _identity(self) -> tuple[str, int]:
        """The epoch and the newest write seen; a reader without an epoch checks neither."""
        if self._epoch is None:
            return "", 0
        return self._epoch, self._seen[1]

    def _refusal(self, error: ResponseError, op: str, args: tuple[str | int, ...]) -> Exception:
        """The exception for a script's refusal (or any other error reply)."""
        message = str(error)
        run = self._run_id
        if "BUDGETFLOW_LOST" in message:
            _, seq, spent, reserved, *_ = self._seen
            seen = (
                f" This client last saw spent {spent} and reserved {reserved} nano-USD (write #{seq})."
                if seq
                else ""
            )
            return StorageError(
                f"the Redis ledger of run `{run}` is gone: Redis lost its keys (restarted without"
                " persistence, flushed or evicted them), so nothing more can be reserved or settled"
                f" for this run and its budget cannot be exceeded.{seen} Stop the run's workers,"
                f" then rebuild the ledger from the spend in its calling tree (`budgetflow runs show {run}`)"
                f" with `await RedisLedger.restore(client, '{run}', budget_nano=..., spent_nano=...)`"
                " and join the workers with its new epoch"
            )
        if "BUDGETFLOW_EPOCH" in message:
            return _Replaced(
                f"the Redis ledger of run `{run}` is no longer the one this client joined (epoch"
                f" `{self._epoch}`): it was re-created or restored, and this client's holds are not in"
                " it; stop this worker, or join the restored ledger with its new epoch"
            )
        if "BUDGETFLOW_BROKEN" in message:
            why = message.split("BUDGETFLOW_BROKEN", 1)[1].strip()
            return StorageError(
                f"the Redis ledger of run `{run}` was rolled back ({why}): Redis lost acknowledged"
                " writes (it came back from an older snapshot or AOF, or failed over to a lagging"
                " replica), so it refuses all work; stop the run's workers and rebuild it with"
                f" `await RedisLedger.restore(client, '{run}', budget_nano=..., spent_nano=...,"
                " replace=True)` from the spend in its calling tree"
            )
        if "BUDGETFLOW_EXISTS" in message:
            return _Exists(
                f"run `{run}` already has a Redis ledger and `create` only makes new ones; workers join"
                " it with `await RedisLedger.join(client, run_id, epoch)` and the epoch its creator"
                " returned (`ledger.epoch`); to rebuild a lost ledger use `RedisLedger.restore`"
            )
        if "BUDGETFLOW_UNKNOWN" in message:
            return ValueError(f"reservation `{args[0]}` is unknown or settled")
        if "BUDGETFLOW_SETTLED" in message:
            actual, charged = message.split("BUDGETFLOW_SETTLED", 1)[1].strip().split(":")
            return ValueError(
                f"reservation `{args[0]}` was already settled for a cost of {actual} nano-USD"
                f" (charged {charged}), not {args[1]}; settle each reservation once"
            )
        if "BUDGETFLOW_HELD" in message:
            held = message.split("BUDGETFLOW_HELD", 1)[1].strip()
            return ValueError(
                f"reservation id `{args[0]}` already holds {held} nano-USD, not {args[1]}; use a new id"
            )
        return self._failed(error)

    def _failed(self, error: RedisError) -> StorageError:
        return StorageError(
            f"the Redis ledger of run `{self._run_id}` failed: {error}; check that Redis is reachable"
        )
