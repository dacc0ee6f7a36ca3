"""The pooled caller when replicas fail: poison requests, full outages, token counts.

Against stand-in replicas on loopback (`replica_stub.StubReplica`: chat, ``/health``,
``/tokenize``) and ports nothing listens on; the same behaviours on real vLLM are in
`test_vllm_integration.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from typing import Literal

import pytest

from orchestrator._litellm import litellm_module
from orchestrator.catalog import ModelSpec, PoolSpec
from orchestrator.errors import ConfigError, ProviderError, ReplicaUnavailable
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest
from orchestrator.pool import PooledLiteLLMCaller, RouterConfig
from tests.pool.replica_stub import StubReplica, serve_replica, unused_url

# Real streamed litellm calls: litellm's process-wide state is bound to the first event
# loop that used it, so `make test` runs these in a process of their own.
pytestmark = [
    pytest.mark.isolated,
    pytest.mark.filterwarnings("ignore:Accessing the '.*' attribute on the instance is deprecated"),
]

POISON = "<<poison>>"
MODEL = ModelSpec(
    name="stub",
    litellm_model="hosted_vllm/stub-model",
    input_price_per_mtok=Decimal("0.1"),
    output_price_per_mtok=Decimal("0.4"),
    pool="stub",
)


@pytest.fixture(autouse=True, scope="module")
def _litellm_loaded() -> None:
    """Import litellm before the timed parts (its import takes seconds)."""
    litellm_module()


@contextmanager
def _two_replicas(mode: Literal["crash", "drop"]) -> Iterator[tuple[StubReplica, StubReplica]]:
    """Two live stub replicas that die on `POISON` the way `mode` says."""
    with ExitStack() as stack:
        a = stack.enter_context(serve_replica(StubReplica(script=["ok"], poison=POISON, poison_mode=mode)))
        b = stack.enter_context(serve_replica(StubReplica(script=["ok"], poison=POISON, poison_mode=mode)))
        yield a, b


def _pool(*replicas: str) -> PoolSpec:
    return PoolSpec(name="stub", served_model="stub-model", replicas=replicas, kv_capacity_tokens=16 * 1024)


def _caller(*replicas: str, unavailable_wait_s: float | None = 30.0) -> PooledLiteLLMCaller:
    """A caller without background health checks: what a test does to the router stays."""
    return PooledLiteLLMCaller(
        _pool(*replicas),
        router_config=RouterConfig(seed=0),
        health_checks=False,
        health_timeout_s=1.0,
        unavailable_wait_s=unavailable_wait_s,
    )


def _request(content: str, *, timeout_s: float | None = 30, seed: int | None = None) -> ChatRequest:
    messages: tuple[ChatMessage, ...] = ({"role": "user", "content": content},)
    return ChatRequest(
        model=MODEL,
        messages=messages,
        max_tokens=64,
        timeout_s=timeout_s,
        seed=seed,
        metadata={"attempt_id": "attempt-1"},
    )


def _served(*stubs: StubReplica) -> list[int]:
    return [len(s.requests) for s in stubs]


# -- seeds ------------------------------------------------------------------------------


async def test_a_seed_is_sent_only_when_the_request_has_one() -> None:
    with serve_replica(StubReplica(script=["ok"])) as stub:
        async with _caller(stub.base_url) as caller:
            await caller.complete(_request("no seed"), CallProgress())
            await caller.complete(_request("seeded", seed=7), CallProgress())
    assert "seed" not in stub.requests[0]
    assert stub.requests[1]["seed"] == 7


# -- poison requests ---------------------------------------------------------------------


async def test_a_request_its_replica_died_on_with_5xx_is_not_retried_elsewhere() -> None:
    with _two_replicas("crash") as two_replicas:
        async with _caller(*(s.base_url for s in two_replicas)) as caller:
            poison = _request(f"please {POISON}")
            with pytest.raises(ProviderError) as failure:
                await caller.complete(poison, CallProgress())
            assert not failure.value.retryable
            victim, other = two_replicas if not two_replicas[0].alive else two_replicas[::-1]
            message = str(failure.value)
            assert f"replica `{victim.base_url}` of pool `stub` died while serving this request" in message
            assert "answered HTTP 500" in message and "`/health` answered HTTP 503" in message
            assert "not retried on another replica" in message and "replica's log" in message
            assert not caller.router.is_healthy(victim.base_url)
            # Sent again anyway (a caller that ignores `retryable`): refused, the other replica untouched.
            with pytest.raises(ProviderError, match=r"^not sent again: ") as again:
                await caller.complete(poison, CallProgress())
            assert not again.value.retryable
            assert _served(victim, other) == [1, 0] and other.alive
            # The pool keeps serving everything else.
            reply = await caller.complete(_request("a normal question"), CallProgress())
            assert reply.replica == other.base_url


async def test_a_dropped_connection_is_retried_once_and_a_second_death_is_final() -> None:
    with _two_replicas("drop") as two_replicas:
        async with _caller(*(s.base_url for s in two_replicas)) as caller:
            poison = _request(f"please {POISON}")
            # A replica that dies mid-answer may have died of something else: one retry elsewhere.
            with pytest.raises(ProviderError) as first:
                await caller.complete(poison, CallProgress())
            assert first.value.retryable and first.value.status_code is None
            assert "dropped the connection and died while serving this request" in str(first.value)
            first_victim = first.value.args[0].split("`")[1]
            # The gateway's retry kills the second replica too: that is the end of it.
            with pytest.raises(ProviderError) as second:
                await caller.complete(poison, CallProgress())
            assert not second.value.retryable
            assert f"`{first_victim}` died serving it before" in str(second.value)
            assert "not retried on another replica" in str(second.value)
            assert _served(*two_replicas) == [1, 1]
            assert not any(s.alive for s in two_replicas)


async def test_a_5xx_from_a_replica_that_stays_up_is_retryable() -> None:
    with serve_replica(StubReplica(script=[500, "ok"])) as stub:
        async with _caller(stub.base_url) as caller:
            with pytest.raises(ProviderError) as failure:
                await caller.complete(_request("x"), CallProgress())
            assert failure.value.retryable and failure.value.status_code == 500
            assert caller.router.is_healthy(stub.base_url)
            reply = await caller.complete(_request("x"), CallProgress())
    assert reply.text == "Hello from the stub"


# -- outages -----------------------------------------------------------------------------


async def test_a_call_during_a_full_outage_waits_then_fails_once_saying_why() -> None:
    with serve_replica(StubReplica(script=["ok"], alive=False)) as dead:
        refused = unused_url()
        async with _caller(dead.base_url, refused, unavailable_wait_s=1.5) as caller:
            caller.router.mark_down(dead.base_url, "health check failed: `/health` answered HTTP 503")
            caller.router.mark_down(refused, "health check failed: connection refused")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ReplicaUnavailable) as failure:
                await caller.complete(_request("x"), CallProgress())
            waited = loop.time() - started
    assert 1.5 <= waited < 4.0
    assert not failure.value.retryable  # the pool already waited; retrying would wait again
    message = str(failure.value)
    assert message.startswith("no healthy replica in pool `stub` after waiting 1.5 s")
    assert "the pool's `unavailable_wait_s`" in message
    assert f"`{dead.base_url}` down since " in message and "answered HTTP 503" in message
    assert f"`{refused}` down since " in message and "connection refused" in message
    assert "start or fix the replicas" in message
    assert dead.requests == []  # nothing was sent, so nothing was recorded per poll
    # Probed with backoff (0.25 s, then 0.5 s, 1 s...), not in a tight loop.
    assert 1 <= dead.health_checks <= 4


async def test_the_request_timeout_bounds_the_outage_wait() -> None:
    async with _caller(unused_url(), unavailable_wait_s=60) as caller:
        caller.router.mark_down(caller.router.replicas[0], "health check failed: connection refused")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ReplicaUnavailable, match=r"the request's `timeout_s` of 0\.5 s"):
            await caller.complete(_request("x", timeout_s=0.5), CallProgress())
        assert loop.time() - started < 3.0


async def test_a_replica_coming_back_during_the_wait_serves_the_call() -> None:
    with serve_replica(StubReplica(script=["ok"], alive=False)) as stub:
        async with _caller(stub.base_url, unused_url(), unavailable_wait_s=30) as caller:
            for replica in caller.router.replicas:
                caller.router.mark_down(replica, "health check failed")
            loop = asyncio.get_running_loop()
            loop.call_later(0.6, setattr, stub, "alive", True)
            started = loop.time()
            reply = await caller.complete(_request("x"), CallProgress())
            waited = loop.time() - started
            assert reply.replica == stub.base_url and reply.text == "Hello from the stub"
            assert caller.router.is_healthy(stub.base_url)
    assert 0.6 <= waited < 4.0  # noticed by the next probe (at most 2 s apart)
    assert len(stub.requests) == 1


def test_a_negative_outage_wait_is_refused() -> None:
    with pytest.raises(ConfigError, match="`unavailable_wait_s` of pool `stub` must be at least 0"):
        _caller("http://127.0.0.1:9", unavailable_wait_s=-1)


# -- token counts ------------------------------------------------------------------------


async def test_prompt_tokens_are_counted_by_the_replica_with_its_chat_template() -> None:
    messages: tuple[ChatMessage, ...] = (
        {"role": "system", "content": "you are terse"},
        {"role": "user", "content": "count these words 日本 🙂"},
    )
    with serve_replica(StubReplica(script=["ok"])) as stub:
        async with _caller(stub.base_url) as caller:
            count = await caller.count_prompt_tokens(messages)
    assert count == StubReplica.token_count(messages)
    assert stub.tokenize_requests == [
        {"model": "stub-model", "messages": [dict(m) for m in messages], "add_generation_prompt": True}
    ]


async def test_a_replica_that_cannot_count_is_passed_over() -> None:
    messages: tuple[ChatMessage, ...] = ({"role": "user", "content": "one two three"},)
    with (
        serve_replica(StubReplica(script=["ok"], tokenize_status=404)) as broken,
        serve_replica(StubReplica(script=["ok"])) as fine,
    ):
        async with _caller(broken.base_url, fine.base_url) as caller:
            assert await caller.count_prompt_tokens(messages) == 6
    assert len(broken.tokenize_requests) == 1 and len(fine.tokenize_requests) == 1


async def test_a_count_nobody_can_give_fails_retryably_saying_why() -> None:
    messages: tuple[ChatMessage, ...] = ({"role": "user", "content": "x"},)
    with serve_replica(StubReplica(script=["ok"], tokenize_status=404)) as broken:
        refused = unused_url()
        async with _caller(broken.base_url, refused) as caller:
            with pytest.raises(ProviderError) as failure:
                await caller.count_prompt_tokens(messages)
            assert failure.value.retryable
            message = str(failure.value)
            assert f"`{broken.base_url}`: `/tokenize` answered HTTP 404" in message
            assert f"`{refused}`: connection refused" in message
            assert message.endswith("count an upper bound instead")
            for replica in caller.router.replicas:
                caller.router.mark_down(replica)
            with pytest.raises(ProviderError, match="no healthy replica in pool `stub`") as down:
                await caller.count_prompt_tokens(messages)
            assert down.value.retryable
