"""The pool against two real vLLM CPU replicas of the tiny model.

Run with `pytest -m vllm tests/pool` (the replicas start once per session, ~1-2 min).
The replica-crash test runs last because it restarts a replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from orchestrator.catalog import ModelSpec, PoolSpec
from orchestrator.errors import ProviderError
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse
from orchestrator.pool import (
    PooledLiteLLMCaller,
    ReplicaMetrics,
    RouterConfig,
    fetch_metrics,
)

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(600),
    # litellm's stream wrapper reads a deprecated pydantic attribute on every usage chunk;
    # under `filterwarnings=error` that warning would turn into a failed call.
    pytest.mark.filterwarnings("ignore:Accessing the '.*' attribute on the instance is deprecated"),
]

MakePrompt = Callable[..., tuple[ChatMessage, ...]]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


@pytest.fixture
async def fresh(vllm_replicas: Any, http: httpx.AsyncClient) -> list[str]:
    """The replica URLs, each healthy and with an empty prefix cache."""
    urls: list[str] = list(vllm_replicas.urls)
    for url in urls:
        (await http.post(f"{url}/reset_prefix_cache")).raise_for_status()
    return urls


@pytest.fixture
async def caller(vllm_pool: PoolSpec) -> AsyncIterator[PooledLiteLLMCaller]:
    async with PooledLiteLLMCaller(
        vllm_pool, router_config=RouterConfig(seed=0, chars_per_token=2.5), health_interval_s=0.5
    ) as pooled:
        yield pooled


async def _metrics(http: httpx.AsyncClient, urls: list[str]) -> dict[str, ReplicaMetrics]:
    return {url: await fetch_metrics(http, url) for url in urls}


async def _settled_metrics(
    http: httpx.AsyncClient, urls: list[str], *, finished: float
) -> dict[str, ReplicaMetrics]:
    """Metrics once the replicas have counted `finished` requests in total (bounded wait)."""
    async with asyncio.timeout(30):
        while True:
            now = await _metrics(http, urls)
            if sum(m.requests_finished for m in now.values()) >= finished:
                return now
            await asyncio.sleep(0.1)


async def _until(check: Callable[[], bool | Awaitable[bool]], *, timeout_s: float) -> None:
    """Poll `check` until it holds; fail the test after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if result if isinstance(result, bool) else await result:
                return
            await asyncio.sleep(0.02)


def _request(model: ModelSpec, messages: tuple[ChatMessage, ...], max_tokens: int = 8) -> ChatRequest:
    return ChatRequest(model=model, messages=messages, max_tokens=max_tokens, timeout_s=120)


async def _streaming(
    pooled: PooledLiteLLMCaller, request: ChatRequest, progress: CallProgress
) -> tuple[asyncio.Task[ChatResponse], str]:
    """Start `request` (a slow, long answer) and return the call and its replica once the
    client has read 5 tokens: the replica is then certainly still generating."""
    call = asyncio.create_task(pooled.complete(request, progress))
    await _until(lambda: progress.output_tokens >= 5, timeout_s=60)
    assert progress.replica is not None
    return call, progress.replica


DECODE_DELAY_MS = 10
"""Per-token pace of the long answers below: 3,500 tokens take at least 35 s."""

SLOW = {"ignore_eos": True, "vllm_xargs": {"decode_delay_ms": DECODE_DELAY_MS}}
"""Request extras of a long answer the replica generates slowly (see `DecodeDelay`)."""


async def test_shared_prefix_requests_land_together_and_hit_the_cache(
    fresh: list[str],
    caller: PooledLiteLLMCaller,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
    http: httpx.AsyncClient,
) -> None:
    before = await _metrics(http, fresh)
    done = sum(m.requests_finished for m in before.values())
    responses: dict[int, list[ChatResponse]] = {101: [], 102: []}
    for i in range(5):
        for group, replies in responses.items():
            messages = make_prompt(group, f"question {i}: what next?", system_words=300)
            replies.append(await caller.complete(_request(vllm_model, messages), CallProgress()))
    for replies in responses.values():
        assert len({r.replica for r in replies}) == 1, "a prefix group was split across replicas"
        assert replies[0].cached_tokens == 0
        assert all(r.cached_tokens >= 0.8 * r.input_tokens for r in replies[1:])
    after = await _settled_metrics(http, fresh, finished=done + 10)
    hits = sum(after[u].prefix_cache_hits - before[u].prefix_cache_hits for u in fresh)
    queries = sum(after[u].prefix_cache_queries - before[u].prefix_cache_queries for u in fresh)
    assert hits / queries >= 0.7


async def test_cached_token_accounting_matches_vllm_counters(
    fresh: list[str],
    caller: PooledLiteLLMCaller,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
    http: httpx.AsyncClient,
) -> None:
    before = await _metrics(http, fresh)
    done = sum(m.requests_finished for m in before.values())
    replies = [
        await caller.complete(
            _request(vllm_model, make_prompt(200 + i % 3, f"item {i}", system_words=250)), CallProgress()
        )
        for i in range(9)
    ]
    after = await _settled_metrics(http, fresh, finished=done + 9)
    for url in fresh:
        mine = [r for r in replies if r.replica == url]
        hits = after[url].prefix_cache_hits - before[url].prefix_cache_hits
        queries = after[url].prefix_cache_queries - before[url].prefix_cache_queries
        assert sum(r.cached_tokens for r in mine) == hits
        assert sum(r.input_tokens for r in mine) == queries
        stats = caller.router.stats()[url]
        assert stats.cached_tokens == hits and stats.prompt_tokens == queries
    cost = sum(
        vllm_model.cost_nano(
            input_tokens=r.input_tokens, output_tokens=r.output_tokens, cached_tokens=r.cached_tokens
        )
        for r in replies
    )
    assert cost > 0


async def test_deadline_cancellation_stops_generation_on_the_replica(
    fresh: list[str],
    vllm_pool: PoolSpec,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
    http: httpx.AsyncClient,
) -> None:
    max_tokens = 3500
    async with PooledLiteLLMCaller(vllm_pool, router_config=RouterConfig(seed=0), extra_body=SLOW) as pooled:
        await pooled.complete(_request(vllm_model, make_prompt(20, "warm up"), 4), CallProgress())
        before = await _metrics(http, fresh)
        progress = CallProgress()
        request = _request(vllm_model, make_prompt(300, "write a long story", system_words=50), max_tokens)
        # The run's deadline arrives while the replica generates (it needs 35 s or more for
        # the 3,500 tokens): the executor cancels the call once tokens are flowing.
        call, replica = await _streaming(pooled, request, progress)
        assert (await fetch_metrics(http, replica)).running == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert pooled.router.stats()[replica].in_flight == 0

        async def idle() -> bool:
            return (await fetch_metrics(http, replica)).running == 0

        # The replica finds the connection closed and must abort the request.
        await _until(idle, timeout_s=10)
        stopped = (await fetch_metrics(http, replica)).generation_tokens
        await asyncio.sleep(1.0)  # a generating request would add ~100 tokens per second here
        later = await fetch_metrics(http, replica)
        assert later.generation_tokens == stopped
        generated = stopped - before[replica].generation_tokens
        # It stopped far short of its 3,500 tokens (a few seconds at 10 ms per token).
        assert progress.output_tokens <= generated < max_tokens // 4


async def test_paused_replica_is_taken_out_and_put_back(
    fresh: list[str],
    vllm_replicas: Any,
    vllm_pool: PoolSpec,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
) -> None:
    async with PooledLiteLLMCaller(
        vllm_pool,
        router_config=RouterConfig(seed=0, chars_per_token=2.5),
        health_interval_s=0.2,
        health_timeout_s=1.0,
    ) as pooled:
        router = pooled.router
        vllm_replicas.pause(0)
        try:
            await _until(lambda: not router.is_healthy(fresh[0]), timeout_s=30)
            replies = [
                await pooled.complete(_request(vllm_model, make_prompt(400 + i, "hi")), CallProgress())
                for i in range(6)
            ]
            assert {r.replica for r in replies} == {fresh[1]}
        finally:
            vllm_replicas.resume(0)
        await _until(lambda: router.is_healthy(fresh[0]), timeout_s=60)
        assert {router.choose(make_prompt(500 + i, "x")).replica for i in range(20)} == set(fresh)


async def test_replica_dying_mid_request_fails_retryably_then_recovers(
    fresh: list[str],
    vllm_replicas: Any,
    vllm_pool: PoolSpec,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
) -> None:
    max_tokens = 3500
    async with PooledLiteLLMCaller(
        vllm_pool,
        router_config=RouterConfig(seed=0),
        health_interval_s=0.5,
        extra_body=SLOW,
    ) as pooled:
        router = pooled.router
        # litellm initialises itself lazily on its first streamed call (seconds).
        await pooled.complete(_request(vllm_model, make_prompt(20, "warm up"), 4), CallProgress())
        # The replica dies with the stream unfinished: at 10 ms per token the 3,500 tokens
        # take 35 s or more, and it is killed once the client has read a few.
        progress = CallProgress()
        request = _request(vllm_model, make_prompt(600, "long answer", system_words=50), max_tokens)
        call, victim = await _streaming(pooled, request, progress)
        index = fresh.index(victim)
        await asyncio.to_thread(vllm_replicas.kill, index)
        with pytest.raises(ProviderError) as failure:
            await call
        assert failure.value.retryable
        assert not router.is_healthy(victim)  # probed right after the failure
        assert router.stats()[victim].in_flight == 0
        assert progress.output_tokens < max_tokens
        # The executor's retry goes elsewhere and succeeds.
        retry = await pooled.complete(
            _request(vllm_model, make_prompt(600, "long answer", system_words=50), 8), CallProgress()
        )
        assert retry.replica != victim
        await asyncio.to_thread(vllm_replicas.restart, index)
        await _until(lambda: router.is_healthy(victim), timeout_s=60)
        assert victim in {router.choose(make_prompt(700 + i, "x")).replica for i in range(20)}
