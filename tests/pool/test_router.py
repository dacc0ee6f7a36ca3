"""PoolRouter: affinity, load, tie-breaking, health, leases, warm-up; health checker parsing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import pytest

from orchestrator.catalog import PoolSpec
from orchestrator.errors import ConfigError, ReplicaUnavailable
from orchestrator.model_client import ChatMessage
from orchestrator.pool import (
    HealthChecker,
    PoolRouter,
    RouterConfig,
    describe_check_failure,
    parse_vllm_metrics,
)
from orchestrator.pool.router import Lease

MakePool = Callable[..., PoolSpec]
REPLICA_A = "http://replica-a.test"
REPLICA_B = "http://replica-b.test"
REPLICA_C = "http://replica-c.test"


def agent_prompt(system_seed: int, user: str) -> tuple[ChatMessage, ...]:
    """A long system prompt fixed by `system_seed`, then a short user message."""
    words = [f"w{(system_seed * 7919 + i * 104729) % 10007}" for i in range(400)]
    return (
        {"role": "system", "content": f"agent {system_seed}: " + " ".join(words)},
        {"role": "user", "content": user},
    )


async def _route(router: PoolRouter, seed: int, user: str = "task") -> str:
    """Route one request and finish it at once; the replica it went to."""
    async with router.lease(agent_prompt(seed, user)) as lease:
        return lease.replica


async def test_shared_prefix_requests_stick_to_one_replica(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=1, balance_slack=None))
    first = await _route(router, seed=7, user="first")
    for i in range(20):
        assert await _route(router, seed=7, user=f"task {i}") == first


async def test_distinct_prefixes_spread_over_replicas(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool((REPLICA_A, REPLICA_B, REPLICA_C)), RouterConfig(seed=3))
    counts = Counter([await _route(router, seed=s) for s in range(60)])
    assert set(counts) == {REPLICA_A, REPLICA_B, REPLICA_C}


async def test_decision_reports_matched_blocks(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    await _route(router, seed=1, user="a")
    decision = router.choose(agent_prompt(1, "b"))
    assert decision.total_blocks * 0.9 <= decision.matched_blocks <= decision.total_blocks


def test_ties_are_broken_randomly_and_reproducibly(make_pool: MakePool) -> None:
    def firsts(seed: int) -> list[str]:
        router = PoolRouter(make_pool(), RouterConfig(seed=seed))
        return [router.choose(agent_prompt(s, "x")).replica for s in range(40)]

    picks = firsts(seed=5)
    assert picks == firsts(seed=5)  # seeded: same sequence every time
    counts = Counter(picks)
    assert counts[REPLICA_A] >= 10 and counts[REPLICA_B] >= 10  # not always replica 0


async def test_load_overrides_affinity_smoothly(make_pool: MakePool) -> None:
    config = RouterConfig(seed=0, prefix_weight=1.0, load_weight=1.0, load_scale=4.0, balance_slack=None)
    router = PoolRouter(make_pool(), config)

    def prompt(i: int) -> tuple[ChatMessage, ...]:
        return agent_prompt(9, f"request {i} " * 20)  # ~90% of the prompt is shared

    home = await _route(router, seed=9, user="warm")
    other = REPLICA_B if home == REPLICA_A else REPLICA_A
    assert 0.85 < router.choose(prompt(0)).matched_blocks / router.choose(prompt(0)).total_blocks < 0.95
    async with router.lease(prompt(1)) as l1, router.lease(prompt(2)) as l2, router.lease(prompt(3)) as l3:
        # Three in flight at home cost 0.75 of score; a ~90% match still wins.
        assert {l1.replica, l2.replica, l3.replica} == {home}
        async with router.lease(prompt(4)) as l4:
            assert l4.replica == home
            # Four in flight at home (score ~0.9 - 1.0) lose to an idle replica (0.0).
            assert router.choose(prompt(5)).replica == other
    assert router.choose(prompt(6)).replica == home  # load gone: back home


async def test_replica_queue_from_metrics_counts_as_load(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    home = await _route(router, seed=4)
    other = REPLICA_B if home == REPLICA_A else REPLICA_A
    router.update_load(home, waiting=12, running=4)
    assert router.choose(agent_prompt(4, "again")).replica == other


async def test_prefix_only_ignores_load(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(strategy="prefix_only", seed=0))
    home = await _route(router, seed=2)
    router.update_load(home, waiting=100, running=16)
    assert router.choose(agent_prompt(2, "again")).replica == home


async def test_least_loaded_ignores_prefixes(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(strategy="least_loaded", seed=0))
    home = await _route(router, seed=2)
    other = REPLICA_B if home == REPLICA_A else REPLICA_A
    router.update_load(home, waiting=1, running=0)
    assert router.choose(agent_prompt(2, "again")).replica == other


def test_round_robin_cycles_over_healthy_replicas(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool((REPLICA_A, REPLICA_B, REPLICA_C)), RouterConfig(strategy="round_robin"))
    prompt = agent_prompt(1, "x")
    assert [router.choose(prompt).replica for _ in range(4)] == [REPLICA_A, REPLICA_B, REPLICA_C, REPLICA_A]
    router.mark_down(REPLICA_B)
    assert [router.choose(prompt).replica for _ in range(4)] == [REPLICA_C, REPLICA_A, REPLICA_C, REPLICA_A]


async def test_unhealthy_replicas_get_nothing_and_come_back(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    home = await _route(router, seed=3)
    other = REPLICA_B if home == REPLICA_A else REPLICA_A
    router.mark_down(home)
    assert router.index.sizes()[home] == 0  # its cache is presumed lost
    assert {await _route(router, seed=s) for s in range(10)} == {other}
    router.mark_down(other)
    with pytest.raises(ReplicaUnavailable, match="no healthy replica in pool `local`"):
        router.choose(agent_prompt(3, "x"))
    with pytest.raises(ReplicaUnavailable):
        async with router.lease(agent_prompt(3, "x")):
            pass
    router.mark_up(home)
    assert router.choose(agent_prompt(3, "x")).replica == home


async def test_lease_counts_in_flight_and_releases_on_error(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    with pytest.raises(KeyError):
        async with router.lease(agent_prompt(1, "x")) as lease:
            assert router.stats()[lease.replica].in_flight == 1
            raise KeyError("boom")
    stats = router.stats()[lease.replica]
    assert (stats.in_flight, stats.requests, stats.failures) == (0, 1, 1)
    assert lease.failed


async def test_record_accumulates_cached_tokens(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    async with router.lease(agent_prompt(1, "x")) as lease:
        router.record(lease, prompt_tokens=1000, cached_tokens=960)
    stats = router.stats()[lease.replica]
    assert (stats.prompt_tokens, stats.cached_tokens) == (1000, 960)
    assert (lease.prompt_tokens, lease.cached_tokens) == (1000, 960)


async def test_full_replicas_make_leases_wait_for_a_slot(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(max_in_flight_per_replica=1), RouterConfig(seed=0))
    release = asyncio.Event()
    holding = asyncio.Event()
    held: list[Lease] = []

    async def hold(seed: int) -> None:
        async with router.lease(agent_prompt(seed, "x")) as lease:
            held.append(lease)
            if len(held) == 2:
                holding.set()
            await release.wait()

    holders = [asyncio.create_task(hold(s)) for s in (1, 2)]
    await holding.wait()
    assert {lease.replica for lease in held} == {REPLICA_A, REPLICA_B}
    with pytest.raises(ReplicaUnavailable, match="max_in_flight_per_replica"):
        router.choose(agent_prompt(3, "x"))
    waiter = asyncio.create_task(_route(router, seed=3))
    await asyncio.sleep(0)  # let it start waiting
    assert not waiter.done()
    release.set()
    await asyncio.gather(*holders)
    assert await waiter in {REPLICA_A, REPLICA_B}
    assert all(s.in_flight == 0 for s in router.stats().values())


async def test_warm_plan_needs_spare_capacity_and_pin_keeps_affinity(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0, warm_max_load=0))
    prompt = agent_prompt(11, "")
    plan = router.plan_warm(prompt)
    assert plan is not None and plan.matched_blocks == 0
    router.update_load(REPLICA_A, waiting=3, running=0)
    router.update_load(REPLICA_B, waiting=3, running=0)
    assert router.plan_warm(prompt) is None  # every replica busy: not now
    router.update_load(REPLICA_A, waiting=0, running=0)
    router.update_load(REPLICA_B, waiting=0, running=0)
    router.pin(prompt, REPLICA_B)
    router.index.clear(REPLICA_B)  # the approximate index forgot it...
    assert router.choose(agent_prompt(11, "")).replica == REPLICA_B  # ...the pin did not
    assert router.plan_warm(prompt) is None  # already warm there
    assert router.pinned_prefixes == 1
    router.mark_down(REPLICA_B)
    assert router.pinned_prefixes == 0


def test_kv_capacity_bounds_the_index(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(kv_capacity_tokens=None), RouterConfig(seed=0))
    router.set_kv_capacity(REPLICA_A, 16 * 10)  # 10 blocks
    assert router.index.cache(REPLICA_A).capacity_blocks == 10
    assert router.stats()[REPLICA_A].kv_capacity_tokens == 160


async def test_share_bound_spreads_a_hot_prefix(make_pool: MakePool) -> None:
    """One prefix only: affinity alone would send all 120 requests to one replica."""
    router = PoolRouter(make_pool(), RouterConfig(seed=0))  # slack 0.1, grace 4 requests
    counts = Counter([await _route(router, seed=5, user=f"task {i}") for i in range(120)])
    assert set(counts) == {REPLICA_A, REPLICA_B}
    # max / mean <= 1 + slack + grace / mean, here 1.1 + 4 / 60 (decay makes it a bit looser).
    assert max(counts.values()) / 60 <= 1.2
    stats = router.stats()
    assert stats[REPLICA_A].rebalanced_in + stats[REPLICA_B].rebalanced_in > 0
    assert all(s.recent_requests > 0 for s in stats.values())


async def test_share_bound_keeps_affinity_while_shares_are_even(make_pool: MakePool) -> None:
    """Two prefixes of equal popularity: each keeps its own replica, nothing is moved."""
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    homes = {seed: await _route(router, seed=seed) for seed in (1, 2)}
    assert homes[1] != homes[2]  # the second prefix went where the share was lower
    for i in range(40):
        for seed, home in homes.items():
            assert await _route(router, seed=seed, user=f"t{i}") == home
    assert all(s.rebalanced_in == 0 for s in router.stats().values())


async def _force(router: PoolRouter, messages: tuple[ChatMessage, ...], replica: str, times: int = 1) -> None:
    for _ in range(times):
        async with router.lease(messages, replica=replica):
            pass


@pytest.mark.parametrize(("b_holds", "expected"), [("system prompt", REPLICA_C), ("most of it", REPLICA_B)])
async def test_passed_over_request_goes_where_it_is_free_or_where_there_is_room(
    make_pool: MakePool, b_holds: str, expected: str
) -> None:
    """A is over its share bound. B holds half the prompt (its system prompt) or 95% of it;
    C holds nothing but has the lowest share. A partial match is not worth crowding B (the
    request goes to C, where moved prefixes gather); a near-whole one is a free move (B).
    With the default `balance_free_match=0` the best score within the bound decides (B)."""
    router = PoolRouter(
        make_pool((REPLICA_A, REPLICA_B, REPLICA_C)),
        RouterConfig(seed=0, balance_slack=0.0, balance_grace_requests=3.0, balance_free_match=0.9),
    )
    hot = agent_prompt(8, "details " * 400)  # about half system prompt, half user text
    await _force(router, hot, REPLICA_A, times=6)
    most = agent_prompt(8, "details " * 380 + "and then something else entirely " * 20)
    await _force(router, most if b_holds == "most of it" else agent_prompt(8, "other"), REPLICA_B)
    decision = router.choose(hot)
    assert decision.rebalanced
    assert decision.replica == expected
    held = router.index.match(REPLICA_B, router.hasher.hash_messages(hot)) / decision.total_blocks
    assert 0.3 < held < 0.7 if b_holds == "system prompt" else 0.9 < held < 1.0
    default = PoolRouter(
        make_pool((REPLICA_A, REPLICA_B, REPLICA_C)),
        RouterConfig(seed=0, balance_slack=0.0, balance_grace_requests=3.0),
    )
    await _force(default, hot, REPLICA_A, times=6)
    await _force(default, most if b_holds == "most of it" else agent_prompt(8, "other"), REPLICA_B)
    assert default.choose(hot).replica == REPLICA_B


async def test_zero_slack_and_grace_alternate(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0, balance_slack=0.0, balance_grace_requests=0.0))
    counts = Counter([await _route(router, seed=3, user=f"task {i}") for i in range(41)])
    assert sorted(counts.values()) == [20, 21]


async def test_share_bound_ignores_baselines(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(strategy="prefix_only", seed=0))
    assert len({await _route(router, seed=6, user=f"task {i}") for i in range(30)}) == 1


async def test_recovered_replica_restarts_at_the_mean_share(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool((REPLICA_A, REPLICA_B, REPLICA_C)), RouterConfig(seed=0))
    for i in range(30):
        await _route(router, seed=i % 6, user=f"task {i}")
    router.mark_down(REPLICA_C)
    for i in range(30):
        await _route(router, seed=i % 6, user=f"again {i}")
    router.mark_up(REPLICA_C)
    stats = router.stats()
    mean = (stats[REPLICA_A].recent_requests + stats[REPLICA_B].recent_requests) / 2
    assert stats[REPLICA_C].recent_requests == pytest.approx(mean)
    # Not flooded: the next requests still mostly follow their prefixes.
    after = Counter([await _route(router, seed=i % 6, user=f"later {i}") for i in range(12)])
    assert after[REPLICA_C] < 12


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"balance_slack": -0.1}, "`balance_slack` must be at least 0 or None"),
        ({"balance_grace_requests": -1.0}, "`balance_grace_requests` must be at least 0"),
        ({"balance_half_life_requests": 0.0}, "`balance_half_life_requests` positive"),
        ({"balance_free_match": 1.5}, "`balance_free_match` must be in"),
    ],
)
def test_bad_share_bound_settings_are_config_errors(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RouterConfig(**settings)  # type: ignore[arg-type]


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="strategy `fastest` is unknown"):
        RouterConfig(strategy="fastest")  # type: ignore[arg-type]


# -- health checks (fake replicas at the HTTP transport seam) -----------------------------

METRICS = """\
# HELP vllm:num_requests_waiting Number of requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="tiny-llama"} 3.0
# HELP vllm:num_requests_running Number of requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="tiny-llama"} 2.0
# HELP vllm:prefix_cache_queries Prefix cache queries.
# TYPE vllm:prefix_cache_queries counter
vllm:prefix_cache_queries_total{engine="0",model_name="tiny-llama"} 1000.0
# HELP vllm:prefix_cache_hits Prefix cache hits.
# TYPE vllm:prefix_cache_hits counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny-llama"} 640.0
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="32",engine="0",num_gpu_blocks="64"} 1.0
"""


def test_parse_vllm_metrics() -> None:
    metrics = parse_vllm_metrics(METRICS)
    assert (metrics.waiting, metrics.running) == (3, 2)
    assert metrics.kv_capacity_tokens == 64 * 32
    assert (metrics.prefix_cache_queries, metrics.prefix_cache_hits) == (1000.0, 640.0)


async def test_health_checker_marks_down_and_up(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(kv_capacity_tokens=None), RouterConfig(seed=0))
    down: set[str] = {REPLICA_B}

    def handler(request: httpx.Request) -> httpx.Response:
        base = f"{request.url.scheme}://{request.url.host}"
        if base in down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/health":
            return httpx.Response(200)
        return httpx.Response(200, text=METRICS)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        checker = HealthChecker(router, client=client, interval_s=60)
        await checker.check_once()
        assert router.is_healthy(REPLICA_A) and not router.is_healthy(REPLICA_B)
        stats = router.stats()[REPLICA_A]
        assert (stats.waiting, stats.running, stats.kv_capacity_tokens) == (3, 2, 2048)
        down.clear()
        await checker.check_once()
        assert router.is_healthy(REPLICA_B)
        assert checker.rounds == 2


async def test_health_checker_task_starts_and_stops(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    transport = httpx.MockTransport(lambda request: httpx.Response(503))
    async with httpx.AsyncClient(transport=transport) as client:
        async with HealthChecker(router, client=client, interval_s=0.01) as checker:
            assert not router.is_healthy(REPLICA_A)  # the first round ran in start()
            await checker.wait_round()  # and the background task keeps going
            assert checker.rounds >= 2
        rounds = checker.rounds
        await asyncio.sleep(0.05)
        assert checker.rounds == rounds  # stopped


async def test_a_replica_down_says_since_when_and_why_until_it_is_back(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    router.mark_down(REPLICA_A, "health check failed: `/health` answered HTTP 503")
    router.mark_down(REPLICA_A, "a later probe failed")  # the first reason stays
    stats = router.stats()[REPLICA_A]
    assert not stats.healthy and stats.down_since is not None
    assert stats.down_reason == "health check failed: `/health` answered HTTP 503"
    described = router.describe_replicas()
    assert f"`{REPLICA_A}` down since " in described and "answered HTTP 503" in described
    assert f"`{REPLICA_B}` healthy (0 in flight)" in described
    router.mark_up(REPLICA_A)
    stats = router.stats()[REPLICA_A]
    assert stats.healthy and stats.down_since is None and stats.down_reason is None


async def test_wait_for_healthy_wakes_when_a_replica_is_put_back(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    assert await router.wait_for_healthy(0)
    router.mark_down(REPLICA_A)
    router.mark_down(REPLICA_B)
    assert not router.any_healthy()
    assert not await router.wait_for_healthy(0.05)
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, router.mark_up, REPLICA_B)
    started = loop.time()
    assert await router.wait_for_healthy(10)
    assert loop.time() - started < 5


def test_no_healthy_replica_error_names_each_replica_state(make_pool: MakePool) -> None:
    router = PoolRouter(make_pool(), RouterConfig(seed=0))
    router.mark_down(REPLICA_A, "health check failed: no answer within 2 s")
    router.mark_down(REPLICA_B)
    with pytest.raises(ReplicaUnavailable) as failure:
        router.choose(agent_prompt(1, "x"))
    message = str(failure.value)
    assert f"`{REPLICA_A}` down since " in message and "no answer within 2 s" in message
    assert f"`{REPLICA_B}` down since " in message and "reason not recorded" in message


def test_check_failures_are_described_for_people() -> None:
    request = httpx.Request("GET", "http://replica-a.test/health")
    dead = httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))
    assert describe_check_failure(dead, 2.0) == "`/health` answered HTTP 503"
    assert "no answer within 2 s" in describe_check_failure(httpx.ReadTimeout("slow", request=request), 2.0)
    refused = describe_check_failure(
        httpx.ConnectError("All connection attempts failed", request=request), 2.0
    )
    assert refused.startswith("connection refused or failed")
