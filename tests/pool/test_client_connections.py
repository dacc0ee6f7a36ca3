"""The pooled caller's HTTP connections, against a local OpenAI-protocol stub (no vLLM).

A call that ends normally leaves its connection for the next call; a cancelled or
timed-out call must close it at once, so that the server (vLLM) sees the client go
away and stops generating.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import pytest

from orchestrator._litellm import litellm_module
from orchestrator.catalog import ModelSpec, PoolSpec
from orchestrator.errors import ProviderError
from orchestrator.model_client import CallProgress, ChatRequest
from orchestrator.pool import PooledLiteLLMCaller
from tests.openai_stub import ScriptedProvider, serve

# Real streamed litellm calls: litellm's process-wide state is bound to the first event
# loop that used it, so `make test` runs these in a process of their own.
pytestmark = [
    pytest.mark.isolated,
    pytest.mark.filterwarnings("ignore:Accessing the '.*' attribute on the instance is deprecated"),
]

DISCONNECT_WITHIN_S = 1.0
"""How soon after the call ends the server must see the client go away."""


@pytest.fixture(autouse=True, scope="module")
def _litellm_loaded() -> None:
    """Import litellm before the timed parts (its import takes seconds)."""
    litellm_module()


@pytest.fixture
def stub() -> Iterator[ScriptedProvider]:
    with serve(ScriptedProvider(script=["ok", "ok", "slow", "ok"], slow_interval_s=0.01)) as provider:
        yield provider


def _pool(stub: ScriptedProvider) -> PoolSpec:
    return PoolSpec(
        name="stub",
        served_model="stub-model",
        replicas=(stub.url.removesuffix("/v1"),),
        kv_capacity_tokens=16 * 1024,
    )


def _request(timeout_s: float = 60) -> ChatRequest:
    model = ModelSpec(
        name="stub",
        litellm_model="hosted_vllm/stub-model",
        input_price_per_mtok=Decimal("0.1"),
        output_price_per_mtok=Decimal("0.4"),
        pool="stub",
    )
    return ChatRequest(
        model=model, messages=({"role": "user", "content": "hello"},), max_tokens=10_000, timeout_s=timeout_s
    )


async def _until(check: Callable[[], bool], *, timeout_s: float) -> None:
    """Poll `check` until it holds; fail the test after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def _seen_disconnect(stub: ScriptedProvider, *, since: float) -> float:
    """Seconds from `since` until the stub saw its client go away (fails after 10 s)."""
    await _until(lambda: bool(stub.disconnects), timeout_s=10)
    return stub.disconnects[0] - since


async def _until_streaming(progress: CallProgress) -> None:
    await _until(lambda: progress.output_tokens >= 3, timeout_s=30)


async def test_normal_calls_reuse_one_connection(stub: ScriptedProvider) -> None:
    async with PooledLiteLLMCaller(_pool(stub), health_checks=False) as caller:
        first = await caller.complete(_request(), CallProgress())
        second = await caller.complete(_request(), CallProgress())
    assert first.text == second.text == "Hello from the stub"
    assert len(stub.client_ports) == 2
    assert stub.client_ports[0] == stub.client_ports[1], "the second call opened a new connection"


async def test_cancelled_call_drops_its_connection_at_once(stub: ScriptedProvider) -> None:
    async with PooledLiteLLMCaller(_pool(stub), health_checks=False) as caller:
        await caller.complete(_request(), CallProgress())
        await caller.complete(_request(), CallProgress())
        progress = CallProgress()
        call = asyncio.create_task(caller.complete(_request(), progress))
        await _until_streaming(progress)
        call.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await call
        assert await _seen_disconnect(stub, since=cancelled_at) < DISCONNECT_WITHIN_S
        assert caller.router.stats()[_pool(stub).replicas[0]].in_flight == 0
        # The next call works, on a new connection (the reused one was closed).
        after = await caller.complete(_request(), CallProgress())
    assert after.text == "Hello from the stub"
    assert stub.client_ports[2] == stub.client_ports[0]
    assert stub.client_ports[3] != stub.client_ports[2]


async def test_timed_out_call_drops_its_connection_and_fails_retryably() -> None:
    with serve(ScriptedProvider(script=["slow"], slow_interval_s=0.01)) as stub:
        async with PooledLiteLLMCaller(_pool(stub), health_checks=False) as caller:
            started = time.monotonic()
            with pytest.raises(ProviderError) as failure:
                await caller.complete(_request(timeout_s=1.0), CallProgress())
            assert failure.value.retryable
            assert await _seen_disconnect(stub, since=started + 1.0) < DISCONNECT_WITHIN_S
