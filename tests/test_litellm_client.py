"""The production client through litellm, against a local server speaking the OpenAI protocol."""

from __future__ import annotations

from decimal import Decimal

import pytest

from agents import LLMAgent
from budgetflow import arun
from orchestrator import (
    CallKind,
    CallStatus,
    Catalog,
    LiteLLMClient,
    ModelSpec,
    Outcome,
    RetryPolicy,
    Workflow,
)
from orchestrator._litellm import litellm_module
from tests.openai_stub import ScriptedProvider, serve

# litellm keeps process-wide state (cached clients, a logging worker) bound to the event loop
# that first used it; after other tests' loops have come and gone, a streamed call in a new
# loop can wait forever. `make test` runs these in a process of their own.
pytestmark = pytest.mark.isolated


@pytest.fixture(autouse=True, scope="module")
def _litellm_loaded() -> None:
    """Import litellm before the runs start, so its slow import does not eat their deadline."""
    litellm_module()


def _catalog(url: str) -> Catalog:
    return Catalog.of(
        ModelSpec(
            name="hosted",
            litellm_model="openai/stub-model",
            api_base=url,
            input_price_per_mtok="1.00",
            output_price_per_mtok="2.00",
        )
    )


async def test_429_500_and_malformed_replies_are_retried_recorded_and_priced() -> None:
    with serve(ScriptedProvider(script=[429, 500, "malformed", "ok"])) as stub:
        catalog = _catalog(stub.url)
        wf = Workflow("hosted")
        wf.subtask("ask", LLMAgent(prompt="Say hello"), models=["hosted"], max_tokens=50)
        client = LiteLLMClient(catalog, api_keys={"openai": "sk-test"})
        result = await arun(
            wf,
            catalog=catalog,
            budget_usd=1,
            deadline_s=600,
            policy="always_cheapest",
            client=client,
            retry=RetryPolicy(max_retries=3, base_delay_s=0.01),
        )
        await client.aclose()
    assert result.outcome is Outcome.COMPLETED
    assert result.outputs["ask"] == "Hello from the stub"
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert [c.retry for c in llm] == [0, 1, 2, 3]
    assert [c.status for c in llm] == [CallStatus.ERROR] * 3 + [CallStatus.OK]
    assert "429" in (llm[0].error or "") or "RateLimit" in (llm[0].error or "")
    assert "500" in (llm[1].error or "") or "InternalServer" in (llm[1].error or "")
    assert all(c.cost_usd == 0 for c in llm[:3])
    ok = llm[3]
    assert (ok.input_tokens, ok.output_tokens) == (12, 4)
    assert ok.cost_usd == Decimal(12 * 1000 + 4 * 2000) / 10**9
    assert ok.ttft_s is not None and ok.ttft_s <= ok.latency_s
    assert result.spent_usd == ok.cost_usd
    assert len(stub.requests) == 4 and stub.requests[0]["max_tokens"] == 50


async def test_retries_give_up_after_the_limit_and_the_run_reports_it() -> None:
    with serve(ScriptedProvider(script=[503])) as stub:
        catalog = _catalog(stub.url)
        wf = Workflow("hosted")
        wf.subtask("ask", LLMAgent(prompt="Say hello"), models=["hosted"], max_attempts=1, max_tokens=50)
        client = LiteLLMClient(catalog, api_keys={"openai": "sk-test"})
        result = await arun(
            wf,
            catalog=catalog,
            budget_usd=1,
            deadline_s=600,
            policy="always_cheapest",
            client=client,
            retry=RetryPolicy(max_retries=2, base_delay_s=0.01),
        )
        await client.aclose()
    assert result.outcome is Outcome.FAILED
    assert "max_attempts=1" in (result.run.reason or "")
    assert [c.status for c in result.calls if c.kind is CallKind.LLM] == [CallStatus.ERROR] * 3
    assert result.spent_usd == 0
