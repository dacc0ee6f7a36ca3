"""The promises on real vLLM replicas: the deadline cuts long generations on time, and a batch of
samples that all pass ends with one winner and every other attempt closed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from agents import LLMAgent
from budgetflow import arun
from orchestrator import (
    AttemptStatus,
    CallKind,
    CallStatus,
    Catalog,
    ModelSpec,
    Outcome,
    PoolSpec,
    Workflow,
)
from orchestrator.litellm_client import LiteLLMClient
from orchestrator.pool import PooledLiteLLMCaller
from tests.promises.invariants import check_result

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.timeout(300),
    pytest.mark.filterwarnings("ignore:Accessing the '.*' attribute on the instance is deprecated"),
]

SYSTEM = "You review budgets and deadlines for the board. " * 20


def _one_subtask(max_tokens: int) -> Workflow:
    wf = Workflow("pooled", inputs=["topic"])
    wf.subtask(
        "review", LLMAgent(system=SYSTEM, prompt="Review {topic}."), models=["tiny"], max_tokens=max_tokens
    )
    return wf


async def test_the_deadline_cuts_generation_on_the_pool(
    vllm_replicas: Any, vllm_pool: PoolSpec, vllm_model: ModelSpec
) -> None:
    """Two samples that would generate for 35 s each: the 5 s deadline ends the run on time."""
    catalog = Catalog.of(vllm_model, pools=(vllm_pool,))
    slow = PooledLiteLLMCaller(
        vllm_pool,
        extra_body={"ignore_eos": True, "vllm_xargs": {"decode_delay_ms": 10}},
        health_interval_s=0.5,
    )
    client = LiteLLMClient(catalog, pool_callers={"tiny": slow})
    try:
        result = await arun(
            _one_subtask(3500),
            catalog=catalog,
            budget_usd=Decimal("0.05"),
            deadline_s=5,
            inputs={"topic": "the plan"},
            policy="fixed:tiny:2",
            client=client,
        )
    finally:
        await client.aclose()
    returned = (datetime.now(UTC) - result.run.started_at).total_seconds()
    assert result.outcome is Outcome.DEADLINE_EXCEEDED, result.run.reason
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert len(llm) == 2 and all(c.status is CallStatus.CANCELLED for c in llm)
    assert all(c.replica in vllm_pool.replicas for c in llm)
    check_result(result, returned_after_s=returned)


async def test_samples_that_all_pass_on_the_pool_leave_one_winner(
    vllm_replicas: Any, vllm_pool: PoolSpec, vllm_model: ModelSpec
) -> None:
    catalog = Catalog.of(vllm_model, pools=(vllm_pool,))
    result = await arun(
        _one_subtask(8),
        catalog=catalog,
        budget_usd=Decimal("0.05"),
        deadline_s=120,
        inputs={"topic": "the plan"},
        policy="fixed:tiny:6",
    )
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    statuses = [a.status for a in result.attempts]
    assert statuses.count(AttemptStatus.PASSED) == 1
    assert set(statuses) <= {AttemptStatus.PASSED, AttemptStatus.PASSED_LATE, AttemptStatus.CANCELLED}
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert all(c.response_id is not None for c in llm if c.status is CallStatus.OK)
    check_result(result)
