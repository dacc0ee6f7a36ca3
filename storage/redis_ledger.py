"""`RedisLedger`: one run's budget shared by every worker process, in Redis.

Same semantics as `orchestrator.ledger.InProcessLedger` (reserve the worst
case, settle to the actual cost, charge an overrun only as far as the budget
allows and count the rest in `overrun_nano`), with each `reserve` and each
`settle` a single Lua script that Redis runs atomically. So the invariant

    spent + reserved <= budget

holds across any number of clients and processes. Scripts are sent with
EVALSHA and loaded on the first `NOSCRIPT` reply.

Keys (see `storage.redis_keys`): a hash of totals and a hash of open
reservations per run. Lua numbers are doubles, so amounts must stay below
2**53 nano-USD (about 9 million USD); larger values are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError, ResponseError

from orchestrator.errors import ConfigError, StorageError
from orchestrator.ledger import LedgerSnapshot, Reservation
from storage.redis_keys import ledger_held_key, ledger_totals_key

__all__ = ["MAX_LEDGER_NANO", "RedisLedger"]

MAX_LEDGER_NANO = 2**53 - 1
"""Largest amount (nano-USD) the ledger's scripts handle exactly."""

_NO_LEDGER = "BUDGETFLOW_NO_LEDGER"
_UNKNOWN = "BUDGETFLOW_UNKNOWN_RESERVATION"
_DUPLICATE = "BUDGETFLOW_DUPLICATE_RESERVATION"

# KEYS: totals, held. ARGV: budget. Returns the ledger's budget (existing or new).
_CREATE = """
local budget = redis.call('HGET', KEYS[1], 'budget')
if budget then return budget end
redis.call('HSET', KEYS[1], 'budget', ARGV[1], 'spent', 0, 'reserved', 0, 'overrun', 0)
return ARGV[1]
"""

# KEYS: totals, held. ARGV: reservation id, amount. Returns 1 if held, 0 if it does not fit.
_RESERVE = f"""
local t = redis.call('HMGET', KEYS[1], 'budget', 'spent', 'reserved')
if not t[1] then return redis.error_reply('{_NO_LEDGER}') end
if tonumber(t[2]) + tonumber(t[3]) + tonumber(ARGV[2]) > tonumber(t[1]) then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
  return redis.error_reply('{_DUPLICATE}')
end
redis.call('HINCRBY', KEYS[1], 'reserved', ARGV[2])
return 1
"""

# KEYS: totals, held. ARGV: reservation id, actual cost, release-only flag ('1': give the
# money back without charging; an unknown id is then not an error). Returns the charge.
_SETTLE = f"""
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then
  if ARGV[3] == '1' then return 0 end
  return redis.error_reply('{_UNKNOWN}')
end
redis.call('HDEL', KEYS[2], ARGV[1])
held = tonumber(held)
local actual = tonumber(ARGV[2])
local t = redis.call('HMGET', KEYS[1], 'budget', 'spent', 'reserved')
if not t[1] then return redis.error_reply('{_NO_LEDGER}') end
local spent = tonumber(t[2])
local reserved = tonumber(t[3]) - held
local charged = actual
if actual > held then
  charged = math.min(actual, tonumber(t[1]) - spent - reserved)
end
redis.call('HSET', KEYS[1], 'spent', string.format('%d', spent + charged),
           'reserved', string.format('%d', reserved))
if actual > charged then
  redis.call('HINCRBY', KEYS[1], 'overrun', string.format('%d', actual - charged))
end
return charged
"""


class RedisLedger:
    """A `Ledger` for one run whose state lives in Redis, shared by all processes.

    The process that starts the run creates the ledger with
    `await RedisLedger.create(client, run_id, budget_nano)`; other workers
    join it with `RedisLedger(client, run_id)` (or `create` with the same
    budget, which is idempotent).
    """

    def __init__(self, client: Redis, run_id: str) -> None:
        """Join the ledger of `run_id` (no I/O; the ledger must have been created).

        Args:
            client: an async Redis client (any `decode_responses`).
            run_id: the run whose budget this is.
        """
        self._client = client
        self._run_id = run_id
        self._keys = [ledger_totals_key(run_id), ledger_held_key(run_id)]
        self._reserve_script = client.register_script(_RESERVE)
        self._settle_script = client.register_script(_SETTLE)
        # Reservation ids are unique across processes: a random token per ledger object.
        self._token = uuid.uuid4().hex[:12]
        self._ids = itertools.count()

    @classmethod
    async def create(cls, client: Redis, run_id: str, budget_nano: int) -> RedisLedger:
        """Create the ledger of `run_id` with `budget_nano`, or join it if it exists with it.

        Raises:
            ValueError: the budget is not positive or too large.
            ConfigError: the run already has a ledger with another budget.
            StorageError: Redis cannot be reached.
        """
        if not 0 < budget_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"budget must be between 1 and {MAX_LEDGER_NANO} nano-USD, got {budget_nano}")
        ledger = cls(client, run_id)
        script = client.register_script(_CREATE)
        existing = int(await ledger._call(script, budget_nano))
        if existing != budget_nano:
            raise ConfigError(
                f"run `{run_id}` already has a Redis ledger with a budget of {existing} nano-USD, "
                f"not {budget_nano}; join it with `RedisLedger(client, run_id)` or use a new run id"
            )
        return ledger

    @property
    def run_id(self) -> str:
        """The run whose budget this is."""
        return self._run_id

    async def reserve(self, amount_nano: int) -> Reservation | None:
        """Hold `amount_nano` if it fits, else return `None` (nothing changes).

        If the caller is cancelled while the script runs, the hold (if it was
        made) is released before `CancelledError` propagates, so a cancelled
        reservation never leaks budget.
        """
        if amount_nano < 0:
            raise ValueError(f"cannot reserve a negative amount ({amount_nano})")
        if amount_nano > MAX_LEDGER_NANO:
            return None
        reservation_id = f"{self._token}-{next(self._ids)}"
        try:
            held = int(await self._call(self._reserve_script, reservation_id, amount_nano))
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._call(self._settle_script, reservation_id, 0, 1))
            raise
        if not held:
            return None
        return Reservation(reservation_id=reservation_id, amount_nano=amount_nano)

    async def settle(self, reservation: Reservation, actual_nano: int) -> int:
        """Release `reservation` and charge `actual_nano`; return what was charged.

        Raises:
            ValueError: negative or too large cost, or an unknown or already settled reservation.
            StorageError: Redis failed.
        """
        if actual_nano < 0:
            raise ValueError(f"cannot settle a negative cost ({actual_nano})")
        if actual_nano > MAX_LEDGER_NANO:
            raise ValueError(
                f"cost {actual_nano} nano-USD is above the Redis ledger's limit of "
                f"{MAX_LEDGER_NANO}; check the usage the provider reported"
            )
        charged = await self._call(self._settle_script, reservation.reservation_id, actual_nano, 0)
        return int(charged)

    async def snapshot(self) -> LedgerSnapshot:
        """Current totals, read in one command."""
        try:
            values = await self._client.hmget(self._keys[0], ["budget", "spent", "reserved", "overrun"])
        except RedisError as error:
            raise self._redis_error(error) from error
        budget, spent, reserved, overrun = values
        if budget is None:
            raise self._no_ledger()
        return LedgerSnapshot(
            budget_nano=_int(budget),
            spent_nano=_int(spent),
            reserved_nano=_int(reserved),
            overrun_nano=_int(overrun),
        )

    async def delete(self) -> None:
        """Remove the ledger's keys (when the run is over and its totals are recorded)."""
        try:
            await self._client.delete(*self._keys)
        except RedisError as error:
            raise self._redis_error(error) from error

    async def _call(self, script: AsyncScript, *args: str | int) -> Any:
        try:
            return await script(keys=self._keys, args=list(args))
        except ResponseError as error:
            message = str(error)
            if _UNKNOWN in message:
                raise ValueError(f"reservation `{args[0]}` is unknown or settled") from None
            if _NO_LEDGER in message:
                raise self._no_ledger() from None
            raise self._redis_error(error) from error
        except RedisError as error:
            raise self._redis_error(error) from error

    def _no_ledger(self) -> StorageError:
        return StorageError(
            f"run `{self._run_id}` has no Redis ledger; create it with "
            "`await RedisLedger.create(client, run_id, budget_nano)`"
        )

    def _redis_error(self, error: RedisError) -> StorageError:
        return StorageError(
            f"Redis ledger of run `{self._run_id}` failed: {error}; check that Redis is reachable"
        )


def _int(value: bytes | str | None) -> int:
    return 0 if value is None else int(value)
