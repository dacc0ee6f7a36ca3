"""A whole workflow through the executor on real vLLM replicas: ledger, recorder and tree see the pool."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from agents import LLMAgent
from budgetflow import arun
from orchestrator import CallKind, CallStatus, Catalog, ModelSpec, Outcome, PoolSpec, Workflow

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(300)]

SYSTEM = "You are agent seven of the review board. " * 60  # a long shared prefix


async def test_workflow_on_the_pool_records_replicas_and_cached_tokens(
    vllm_replicas: Any, vllm_pool: PoolSpec, vllm_model: ModelSpec
) -> None:
    catalog = Catalog.of(vllm_model, pools=(vllm_pool,))
    wf = Workflow("pooled", inputs=["topic"])
    first = wf.subtask(
        "first", LLMAgent(system=SYSTEM, prompt="Review {topic}."), models=["tiny"], max_tokens=16
    )
    wf.subtask(
        "second",
        LLMAgent(system=SYSTEM, prompt="Review {first}."),
        models=["tiny"],
        after=[first],
        max_tokens=16,
    )
    wf.subtask(
        "third",
        LLMAgent(system=SYSTEM, prompt="Summarise {first}."),
        models=["tiny"],
        after=[first],
        max_tokens=16,
    )
    result = await arun(
        wf,
        catalog=catalog,
        budget_usd=Decimal("0.01"),
        deadline_s=120,
        inputs={"topic": "x"},
        policy="always_cheapest",
        seed=0,
    )
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert len(llm) == 3 and all(c.status is CallStatus.OK for c in llm)
    assert all(c.replica in vllm_pool.replicas for c in llm)
    assert all(c.output_tokens > 0 and c.ttft_s is not None for c in llm)
    # the two later calls share the long system prompt with the first: served from cache
    later = [c for c in llm if c.subtask in ("second", "third")]
    assert all(c.cached_tokens >= 32 for c in later)
    for c in llm:
        expected = vllm_model.cost_nano(
            input_tokens=c.input_tokens, output_tokens=c.output_tokens, cached_tokens=c.cached_tokens
        )
        assert c.cost_usd == Decimal(expected) / 10**9
    assert sum(c.cost_usd for c in llm) == result.spent_usd <= Decimal("0.01")
