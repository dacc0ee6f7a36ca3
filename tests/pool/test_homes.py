"""Capacity-aware homes of long prefixes (`PrefixHomes`) and the ``prefix_home`` strategy."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable

import pytest

from orchestrator.catalog import PoolSpec
from orchestrator.errors import ConfigError
from orchestrator.model_client import ChatMessage
from orchestrator.pool import PoolRouter, PrefixHomes, RouterConfig

MakePool = Callable[..., PoolSpec]
MakePrompt = Callable[..., tuple[ChatMessage, ...]]
REPLICA_A = "http://replica-a.test"
REPLICA_B = "http://replica-b.test"
CAPACITY = {"a": 100, "b": 100}


def _homes(seed: int = 0) -> PrefixHomes:
    return PrefixHomes(half_life_requests=64, max_groups=100, rng=random.Random(seed))


def test_new_groups_fill_the_emptier_replica() -> None:
    homes = _homes()
    homes.assign(1, "a", 40)
    assert homes.best(10, ["a", "b"], capacity_blocks=CAPACITY, held_blocks={}) == "b"
    homes.assign(2, "b", 30)
    assert homes.best(10, ["a", "b"], capacity_blocks=CAPACITY, held_blocks={}) == "b"
    assert homes.homed_blocks() == {"a": 40, "b": 30}


def test_footprint_is_relative_to_each_replica_capacity() -> None:
    homes = _homes()
    homes.assign(1, "a", 60)  # 60 of 200 blocks
    homes.assign(2, "b", 40)  # 40 of 100 blocks: fuller
    capacity = {"a": 200, "b": 100}
    assert homes.best(10, ["a", "b"], capacity_blocks=capacity, held_blocks={}) == "a"


def test_shared_blocks_count_once_however_many_requests() -> None:
    homes = _homes()
    homes.assign(1, "a", 40)
    for _ in range(10):
        homes.record(1)
    assert homes.homed_blocks() == {"a": 40}
    assert homes.heat()["a"] == pytest.approx(10, rel=0.1)


def test_heat_balances_groups_of_equal_size() -> None:
    homes = _homes()
    homes.assign(1, "a", 30)
    homes.assign(2, "b", 30)
    for _ in range(8):
        homes.record(1)  # group 1 is busy: its replica should not get the next group
    homes.record(2)
    assert homes.best(30, ["a", "b"], capacity_blocks=CAPACITY, held_blocks={}) == "b"


def test_heat_decays_with_the_half_life() -> None:
    homes = PrefixHomes(half_life_requests=4, max_groups=10, rng=random.Random(0))
    homes.assign(1, "a", 10)
    homes.assign(2, "b", 10)
    homes.record(1)
    for _ in range(4):
        homes.record(2)
    assert homes.heat()["a"] == pytest.approx(0.5)


def test_a_replica_that_still_holds_the_group_wins() -> None:
    homes = _homes()
    homes.assign(1, "b", 30)  # b is fuller...
    held = {"b": 20}  # ...but already holds 20 of the new group's 20 blocks
    assert homes.best(20, ["a", "b"], capacity_blocks=CAPACITY, held_blocks=held) == "b"


def test_ties_are_seeded_and_not_always_the_first_replica() -> None:
    picks = [
        _homes(seed).best(10, ["a", "b"], capacity_blocks=CAPACITY, held_blocks={}) for seed in range(20)
    ]
    assert set(picks) == {"a", "b"}
    again = [
        _homes(seed).best(10, ["a", "b"], capacity_blocks=CAPACITY, held_blocks={}) for seed in range(20)
    ]
    assert picks == again


def test_forget_replica_and_lru_bound() -> None:
    homes = PrefixHomes(half_life_requests=8, max_groups=3, rng=random.Random(0))
    for key, replica in enumerate(["a", "b", "a", "b"]):
        homes.assign(key, replica, 5)
    assert len(homes) == 3 and homes.home(0) is None  # the oldest group was forgotten
    homes.forget_replica("b")
    assert (homes.home(1), homes.home(2), homes.home(3)) == (None, "a", None)
    assert homes.groups_on("a") == 1
    with pytest.raises(ValueError, match="no candidate"):
        homes.best(5, [], capacity_blocks={}, held_blocks={})


# -- the prefix_home strategy in the router ----------------------------------------------


def _router(make_pool: MakePool, **config: object) -> PoolRouter:
    # 2 replicas of 4096 tokens = 256 blocks of 16 tokens each; a 400-word system prompt
    # (`make_prompt`) is about 37 blocks, so six of them fill 90% of one replica.
    settings: dict[str, object] = {"strategy": "prefix_home", "seed": 0, **config}
    return PoolRouter(make_pool(kv_capacity_tokens=4096), RouterConfig(**settings))  # type: ignore[arg-type]


async def _route(router: PoolRouter, messages: tuple[ChatMessage, ...]) -> str:
    async with router.lease(messages) as lease:
        return lease.replica


async def test_prefix_home_partitions_system_prompts_and_never_duplicates_them(
    make_pool: MakePool, make_prompt: MakePrompt
) -> None:
    router = _router(make_pool)
    where: dict[int, set[str]] = defaultdict(set)
    rng = random.Random(7)
    for i in range(200):
        agent = rng.randrange(10)
        where[agent].add(await _route(router, make_prompt(agent, f"step {i} " * rng.randint(1, 30))))
    assert all(len(replicas) == 1 for replicas in where.values()), where
    stats = router.stats()
    groups = [stats[r].homed_groups for r in (REPLICA_A, REPLICA_B)]
    blocks = [stats[r].homed_blocks for r in (REPLICA_A, REPLICA_B)]
    assert sum(groups) == 10 and min(groups) >= 4
    assert max(blocks) <= 1.35 * min(blocks)
    requests = [stats[r].requests for r in (REPLICA_A, REPLICA_B)]
    assert max(requests) / (sum(requests) / 2) <= 1.25


async def test_prefix_load_drifts_where_prefix_home_stays(
    make_pool: MakePool, make_prompt: MakePrompt
) -> None:
    """With the index evicting (scarce cache), ``prefix_load`` re-places forgotten prefixes at random."""

    async def spread(strategy: str) -> int:
        router = _router(make_pool, strategy=strategy, balance_slack=None)
        where: dict[int, set[str]] = defaultdict(set)
        for i in range(120):
            agent = (i * 7) % 12  # 12 agents x 37 blocks > 2 x 256 blocks: the index evicts
            where[agent].add(await _route(router, make_prompt(agent, f"task {i}")))
        return sum(len(replicas) - 1 for replicas in where.values())

    assert await spread("prefix_home") == 0
    assert await spread("prefix_load") > 0


async def test_busy_home_spills_without_moving_the_home(make_pool: MakePool, make_prompt: MakePrompt) -> None:
    router = _router(make_pool, home_spill_load=3)
    home = await _route(router, make_prompt(1, "first"))
    other = REPLICA_B if home == REPLICA_A else REPLICA_A
    router.update_load(home, waiting=2, running=0)
    assert router.choose(make_prompt(1, "x")).replica == home  # 2 more than the other: stay
    router.update_load(home, waiting=3, running=0)
    decision = router.choose(make_prompt(1, "x"))
    assert (decision.replica, decision.home) == (other, home)  # 3 more: spill
    async with router.lease(make_prompt(1, "spilled")) as lease:
        assert lease.replica == other
    assert router.stats()[other].spilled_in == 1
    router.update_load(home, waiting=0, running=0)
    assert router.choose(make_prompt(1, "y")).replica == home  # the home did not move


async def test_down_home_is_replaced_and_the_new_home_sticks(
    make_pool: MakePool, make_prompt: MakePrompt
) -> None:
    router = _router(make_pool)
    home = await _route(router, make_prompt(2, "a"))
    other = REPLICA_B if home == REPLICA_A else REPLICA_A
    router.mark_down(home)
    assert router.stats()[home].homed_groups == 0
    assert await _route(router, make_prompt(2, "b")) == other
    router.mark_up(home)
    assert {await _route(router, make_prompt(2, f"c{i}")) for i in range(5)} == {other}


async def test_prompts_without_a_long_first_message_use_prefix_load(make_pool: MakePool) -> None:
    router = _router(make_pool)
    document = "shared document " * 200  # the long shared part is in the user message

    def prompt(question: str) -> tuple[ChatMessage, ...]:
        return ({"role": "system", "content": "be brief"}, {"role": "user", "content": document + question})

    first = await _route(router, prompt("q0"))
    assert len(router.homes) == 0  # no group: the 2-word system prompt is under one block
    assert {await _route(router, prompt(f"q{i}")) for i in range(1, 8)} == {first}


def test_home_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="home_spill_load"):
        RouterConfig(home_spill_load=0)
    with pytest.raises(ConfigError, match="home_half_life_requests"):
        RouterConfig(home_half_life_requests=0)
