"""`SharedBudgetLedger`: a run's Redis ledger that also holds every call in the budgets above the run.

A `storage.RedisLedger` whose reserve, settle and release scripts take, besides the
run's keys, the counters of each shared budget above the run in the current window
(`storage.shared_budgets`). One script, one EVALSHA, all keys: Redis runs it without
interleaving any other command, so

    for the run and for every budget above it:  spent + reserved <= limit

holds under any concurrency, across processes: a reservation either fits in all of them
and is held in all of them, or is refused and nothing is held anywhere. Settle and
release close the hold in the run and in the very budget windows it was taken from (the
keys are stored with the hold and checked), once per request id: the run's `held` and
`closed` hashes decide, for all of them together, whether a request already acted.

Each settle also counts, per budget and window, how many of `BUDGET_THRESHOLDS` its
spend has passed; the settle that passes one reports it, so every crossing is reported
exactly once per window, to the run whose call crossed it (`take_crossings`, drained
by the executor into `BudgetThresholdCrossed` events).

The keys of one script span several hash slots, so shared budgets need one Redis
server (as the stack ships), not Redis Cluster.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis

from orchestrator.errors import StorageError
from orchestrator.events import BUDGET_THRESHOLDS, SharedBudgetView
from orchestrator.ledger import Reservation
from storage.redis_keys import ledger_keys, ledger_shared_key
from storage.redis_ledger import _PRELUDE, MAX_LEDGER_NANO, LedgerRetry, RedisLedger
from storage.shared_budgets import SharedBudget, read_budget_states

__all__ = ["SharedBudgetLedger"]

# KEYS: the run's totals, held, closed and shared (reservation id -> its budget keys),
# then one counter hash per shared budget. After each operation's own ARGV come the
# thresholds ('0.5,0.8,0.95') and, per budget, its limit and when its counters expire
# (seconds from now, 0: never). Replies are the run's six numbers, then per budget: spent,
# reserved, limit, thresholds passed before, thresholds passed after.
_SHARED = """
local n = #KEYS - 4
local S = {}
for i = 1, n do
  local h = redis.call('HMGET', KEYS[4 + i], 'spent', 'reserved', 'overrun', 'crossed')
  S[i] = {tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(ARGV[BASE + 2 * i - 1]),
          tonumber(h[4]) or 0, tonumber(h[3]) or 0, tonumber(h[4]) or 0}
end
local function sreply(answer)
  local r = reply(answer)
  for i = 1, n do
    local s = S[i]
    table.insert(r, s[1]); table.insert(r, s[2]); table.insert(r, s[3])
    table.insert(r, s[6]); table.insert(r, s[4])
  end
  return r
end
local function names()
  local k = {}
  for i = 1, n do k[i] = KEYS[4 + i] end
  return table.concat(k, '\\n')
end
local function fmt(x) return string.format('%d', x) end
"""

# ARGV[3] reservation id, [4] amount; BASE = 5.
_RESERVE = (
    _PRELUDE
    + _SHARED.replace("BASE", "5")
    + """
local amount = tonumber(ARGV[4])
local held = redis.call('HGET', KEYS[2], ARGV[3])
if held then
  if held ~= ARGV[4] then return redis.error_reply('BUDGETFLOW_HELD ' .. held) end
  return sreply(1)
end
local closed = redis.call('HGET', KEYS[3], ARGV[3])
if closed == 'refused' then return sreply(0) end
if closed then return sreply(-1) end
bump()
local fits = spent + reserved + amount <= budget
for i = 1, n do
  if S[i][1] + S[i][2] + amount > S[i][3] then fits = false end
end
if not fits then
  redis.call('HSET', KEYS[3], ARGV[3], 'refused')
  return sreply(0)
end
reserved = reserved + amount
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[1], 'reserved', fmt(reserved))
if n > 0 then
  for i = 1, n do
    local s = S[i]
    s[2] = s[2] + amount
    redis.call('HSET', KEYS[4 + i], 'limit', ARGV[5 + 2 * i - 1], 'reserved', fmt(s[2]))
    local expire = tonumber(ARGV[5 + 2 * i])
    if expire > 0 then redis.call('EXPIRE', KEYS[4 + i], expire) end
  end
  redis.call('HSET', KEYS[4], ARGV[3], names())
end
return sreply(1)
"""
)

# ARGV[3] reservation id, [4] actual cost, [5] '1' to release; BASE = 6. A hold is closed
# in the budget windows it was taken from: the caller must name exactly those.
_SETTLE = (
    _PRELUDE
    + _SHARED.replace("BASE", "6")
    + """
local held = redis.call('HGET', KEYS[2], ARGV[3])
if not held then return settle_closed(sreply) end
local stored = redis.call('HGET', KEYS[4], ARGV[3]) or ''
if stored ~= names() then return redis.error_reply('BUDGETFLOW_KEYS ' .. stored) end
held = tonumber(held)
local actual = tonumber(ARGV[4])
local charged = settle_held(held)
if n > 0 then
  local T = {}
  for t in string.gmatch(ARGV[6], '[^,]+') do table.insert(T, tonumber(t)) end
  for i = 1, n do
    local s = S[i]
    local limit = tonumber(redis.call('HGET', KEYS[4 + i], 'limit')) or s[3]
    s[3] = limit
    s[2] = s[2] - held
    local c = actual
    if actual > held then c = math.max(held, math.min(actual, limit - s[1] - s[2])) end
    s[1] = s[1] + c
    s[5] = s[5] + actual - c
    while s[4] < #T and s[1] >= T[s[4] + 1] * limit do s[4] = s[4] + 1 end
    redis.call('HSET', KEYS[4 + i], 'spent', fmt(s[1]), 'reserved', fmt(s[2]), 'overrun', fmt(s[5]),
               'crossed', fmt(s[4]))
    redis.call('HINCRBY', KEYS[1], 'shared:' .. KEYS[4 + i], fmt(actual))
  end
  redis.call('HDEL', KEYS[4], ARGV[3])
end
return sreply(charged)
"""
)

# As `RedisLedger`'s install (ARGV[3] budget, [4] spent, [5] overrun, [6] '1' to replace),
# [7] the thresholds, [8] n, then per budget now above the run: the start of its keys
# (`budget_totals_key(id, '')`) and its limit. KEYS after the run's four: those n budgets'
# keys in the current window, then every key the replaced ledger's holds name (else it
# refuses). Replacing a ledger (a crashed or fenced process's) brings each budget the run
# was charged in to what the run's records say it spent: its holds are released, and the
# difference between the new spend + overrun (from the records) and what its settles
# charged the budget (fields `shared:<key>` of the run's totals) is charged, or given
# back, in the budget's current window; past the limit, as overrun. So a budget's spend +
# overrun is always the sum of its runs' recorded calls, whatever the crash interrupted.
_INSTALL = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local n = tonumber(ARGV[8])
local total = tonumber(ARGV[4]) + tonumber(ARGV[5])
local charged = {}
if epoch ~= ARGV[1] then
  if ARGV[6] ~= '1' and redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) > 0 then
    return redis.error_reply('BUDGETFLOW_EXISTS')
  end
  local declared = {}
  for i = 5, #KEYS do declared[KEYS[i]] = true end
  local shared = redis.call('HGETALL', KEYS[4])
  for i = 1, #shared, 2 do
    for key in string.gmatch(shared[i + 1], '[^\\n]+') do
      if not declared[key] then return redis.error_reply('BUDGETFLOW_KEYS ' .. key) end
    end
  end
  local involved = {}
  for i = 1, #shared, 2 do
    local amount = tonumber(redis.call('HGET', KEYS[2], shared[i])) or 0
    for key in string.gmatch(shared[i + 1], '[^\\n]+') do
      local r = tonumber(redis.call('HGET', key, 'reserved')) or 0
      redis.call('HSET', key, 'reserved', string.format('%d', r - amount))
      involved[key] = true
    end
  end
  local old = redis.call('HGETALL', KEYS[1])
  for b = 1, n do
    local prefix = ARGV[8 + 2 * b - 1]
    local settled, seen = 0, false
    for i = 1, #old, 2 do
      if string.sub(old[i], 1, 7 + #prefix) == 'shared:' .. prefix then
        settled = settled + tonumber(old[i + 1]); seen = true
      end
    end
    for key in pairs(involved) do
      if string.sub(key, 1, #prefix) == prefix then seen = true end
    end
    if seen then
      local key, limit = KEYS[4 + b], tonumber(ARGV[8 + 2 * b])
      local h = redis.call('HMGET', key, 'spent', 'reserved', 'overrun')
      local sp, re, ov = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
      local delta = total - settled
      if delta >= 0 then
        local c = math.min(delta, math.max(0, limit - sp - re))
        sp = sp + c; ov = ov + delta - c
      else
        local back = math.min(-delta, ov)
        ov = ov - back; sp = math.max(0, sp + delta + back)
      end
      redis.call('HSET', key, 'limit', ARGV[8 + 2 * b], 'spent', string.format('%d', sp),
                 'reserved', string.format('%d', re), 'overrun', string.format('%d', ov))
      charged[key] = total
    end
  end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', ARGV[1], 'seq', '1', 'budget', ARGV[3], 'spent', ARGV[4],
             'reserved', '0', 'overrun', ARGV[5])
  for key, amount in pairs(charged) do
    redis.call('HSET', KEYS[1], 'shared:' .. key, string.format('%d', amount))
  end
end
local t = redis.call('HMGET', KEYS[1], 'seq', 'spent', 'reserved', 'overrun', 'budget')
return {1, tonumber(t[1]), tonumber(t[2]), tonumber(t[3]), tonumber(t[4]), tonumber(t[5])}
"""

_DELETE = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if epoch and epoch ~= ARGV[1] then return redis.error_reply('BUDGETFLOW_EPOCH') end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {0, 0, 0, 0, 0, 0}
"""

_THRESHOLDS = ",".join(repr(t) for t in BUDGET_THRESHOLDS)
_RUN_REPLY = 6
_PER_BUDGET = 5
_INSTALL_TRIES = 5


class _Hold:
    """The budget windows one reservation is held in, fixed when it is first sent."""

    __slots__ = ("args", "budgets", "keys", "windows")

    def __init__(self, budgets: Sequence[SharedBudget], now: datetime) -> None:
        self.budgets = tuple(budgets)
        self.keys = [b.key(now) for b in budgets]
        self.windows = [b.window_id(now) for b in budgets]
        self.args: list[str | int] = [_THRESHOLDS]
        for budget in budgets:
            self.args += [budget.limit_nano, budget.expire_in(now)]


class SharedBudgetLedger(RedisLedger):
    """A run's `RedisLedger` whose every hold is also taken from the shared budgets above the run.

    The executor uses it as any `Ledger`. Build it with `create` (a new run), `restore`
    (a resumed run: the shared budgets are brought to what the run's records say it
    spent) or `join`, each with the run's `budgets`.
    """

    def __init__(
        self,
        client: Redis,
        run_id: str,
        epoch: str | None = None,
        *,
        retry: LedgerRetry | None = None,
        budgets: Sequence[SharedBudget] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Use the ledger of `run_id` under `budgets` (no I/O).

        Args:
            client: an async Redis client.
            run_id: the run whose budget this is.
            epoch: the epoch its creator returned; without it the object can only read.
            retry: how long to keep trying when Redis does not answer.
            budgets: the shared budgets above the run (`storage.shared_budgets.budgets_for`).
            clock: the time that picks a reservation's window (UTC); default the current time.
        """
        super().__init__(client, run_id, epoch, retry=retry)
        self.budgets = tuple(budgets)
        """The shared budgets above the run."""
        self._clock = clock or (lambda: datetime.now(UTC))
        self._keys = [*ledger_keys(run_id), ledger_shared_key(run_id)]
        self._reserve_script = client.register_script(_RESERVE)
        self._settle_script = client.register_script(_SETTLE)
        self._install_script = client.register_script(_INSTALL)
        self._delete_script = client.register_script(_DELETE)
        self._holds: dict[str, _Hold] = {}
        self._install_keys: list[str] = []
        self._install_args: list[str | int] = []
        self._crossings: list[tuple[float, SharedBudgetView]] = []
        self._states: dict[str, SharedBudgetView] = {}

    @classmethod
    async def create(
        cls,
        client: Redis,
        run_id: str,
        budget_nano: int,
        *,
        retry: LedgerRetry | None = None,
        budgets: Sequence[SharedBudget] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> SharedBudgetLedger:
        """Create a new ledger for `run_id` under `budgets` (see `RedisLedger.create`)."""
        if not 0 < budget_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"budget must be between 1 and {MAX_LEDGER_NANO} nano-USD, got {budget_nano}")
        ledger = cls(client, run_id, secrets.token_hex(8), retry=retry, budgets=budgets, clock=clock)
        await ledger._install(budget_nano, spent_nano=0, replace=False)
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
        budgets: Sequence[SharedBudget] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> SharedBudgetLedger:
        """Rebuild the run's ledger under a new epoch (see `RedisLedger.restore`).

        Each shared budget the replaced ledger charged (a crashed or fenced process's) is
        brought to what the run's records say: its holds are released, and `spent_nano`
        plus the overrun, less what its settles charged the budget, is charged in the
        budget's current window (given back when negative), so a budget's spend + overrun
        stays the sum of its runs' recorded calls, in-flight calls counted as the records
        count them (`lost_in_crash`, at their reservation).
        """
        if not 0 < budget_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"budget must be between 1 and {MAX_LEDGER_NANO} nano-USD, got {budget_nano}")
        if not 0 <= spent_nano <= MAX_LEDGER_NANO:
            raise ValueError(f"spend must be between 0 and {MAX_LEDGER_NANO} nano-USD, got {spent_nano}")
        ledger = cls(client, run_id, secrets.token_hex(8), retry=retry, budgets=budgets, clock=clock)
        await ledger._install(budget_nano, spent_nano=spent_nano, replace=replace)
        return ledger

    async def reserve(self, amount_nano: int, *, reservation_id: str | None = None) -> Reservation | None:
        """Hold `amount_nano` in the run and in every budget above it, or nowhere.

        The budget windows are those of the moment of the first attempt; a retry with the
        same `reservation_id` uses the same ones. Otherwise as `RedisLedger.reserve`.
        """
        rid = f"{self._token}-{next(self._ids)}" if reservation_id is None else reservation_id
        if rid and rid not in self._holds:
            self._holds[rid] = _Hold(self.budgets, self._clock())
        reservation = None
        try:
            reservation = await super().reserve(amount_nano, reservation_id=rid)
        finally:
            if reservation is None and rid not in self._doubtful:
                self._holds.pop(rid, None)
        return reservation

    def take_crossings(self) -> list[tuple[float, SharedBudgetView]]:
        """Thresholds of shared budgets that this ledger's settles passed since the last call."""
        taken, self._crossings = self._crossings, []
        return taken

    def budget_views(self) -> list[SharedBudgetView]:
        """The shared budgets as this ledger last saw them (in Redis' replies to it)."""
        return list(self._states.values())

    def downgraded(self) -> bool:
        """Whether a `downgrade` budget above the run has passed its point (as last seen)."""
        for budget in self.budgets:
            view = self._states.get(budget.name)
            if budget.on_cross == "downgrade" and view is not None and budget.crossed(view):
                return True
        return False

    async def refresh(self) -> list[SharedBudgetView]:
        """Read the budgets' counters in the current window (nothing is held); return them."""
        views = await read_budget_states(self._client, self.budgets, now=self._clock())
        for view in views:
            self._states[view.name] = view
        return views

    async def _install(self, budget_nano: int, *, spent_nano: int, replace: bool) -> None:
        now = self._clock()
        current = [budget.key(now) for budget in self.budgets]
        for _ in range(_INSTALL_TRIES):
            found = await self._client.hvals(ledger_shared_key(self._run_id))
            names = {k.decode() if isinstance(k, bytes) else str(k) for k in found}
            held = sorted({key for value in names for key in value.split("\n") if key})
            self._install_keys = [*current, *held]
            self._install_args = [len(current)]
            for budget, key in zip(self.budgets, current, strict=True):
                self._install_args += [key[: key.rindex(":") + 1], budget.limit_nano]
            try:
                await super()._install(budget_nano, spent_nano=spent_nano, replace=replace)
                return
            except StorageError as error:
                if "BUDGETFLOW_KEYS" not in str(error):
                    raise
            finally:
                self._install_keys, self._install_args = [], []
        raise StorageError(
            f"run `{self._run_id}`'s ledger kept gaining holds while it was being replaced; stop the"
            " run's workers, then restore it"
        )

    def _request(self, rid: str | None) -> tuple[list[str], list[str | int]]:
        hold = None if rid is None else self._holds.get(rid)
        if hold is None:
            return [*self._keys, *self._install_keys], [_THRESHOLDS, *self._install_args]
        return [*self._keys, *hold.keys], hold.args

    def _replied(self, op: str, rid: str | None, values: list[int]) -> None:
        hold = None if rid is None else self._holds.get(rid)
        if hold is None:
            return
        for i, budget in enumerate(hold.budgets):
            at = _RUN_REPLY + _PER_BUDGET * i
            spent, reserved, limit, before, after = values[at : at + _PER_BUDGET]
            view = SharedBudgetView(
                name=budget.name,
                window=hold.windows[i],
                limit_nano=limit,
                spent_nano=spent,
                reserved_nano=reserved,
            )
            self._states[budget.name] = view
            self._crossings.extend((t, view) for t in BUDGET_THRESHOLDS[before:after])
        if op in ("settle", "release"):
            assert rid is not None
            del self._holds[rid]
