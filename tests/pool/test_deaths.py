"""The pool's memory of requests that replicas died serving (poison requests), without HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orchestrator.catalog import ModelSpec
from orchestrator.errors import ProviderError
from orchestrator.model_client import ChatMessage, ChatRequest
from orchestrator.pool._deaths import RequestDeaths, request_key

REPLICA_A = "http://replica-a.test"
REPLICA_B = "http://replica-b.test"
MODEL = ModelSpec(
    name="tiny",
    litellm_model="hosted_vllm/tiny-llama",
    input_price_per_mtok=Decimal("0.1"),
    output_price_per_mtok=Decimal("0.4"),
    pool="local",
)
DROPPED = ProviderError("connection broke", retryable=True)
CRASHED = ProviderError("answered HTTP 500", retryable=True, status_code=500)


def _request(
    content: str, *, attempt: str = "a1", seed: int | None = None, max_tokens: int = 8
) -> ChatRequest:
    messages: tuple[ChatMessage, ...] = ({"role": "user", "content": content},)
    return ChatRequest(
        model=MODEL, messages=messages, max_tokens=max_tokens, seed=seed, metadata={"attempt_id": attempt}
    )


def test_retries_of_one_attempt_share_a_key_other_attempts_and_prompts_do_not() -> None:
    key = request_key(_request("hello"))
    assert request_key(_request("hello", seed=5, max_tokens=4)) == key  # a retry may change these
    assert request_key(_request("hello", attempt="a2")) != key
    assert request_key(_request("hello!")) != key
    assert request_key(_request("日本語 🙂")) == request_key(_request("日本語 🙂"))


def test_a_crash_with_5xx_makes_the_request_poison_at_once() -> None:
    deaths = RequestDeaths()
    key = request_key(_request("x"))
    error = deaths.died(key, CRASHED, replica=REPLICA_A, pool="local", health="`/health` answered HTTP 503")
    assert not error.retryable and error.status_code == 500
    message = str(error)
    assert f"replica `{REPLICA_A}` of pool `local` died while serving this request" in message
    assert "answered HTTP 500" in message and "`/health` answered HTTP 503" in message
    assert "not retried on another replica" in message and "replica's log" in message
    refusal = deaths.refusal(key)
    assert refusal is not None and not refusal.retryable
    assert str(refusal).startswith("not sent again: ")


def test_a_dropped_connection_is_forgiven_once_then_the_second_death_is_poison() -> None:
    deaths = RequestDeaths()
    key = request_key(_request("x"))
    first = deaths.died(key, DROPPED, replica=REPLICA_A, pool="local", health="connection refused")
    assert first.retryable
    assert "it will not be retried again" in str(first)
    assert deaths.refusal(key) is None
    second = deaths.died(key, DROPPED, replica=REPLICA_B, pool="local", health="connection refused")
    assert not second.retryable
    assert f"`{REPLICA_A}` died serving it before" in str(second)
    assert deaths.died_on(key) == (REPLICA_A, REPLICA_B)


def test_a_request_that_succeeded_is_forgotten() -> None:
    deaths = RequestDeaths()
    key = request_key(_request("x"))
    deaths.died(key, DROPPED, replica=REPLICA_A, pool="local", health="connection refused")
    deaths.forget(key)
    assert deaths.died_on(key) == () and len(deaths) == 0


def test_memory_is_bounded_least_recently_touched_first() -> None:
    deaths = RequestDeaths(max_requests=3)
    keys = [request_key(_request(f"prompt {i}")) for i in range(5)]
    for key in keys[:3]:
        deaths.died(key, CRASHED, replica=REPLICA_A, pool="local", health="gone")
    assert deaths.refusal(keys[0]) is not None  # touched: now the most recent
    for key in keys[3:]:
        deaths.died(key, DROPPED, replica=REPLICA_A, pool="local", health="gone")
    assert len(deaths) == 3
    assert deaths.died_on(keys[1]) == () and deaths.died_on(keys[2]) == ()
    assert deaths.refusal(keys[0]) is not None
    with pytest.raises(ValueError, match="at least 1"):
        RequestDeaths(max_requests=0)
