"""The pool against two real vLLM CPU replicas of the tiny model.

Run with `pytest -m vllm tests/pool` (the replicas start once per session, ~1-2 min).
The two tests that kill a replica run last, because each restarts it (~1.5 min).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from orchestrator.catalog import ModelSpec, PoolSpec
from orchestrator.errors import ProviderError, ReplicaUnavailable
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


async def test_counted_prompt_tokens_are_the_prompt_tokens_vllm_bills(
    fresh: list[str],
    caller: PooledLiteLLMCaller,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
) -> None:
    system = make_prompt(800, "")[0]
    prompts: dict[str, tuple[ChatMessage, ...]] = {
        "ascii": make_prompt(800, "what is the plan?"),
        "cached": make_prompt(800, "what is the plan?"),  # the same again: served from cache
        "cjk": (
            system,
            {"role": "user", "content": "東京の天気はどうですか？ 请用中文回答。한국어도 괜찮아요."},
        ),
        "digits": ({"role": "user", "content": "3.14159 2718281828 1,000,000 0x1F 12:30 -42 1e-9"},),
        "emoji": (
            {"role": "system", "content": "réponds brièvement 🙂"},
            {"role": "user", "content": "👩\u200d💻🚀🎉 naïve café — “quotes” ½ ∑ ∞"},
            {"role": "assistant", "content": "✅ d'accord"},
            {"role": "user", "content": "encore 🔁"},
        ),
    }
    replies: dict[str, ChatResponse] = {}
    for name, messages in prompts.items():
        counted = await caller.count_prompt_tokens(messages)
        replies[name] = await caller.complete(_request(vllm_model, messages, 4), CallProgress())
        assert counted == replies[name].input_tokens, name
    assert replies["ascii"].cached_tokens == 0
    assert replies["cached"].cached_tokens > 0


async def test_full_outage_waits_inside_the_call_and_a_replica_coming_back_serves_it(
    fresh: list[str],
    vllm_replicas: Any,
    vllm_pool: PoolSpec,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
) -> None:
    loop = asyncio.get_running_loop()
    options: dict[str, Any] = {"health_interval_s": 0.2, "health_timeout_s": 1.0}
    vllm_replicas.pause(0)
    vllm_replicas.pause(1)
    try:
        # Every replica stops answering: one call waits `unavailable_wait_s`, then fails once.
        async with PooledLiteLLMCaller(vllm_pool, unavailable_wait_s=3.0, **options) as pooled:
            assert not any(s.healthy for s in pooled.router.stats().values())
            started = loop.time()
            with pytest.raises(ReplicaUnavailable) as failure:
                await pooled.complete(_request(vllm_model, make_prompt(900, "anyone?")), CallProgress())
            assert loop.time() - started >= 3.0
        assert not failure.value.retryable
        message = str(failure.value)
        assert f"no healthy replica in pool `{vllm_pool.name}` after waiting 3." in message
        for url in fresh:
            assert f"`{url}` down since " in message
        assert "no answer within 1 s" in message
        # A replica that comes back while a call waits serves that call.
        async with PooledLiteLLMCaller(vllm_pool, unavailable_wait_s=120.0, **options) as pooled:
            loop.call_later(2.0, vllm_replicas.resume, 0)
            started = loop.time()
            reply = await pooled.complete(_request(vllm_model, make_prompt(901, "back?")), CallProgress())
            assert loop.time() - started >= 2.0
            assert reply.replica == fresh[0] and reply.output_tokens > 0
    finally:
        vllm_replicas.resume(0)
        vllm_replicas.resume(1)


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


async def test_seeded_prompt_that_crashes_vllm_cpu_is_not_retried_on_the_other_replica(
    fresh: list[str],
    vllm_replicas: Any,
    vllm_pool: PoolSpec,
    vllm_model: ModelSpec,
    make_prompt: MakePrompt,
    http: httpx.AsyncClient,
) -> None:
    """The real crash, not a simulated one: vLLM CPU 0.32 kills its engine on a request
    with a `seed` whose uncached prompt is longer than `--max-num-batched-tokens`. Such
    a prompt is prefilled in chunks, and after a partial chunk the model runner rewinds
    the request's seeded generator (``gen.set_offset``), which a CPU generator does not
    support (``RuntimeError: CPU Generator does not use offset``): the engine dies, the
    request gets HTTP 500 and ``/health`` answers 503. Sent to the next replica, it
    would kill that one too."""
    limit = vllm_replicas.options.max_num_batched_tokens
    async with PooledLiteLLMCaller(
        vllm_pool, router_config=RouterConfig(seed=0), health_interval_s=0.5
    ) as pooled:
        router = pooled.router
        messages = make_prompt(1000, "summarise all of the above", system_words=600)
        tokens = await pooled.count_prompt_tokens(messages)
        assert limit < tokens < vllm_replicas.options.max_model_len - 16
        before = await _metrics(http, fresh)
        request = ChatRequest(
            model=vllm_model,
            messages=messages,
            max_tokens=8,
            timeout_s=120,
            seed=1234,
            metadata={"attempt_id": "seeded"},
        )
        with pytest.raises(ProviderError) as failure:
            await pooled.complete(request, CallProgress())
        assert not failure.value.retryable
        victim = next(url for url in fresh if not router.is_healthy(url))
        other = next(url for url in fresh if url != victim)
        message = str(failure.value)
        assert f"replica `{victim}` of pool `{vllm_pool.name}` died while serving this request" in message
        assert "answered HTTP 500" in message and "not retried on another replica" in message
        # The other replica never saw the request and is still up.
        assert (await http.get(f"{other}/health")).status_code == 200
        assert router.is_healthy(other)
        assert (await fetch_metrics(http, other)).prompt_tokens == before[other].prompt_tokens
        # Sent again, it is refused; without the seed the same prompt is served, billed as counted.
        with pytest.raises(ProviderError, match=r"^not sent again: "):
            await pooled.complete(request, CallProgress())
        unseeded = dataclasses.replace(request, seed=None, metadata={"attempt_id": "unseeded"})
        reply = await pooled.complete(unseeded, CallProgress())
        assert reply.replica == other and reply.input_tokens == tokens
        await asyncio.to_thread(vllm_replicas.restart, fresh.index(victim))
        await _until(lambda: router.is_healthy(victim), timeout_s=60)
