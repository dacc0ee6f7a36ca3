"""`SharedBudgetLedger` against a real redis-server: one hold in the run and every budget above it,
or none; settles in the window the hold was taken in; thresholds once per window; idempotent ids."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from orchestrator.errors import StorageError
from orchestrator.events import ThresholdSource
from orchestrator.ledger import Ledger
from storage.redis_keys import ledger_shared_key
from storage.shared_budgets import read_budget_states
from storage.shared_ledger import SharedBudgetLedger
from tests.budgets.support import DAY_1, DAY_2, Clock, budget

pytestmark = pytest.mark.redis


async def totals(client: Redis, key: str) -> tuple[int, int]:
    spent, reserved = await client.hmget(key, "spent", "reserved")
    return int(spent or 0), int(reserved or 0)


async def test_a_hold_is_taken_everywhere_or_nowhere(redis_client: Redis, run_id: str) -> None:
    team, flow = budget("team", 1_000), budget("flow", 600)
    ledger = await SharedBudgetLedger.create(redis_client, run_id, 10_000, budgets=[team, flow])
    as_protocol: Ledger = ledger
    assert isinstance(ledger, ThresholdSource)
    held = await as_protocol.reserve(500)
    assert held is not None
    now = ledger._clock()
    assert await totals(redis_client, team.key(now)) == (0, 500)
    assert await totals(redis_client, flow.key(now)) == (0, 500)
    # 200 fits the run (10,000) and `team` (1,000) but not `flow` (600): nothing is held anywhere.
    assert await ledger.reserve(200) is None
    assert (await ledger.snapshot()).reserved_nano == 500
    assert await totals(redis_client, team.key(now)) == (0, 500)
    assert await ledger.settle(held, 300) == 300
    assert await totals(redis_client, team.key(now)) == (300, 0)
    assert await totals(redis_client, flow.key(now)) == (300, 0)
    snap = await ledger.snapshot()
    assert (snap.spent_nano, snap.reserved_nano) == (300, 0)
    assert await redis_client.hlen(ledger_shared_key(run_id)) == 0


async def test_retries_act_once_on_every_budget(redis_client: Redis, run_id: str) -> None:
    team = budget("team", 1_000)
    ledger = await SharedBudgetLedger.create(redis_client, run_id, 10_000, budgets=[team])
    key = team.key(ledger._clock())
    first = await ledger.reserve(400, reservation_id="call-1")
    again = await ledger.reserve(400, reservation_id="call-1")
    assert first == again and first is not None
    assert await totals(redis_client, key) == (0, 400)
    assert await ledger.settle(first, 700) == 700  # above the hold: charged as far as both allow
    assert await ledger.settle(first, 700) == 700  # a retry: charged once
    assert await totals(redis_client, key) == (700, 0)
    with pytest.raises(ValueError, match="already settled"):
        await ledger.settle(first, 100)
    # A release of an id never held closes it: a late reserve with it holds nothing.
    await ledger.release("call-2")
    with pytest.raises(ValueError, match="already used"):
        await ledger.reserve(10, reservation_id="call-2")
    assert await totals(redis_client, key) == (700, 0)


async def test_an_overrun_is_charged_as_far_as_the_budget_allows(redis_client: Redis, run_id: str) -> None:
    team = budget("team", 1_000)
    ledger = await SharedBudgetLedger.create(redis_client, run_id, 10_000, budgets=[team])
    held = await ledger.reserve(900)
    assert held is not None
    # The run could pay 5,000 but the team has 1,000: the run charges what the provider billed,
    # the team what fits in it (its excess is the team's overrun), and neither is exceeded.
    assert await ledger.settle(held, 5_000) == 5_000
    spent, reserved, overrun = await redis_client.hmget(
        team.key(ledger._clock()), "spent", "reserved", "overrun"
    )
    assert (int(spent or 0), int(reserved or 0), int(overrun or 0)) == (1_000, 0, 4_000)


async def test_a_hold_settles_in_the_window_it_was_taken_in(redis_client: Redis, run_id: str) -> None:
    clock = Clock(DAY_1)
    daily, monthly = budget("daily", 1_000, window="day"), budget("monthly", 5_000, window="month")
    ledger = await SharedBudgetLedger.create(
        redis_client, run_id, 100_000, budgets=[daily, monthly], clock=clock
    )
    late = await ledger.reserve(800)
    assert late is not None
    clock.now = DAY_2  # midnight, and a new month, pass while the call runs
    fresh = await ledger.reserve(900)  # a new day: the new window has room
    assert fresh is not None
    assert await ledger.settle(late, 600) == 600
    assert await totals(redis_client, daily.key(DAY_1)) == (600, 0)
    assert await totals(redis_client, monthly.key(DAY_1)) == (600, 0)
    assert await totals(redis_client, daily.key(DAY_2)) == (0, 900)
    assert await totals(redis_client, monthly.key(DAY_2)) == (0, 900)
    assert daily.key(DAY_1).endswith(":2026-01-31") and monthly.key(DAY_2).endswith(":2026-02")
    assert await redis_client.ttl(daily.key(DAY_1)) > 0  # windows expire (40 days after they end)
    views = await read_budget_states(redis_client, [daily, monthly], now=DAY_2)
    assert [(v.window, v.spent_nano, v.reserved_nano) for v in views] == [
        ("2026-02-01", 0, 900),
        ("2026-02", 0, 900),
    ]


async def test_thresholds_are_reported_once_per_window(redis_client: Redis, run_id: str) -> None:
    clock = Clock(DAY_1)
    daily = budget("daily", 1_000, window="day")
    one = await SharedBudgetLedger.create(redis_client, f"{run_id}-1", 100_000, budgets=[daily], clock=clock)
    two = await SharedBudgetLedger.create(redis_client, f"{run_id}-2", 100_000, budgets=[daily], clock=clock)

    async def spend(ledger: SharedBudgetLedger, amount: int) -> list[float]:
        held = await ledger.reserve(amount)
        assert held is not None
        await ledger.settle(held, amount)
        return [t for t, _ in ledger.take_crossings()]

    assert await spend(one, 400) == []
    assert await spend(two, 450) == [0.5, 0.8]  # 850: two thresholds in one settle
    assert await spend(one, 50) == []
    assert await spend(one, 50) == [0.95]
    assert await spend(two, 40) == []  # nothing is reported twice
    clock.now = DAY_2
    assert await spend(two, 500) == [0.5]  # a new window crosses anew
    view = two.budget_views()[0]
    assert (view.name, view.window, view.spent_nano, view.limit_nano) == ("daily", "2026-02-01", 500, 1_000)


async def test_restore_charges_a_dead_process_holds_to_the_shared_budgets(
    redis_client: Redis, run_id: str
) -> None:
    team = budget("team", 10_000)
    dead = await SharedBudgetLedger.create(redis_client, run_id, 50_000, budgets=[team])
    assert await dead.reserve(3_000) is not None  # in flight when its process died
    done = await dead.reserve(1_000)
    assert done is not None
    await dead.settle(done, 1_000)
    resumed = await SharedBudgetLedger.restore(
        redis_client, run_id, budget_nano=50_000, spent_nano=4_000, replace=True, budgets=[team]
    )
    key = team.key(resumed._clock())
    # The lost call's hold is now spend (its record is `lost_in_crash` at it), and nothing stays held.
    assert await totals(redis_client, key) == (4_000, 0)
    snap = await resumed.snapshot()
    assert (snap.spent_nano, snap.reserved_nano) == (4_000, 0)
    with pytest.raises(StorageError):
        await dead.reserve(10)  # the old epoch is refused


async def overrun_of(client: Redis, key: str) -> int:
    return int(await client.hget(key, "overrun") or 0)


@pytest.mark.parametrize(
    ("records_nano", "why"),
    [
        (1_000, "the held call was never journaled, so never sent: its hold is released"),
        (3_000, "the held call was journaled and is `lost_in_crash` at its reservation"),
        (2_200, "the held call's reply (1,200) was recorded, its settle did not happen"),
    ],
)
async def test_restore_brings_the_shared_budget_to_the_run_records(
    redis_client: Redis, run_id: str, records_nano: int, why: str
) -> None:
    """Whatever a crash interrupted between hold, journal, reply, record and settle, the budget's spend
    after the restore is what the run's records say it spent."""
    team, untouched = budget("team", 10_000), budget("other", 10_000)
    dead = await SharedBudgetLedger.create(redis_client, run_id, 50_000, budgets=[team])
    done = await dead.reserve(1_000)
    assert done is not None
    await dead.settle(done, 1_000)
    assert await dead.reserve(2_000) is not None  # in flight when the process died
    resumed = await SharedBudgetLedger.restore(
        redis_client,
        run_id,
        budget_nano=50_000,
        spent_nano=records_nano,
        replace=True,
        budgets=[team, untouched],
    )
    now = resumed._clock()
    assert await totals(redis_client, team.key(now)) == (records_nano, 0), why
    assert await totals(redis_client, untouched.key(now)) == (0, 0)  # the run never spent in it
    again = await resumed.reserve(500)
    assert again is not None
    await resumed.settle(again, 400)
    crashed_again = await SharedBudgetLedger.restore(
        redis_client, run_id, budget_nano=50_000, spent_nano=records_nano + 400, replace=True, budgets=[team]
    )
    assert await totals(redis_client, team.key(crashed_again._clock())) == (records_nano + 400, 0)


async def test_a_settle_recorded_lower_than_redis_charged_is_given_back(
    redis_client: Redis, run_id: str
) -> None:
    """Settled at 500 in Redis, then the process died before its final record: the records keep that
    call `lost_in_crash` at its 800 reservation, so the budget is charged 300 more, not less."""
    team = budget("team", 10_000)
    dead = await SharedBudgetLedger.create(redis_client, run_id, 50_000, budgets=[team])
    held = await dead.reserve(800)
    assert held is not None
    await dead.settle(held, 500)
    restored = await SharedBudgetLedger.restore(
        redis_client, run_id, budget_nano=50_000, spent_nano=800, replace=True, budgets=[team]
    )
    assert await totals(redis_client, team.key(restored._clock())) == (800, 0)
    again = await SharedBudgetLedger.restore(
        redis_client, run_id, budget_nano=50_000, spent_nano=600, replace=True, budgets=[team]
    )
    assert await totals(redis_client, team.key(again._clock())) == (600, 0)  # records lower: given back


async def test_a_restore_never_pushes_a_budget_past_its_limit(redis_client: Redis, run_id: str) -> None:
    team = budget("team", 1_000)
    dead = await SharedBudgetLedger.create(redis_client, run_id, 50_000, budgets=[team])
    held = await dead.reserve(900)
    assert held is not None
    await dead.settle(held, 900)
    restored = await SharedBudgetLedger.restore(
        redis_client, run_id, budget_nano=50_000, spent_nano=1_300, replace=True, budgets=[team]
    )
    key = team.key(restored._clock())
    assert await totals(redis_client, key) == (1_000, 0)  # the limit
    assert await overrun_of(redis_client, key) == 300  # the rest, as overrun


async def test_a_settle_must_name_the_windows_of_its_hold(redis_client: Redis, run_id: str) -> None:
    team = budget("team", 10_000)
    ledger = await SharedBudgetLedger.create(redis_client, run_id, 50_000, budgets=[team])
    held = await ledger.reserve(100)
    assert held is not None
    stranger = await SharedBudgetLedger.join(redis_client, run_id, ledger.epoch or "")
    with pytest.raises(StorageError, match="BUDGETFLOW_KEYS"):
        await stranger.settle(held, 100)  # it does not know which windows the hold is in
    assert await ledger.settle(held, 100) == 100
