"""Money: spend never exceeds the budget with real token counts; an overbilling provider is recorded.

Against the billing provider (an OpenAI-protocol server on loopback that bills
prompt tokens with the real tokenizer; it stands in for a paid provider).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from agents import LLMAgent
from budgetflow import arun
from orchestrator import (
    AttemptEstimate,
    Catalog,
    InProcessLedger,
    LogNormal,
    ModelSpec,
    Outcome,
    Workflow,
)
from orchestrator.ledger import usd_to_nano
from orchestrator.records import CallKind
from orchestrator.tokens import SIMULATED_ENCODING, tiktoken_count
from storage import SqlRecorder, get_run
from tests.promises.billing_provider import BillingProvider
from tests.promises.conftest import provider_model
from tests.promises.invariants import check_promises, check_result

# litellm keeps process-wide state across event loops: `make test` runs these in their own process.
pytestmark = pytest.mark.isolated

CJK = "预算从不超出截止时间总是遵守每个子任务只有一个赢家没有丢失的调用记录"
EXPENSIVE = {"input_per_mtok": "1000", "output_per_mtok": "1000"}


def _one_subtask(max_tokens: int = 16, *, samples_model: str = "gpt") -> Workflow:
    wf = Workflow("summarise", inputs=["doc"])
    wf.subtask("summary", LLMAgent(prompt="{doc}"), models=[samples_model], max_tokens=max_tokens)
    return wf


@pytest.mark.parametrize(
    ("label", "doc"),
    [("1,200 CJK characters", (CJK * 40)[:1200]), ("2,000 digits", "1234567890" * 200)],
)
async def test_a_prompt_bigger_than_the_budget_is_refused_before_the_call(
    provider: BillingProvider, label: str, doc: str
) -> None:
    """At 1,000 $/Mtok the exact count no longer fits in $0.60: no call is made, nothing is spent."""
    catalog = Catalog.of(provider_model(provider, **EXPENSIVE))
    result = await arun(
        _one_subtask(),
        catalog=catalog,
        budget_usd="0.60",
        deadline_s=30,
        inputs={"doc": doc},
        policy="always_cheapest",
    )
    assert result.outcome is Outcome.BUDGET_EXHAUSTED, result.run.reason
    assert "nothing more fits in the $0.600000 left of the budget: `summary`" in (result.run.reason or "")
    assert provider.log() == [], f"{label}: the provider was called although the prompt cannot be paid for"
    check_result(result, provider_log=[])


async def test_a_prompt_that_fits_is_held_at_its_exact_size(provider: BillingProvider) -> None:
    doc = (CJK * 40)[:700]
    catalog = Catalog.of(provider_model(provider, **EXPENSIVE))
    result = await arun(
        _one_subtask(),
        catalog=catalog,
        budget_usd="0.60",
        deadline_s=30,
        inputs={"doc": doc},
        policy="always_cheapest",
    )
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    log = provider.log()
    (call,) = [c for c in result.calls if c.kind is CallKind.LLM]
    (entry,) = log
    assert call.input_tokens == entry.prompt_tokens  # counted before = billed after
    assert call.reserved_usd >= call.cost_usd
    assert result.spent_usd == call.cost_usd <= Decimal("0.60")
    check_result(result, provider_log=log)


async def test_an_overbilling_provider_is_recorded_as_overrun(provider: BillingProvider) -> None:
    """A provider billing 3x max_tokens: charged as far as the budget goes, the rest recorded."""
    provider.configure(completion_multiplier=3.0)
    catalog = Catalog.of(provider_model(provider, input_per_mtok="1.00", output_per_mtok="100.00"))
    wf = Workflow("chain", inputs=["topic"])
    first = wf.subtask("first", LLMAgent(prompt="Plan {topic}"), models=["gpt"], max_tokens=100)
    second = wf.subtask(
        "second", LLMAgent(prompt="Do {first}"), models=["gpt"], after=[first], max_tokens=100
    )
    wf.subtask("third", LLMAgent(prompt="Check {second}"), models=["gpt"], after=[second], max_tokens=100)
    result = await arun(
        wf, catalog=catalog, budget_usd="0.05", deadline_s=30, inputs={"topic": "x"}, policy="always_cheapest"
    )
    billed = sum(c.cost_usd for c in result.calls)
    assert result.run.overrun_usd > 0
    assert billed == result.spent_usd + result.run.overrun_usd
    assert result.spent_usd <= Decimal("0.05") < billed
    assert "overrun" in (result.run.reason or "")
    check_result(
        result,
        provider_log=provider.log(),
    )


async def test_the_simulated_backend_bills_the_real_prompt_size() -> None:
    """A 60,330-character prompt is costed at its real token count, not at the estimate's 500 tokens."""
    doc = ("The budget is a promise. " * 2500)[:60_330]
    spec = ModelSpec(
        name="sim",
        litellm_model="budgetflow-sim/sim",
        input_price_per_mtok=Decimal("1.00"),
        output_price_per_mtok=Decimal("2.00"),
    )
    wf = Workflow("long", inputs=["doc"])
    estimate = AttemptEstimate(
        success_prob=1.0, output_tokens=LogNormal(mean=10), latency_s=LogNormal(mean=0.01), input_tokens=500
    )
    wf.subtask("read", LLMAgent(prompt="{doc}"), models=["sim"], estimates={"sim": estimate})
    result = await arun(
        wf,
        catalog=Catalog.of(spec),
        budget_usd="1",
        deadline_s=30,
        inputs={"doc": doc},
        policy="always_cheapest",
    )
    (call,) = [c for c in result.calls if c.kind is CallKind.LLM]
    expected = tiktoken_count(SIMULATED_ENCODING, [{"role": "user", "content": doc}])
    assert expected > 10_000
    assert call.input_tokens == expected
    assert (
        call.cost_usd
        == Decimal(spec.cost_nano(input_tokens=expected, output_tokens=call.output_tokens)) / 10**9
    )
    assert call.reserved_usd >= call.cost_usd


@pytest.mark.postgres
async def test_samples_cancelled_while_their_records_commit_still_settle(
    provider: BillingProvider, postgres_url: str
) -> None:
    """A slow commit (a real trigger sleeping in PostgreSQL) while the winner cancels its siblings."""
    provider.configure(barrier=4, reply_tokens=5)
    async with await SqlRecorder.open(postgres_url) as recorder:
        pass
    import psycopg

    with psycopg.connect(postgres_url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger AS $$ BEGIN PERFORM pg_sleep(0.3);"
            " RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.execute("CREATE TRIGGER slow BEFORE INSERT ON calls FOR EACH ROW EXECUTE FUNCTION slow_commit()")
    catalog = Catalog.of(provider_model(provider))
    ledger = InProcessLedger(usd_to_nano("0.10"))
    recorder = await SqlRecorder.open(postgres_url)
    try:
        result = await arun(
            _one_subtask(),
            catalog=catalog,
            budget_usd="0.10",
            deadline_s=60,
            inputs={"doc": "hello"},
            policy="fixed:gpt:4",
            recorder=recorder,
            ledger=ledger,
        )
    finally:
        await recorder.aclose()
    assert result.outcome is Outcome.COMPLETED, result.run.reason
    snap = await ledger.snapshot()
    assert snap.reserved_nano == 0, "a cancelled sample's hold was never settled"
    detail = get_run(postgres_url, result.run_id)
    assert len(detail.attempts) == 4
    check_promises(
        detail.run,
        subtasks=detail.subtasks,
        attempts=detail.attempts,
        calls=detail.calls,
        provider_log=provider.log(),
    )
    assert snap.spent_nano == usd_to_nano(sum(c.cost_usd for c in detail.calls))
    await asyncio.sleep(0)
