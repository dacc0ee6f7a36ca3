"""Time: a run ends at its deadline, whatever is in flight or thinking; no reply is used after it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agents import LLMAgent
from budgetflow import arun
from orchestrator import (
    Allocation,
    Assignment,
    Catalog,
    ModelSpec,
    Outcome,
    PlanState,
    Workflow,
)
from orchestrator._estimate_book import EstimateBook
from orchestrator.model_client import CallProgress, ChatRequest, ChatResponse
from orchestrator.records import CallKind, CallStatus
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from storage import get_run, list_runs
from tests.conftest import estimate
from tests.promises.billing_provider import BillingProvider
from tests.promises.conftest import provider_model
from tests.promises.invariants import DEADLINE_SLACK_S, check_promises, check_result

pytestmark = pytest.mark.isolated

REPO = Path(__file__).resolve().parents[2]


class _Ponderous:
    """A searching policy that takes far longer than the run has (it runs off the loop)."""

    name = "ponderous"
    offload = True

    def __init__(self, think_s: float) -> None:
        self.think_s = think_s

    def decide(self, state: PlanState) -> Allocation:
        time.sleep(self.think_s)
        return Allocation(assignments={s: Assignment(model=state.dag.models[s][0]) for s in state.ready})


async def test_a_decision_longer_than_the_deadline_does_not_delay_the_end() -> None:
    catalog = Catalog.of(
        ModelSpec(
            name="m", litellm_model="budgetflow-sim/m", input_price_per_mtok="1", output_price_per_mtok="1"
        )
    )
    wf = Workflow("w", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="{topic}"), models=["m"], estimates={"m": estimate(1.0, latency=0.1)})
    client = SimulatedClient(SimulatedBackend(EstimateBook.build(wf, catalog).table))
    result = await arun(
        wf,
        catalog=catalog,
        budget_usd=1,
        deadline_s=1.0,
        inputs={"topic": "t"},
        policy=_Ponderous(think_s=3.0),
        client=client,
    )
    returned = (datetime.now(UTC) - result.run.started_at).total_seconds()
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    assert returned <= 1.0 + DEADLINE_SLACK_S, returned
    check_result(result, returned_after_s=returned)


async def test_calls_streaming_at_the_deadline_are_cut_and_settled(provider: BillingProvider) -> None:
    provider.configure(reply_tokens=400, token_interval_s=0.05)  # 20 s of reply
    catalog = Catalog.of(provider_model(provider))
    wf = Workflow("slow", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="Write about {topic}"), models=["gpt"], max_tokens=1000)
    result = await arun(
        wf, catalog=catalog, budget_usd=1, deadline_s=3, inputs={"topic": "t"}, policy="fixed:gpt:2"
    )
    returned = (datetime.now(UTC) - result.run.started_at).total_seconds()
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert len(llm) == 2 and all(c.status is CallStatus.CANCELLED for c in llm)
    assert all(0 < c.output_tokens < 400 for c in llm), [
        (c.output_tokens, c.input_tokens, c.cost_usd, c.reserved_usd, c.error) for c in llm
    ]
    log = provider.log()
    assert len(log) == 2 and not any(e.delivered for e in log)
    check_result(result, returned_after_s=returned, provider_log=log)


def _workflow_file(tmp_path: Path, provider: BillingProvider) -> Path:
    path = tmp_path / "slow_chain.py"
    path.write_text(
        textwrap.dedent(
            f"""
            from decimal import Decimal
            from agents import LLMAgent
            from orchestrator import Catalog, ModelSpec, Workflow

            catalog = Catalog.of(
                ModelSpec(name="gpt", litellm_model="openai/gpt-4o-mini", api_base="{provider.url}",
                          input_price_per_mtok=Decimal("0.15"), output_price_per_mtok=Decimal("0.60"))
            )
            workflow = Workflow("slow-chain", inputs=["topic"])
            previous = None
            for i in range(6):
                prompt = "Begin {{topic}}" if previous is None else "Go on from {{" + previous + "}}"
                workflow.subtask(f"s{{i}}", LLMAgent(prompt=prompt), models=["gpt"],
                                 after=[previous] if previous else [])
                previous = f"s{{i}}"
            inputs = {{"topic": "deadlines"}}
            """
        )
    )
    return path


def test_three_cli_runs_at_once_end_by_their_deadline(provider: BillingProvider, tmp_path: Path) -> None:
    """Three `budgetflow run` processes on 2 cores, each with 4 s for a chain that needs ~6 s."""
    provider.configure(first_token_delay_s=0.6, reply_tokens=20, token_interval_s=0.02)
    path = _workflow_file(tmp_path, provider)
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": "sk-billing-provider"}
    argv = [sys.executable, "-m", "budgetflow", "--db", db, "run", str(path)]
    argv += ["--budget", "1", "--deadline", "4", "--policy", "always_cheapest", "--no-progress"]
    processes = [
        subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 1, (out.decode(), err.decode())  # deadline_exceeded
        assert b"Traceback" not in err, err.decode()
    runs = list_runs(db, limit=10)
    assert len(runs) == 3
    log = provider.log()
    for summary in runs:
        detail = get_run(db, summary.run_id)
        assert detail.run.outcome is Outcome.DEADLINE_EXCEEDED, detail.run.reason
        assert detail.run.ended_at is not None
        wall = (detail.run.ended_at - detail.run.started_at).total_seconds()
        check_promises(
            detail.run,
            subtasks=detail.subtasks,
            attempts=detail.attempts,
            calls=detail.calls,
            returned_after_s=wall,
            provider_log=[e for e in log if e.response_id in {c.response_id for c in detail.calls}],
        )


async def test_a_reply_that_arrives_after_the_deadline_is_not_used() -> None:
    """A client that stalls the loop past the deadline and then answers: the reply is paid, not used."""
    catalog = Catalog.of(
        ModelSpec(
            name="m", litellm_model="budgetflow-sim/m", input_price_per_mtok="1", output_price_per_mtok="1"
        )
    )
    wf = Workflow("w", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="{topic}"), models=["m"], estimates={"m": estimate(1.0, latency=0.01)})
    backend = SimulatedBackend(EstimateBook.build(wf, catalog).table)

    class _Stalling(SimulatedClient):
        async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
            reply = await super().complete(request, progress)
            time.sleep(1.5)  # noqa: ASYNC251 - the fault: the loop is blocked, the deadline cannot fire
            return reply

    result = await arun(
        wf,
        catalog=catalog,
        budget_usd=1,
        deadline_s=1.0,
        inputs={"topic": "t"},
        policy="always_cheapest",
        client=_Stalling(backend),
    )
    (call,) = [c for c in result.calls if c.kind is CallKind.LLM]
    assert call.status is CallStatus.CANCELLED and "after the deadline" in (call.error or "")
    assert call.cost_usd > 0
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    await asyncio.sleep(0)


async def test_mcpp_on_two_thousand_subtasks_ends_by_its_deadline() -> None:
    """A 2,000-subtask DAG on the real clock: decisions stay off the loop and short."""
    from policies.dag_pool import pool_workflow
    from policies.synthetic import layered_limits, layered_problem

    problem = layered_problem(2000, seed=0)
    workflow, catalog = pool_workflow(problem)
    budget, _ = layered_limits(problem, budget_factor=2.0, deadline_factor=1.5)
    client = SimulatedClient(SimulatedBackend(EstimateBook.build(workflow, catalog).table, time_scale=0.05))
    result = await arun(
        workflow, catalog=catalog, budget_usd=budget, deadline_s=6.0, policy="mcpp", client=client, seed=0
    )
    returned = (datetime.now(UTC) - result.run.started_at).total_seconds()
    assert result.outcome in (Outcome.DEADLINE_EXCEEDED, Outcome.COMPLETED, Outcome.BUDGET_EXHAUSTED)
    assert len(result.decisions) > 10
    decide_ms = sorted(d.decide_ms for d in result.decisions)
    assert decide_ms[len(decide_ms) // 2] < 250, decide_ms[len(decide_ms) // 2]  # a loose bound: CI is noisy
    check_result(result, returned_after_s=returned)
