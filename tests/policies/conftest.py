"""Factories for small simulated workflows and pool lines used by the policy tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from agents import LLMAgent
from orchestrator._estimate_book import EstimateBook
from orchestrator.catalog import Catalog, ModelSpec
from orchestrator.estimates import AttemptEstimate, EmpiricalSample
from orchestrator.plan import Allocation, ModelPrice, PlanState
from orchestrator.workflow import Workflow
from policies.feasibility import MAX_SAMPLES, allocation_holds_usd, default_cap

WorkflowFactory = Callable[..., tuple[Workflow, Catalog]]


def samples(p: float, tokens: int, latency: float, n: int = 20) -> AttemptEstimate:
    """An empirical estimate with exactly round(p*n) successes, fixed tokens and latency spread."""
    wins = round(p * n)
    return AttemptEstimate.from_samples(
        [
            EmpiricalSample(
                success=j < wins, output_tokens=tokens + 10 * j, latency_s=latency * (0.8 + 0.02 * j)
            )
            for j in range(n)
        ],
        input_tokens=0,
    )


def catalog(prices: dict[str, str]) -> Catalog:
    """Simulated models with output prices per million tokens and free input."""
    return Catalog.of(
        *(
            ModelSpec(
                name=m,
                litellm_model=f"budgetflow-sim/{m}",
                input_price_per_mtok=Decimal(0),
                output_price_per_mtok=Decimal(price),
            )
            for m, price in prices.items()
        )
    )


@pytest.fixture
def chain() -> WorkflowFactory:
    """`n` subtasks (a diamond when n == 4, else a chain) all with the same per-model estimates."""

    def make(
        estimates: dict[str, AttemptEstimate], prices: dict[str, str], n: int = 3
    ) -> tuple[Workflow, Catalog]:
        wf = Workflow("chain")
        diamond = {0: [], 1: ["s0"], 2: ["s0"], 3: ["s1", "s2"]}
        for i in range(n):
            after = diamond[i] if n == 4 else ([f"s{i - 1}"] if i else [])
            wf.subtask(
                f"s{i}", LLMAgent(prompt="work"), models=list(estimates), after=after, estimates=estimates
            )
        return wf, catalog(prices)

    return make


def pool_line(problem_id: str = "p0", *, nodes: int = 3) -> dict[str, Any]:
    """A valid DAG-pool line: a chain of `nodes` nodes on two models."""
    out = []
    for i in range(nodes):
        out.append(
            {
                "node_id": i,
                "name": f"subproblem_{i}",
                "parents": [i - 1] if i else [],
                "children": [i + 1] if i + 1 < nodes else [],
                "layer": i,
                "model_templates": {
                    "4B_ins": {"success_prob": 0.5, "lat_mean": 2.0, "lat_std": 0.5, "cost_mean": 300.0}
                },
                "empirical_samples_by_model": {
                    "4B_ins": [
                        {"latency": 1.5 + j * 0.25, "success": j % 2, "cost": 200 + 50 * j} for j in range(4)
                    ],
                    "30B_ins": [
                        {"latency": 3.0 + j * 0.5, "success": 1, "cost": 400 + 20 * j} for j in range(3)
                    ],
                },
            }
        )
    return {
        "problem_id": problem_id,
        "dag_kind": "test",
        "baseline_model": "30B_ins",
        "model_ids": ["30B_ins", "4B_ins"],
        "output_price_per_1m_tokens": {"30B_ins": 0.8, "4B_ins": 0.42},
        "nodes": out,
    }


def dumps(line: dict[str, Any]) -> str:
    """One JSONL line."""
    return json.dumps(line)


def initial_state(wf: Workflow, cat: Catalog, budget: float, deadline: float | None) -> PlanState:
    """The `PlanState` the executor shows a policy at the start of a run."""
    view = wf.dag_view()
    book = EstimateBook.build(wf, cat)
    return PlanState(
        dag=view,
        completed=frozenset(),
        ready=tuple(s for s in view.subtasks if not view.parents[s]),
        in_flight=(),
        budget_usd=budget,
        spent_usd=0.0,
        reserved_usd=0.0,
        remaining_time_s=deadline,
        elapsed_s=0.0,
        estimates=book.table,
        prices={
            m: ModelPrice(
                input_usd_per_token=spec.input_nano_per_token() / 1e9,
                output_usd_per_token=spec.output_nano_per_token() / 1e9,
            )
            for m, spec in cat.models.items()
        },
    )


def assert_feasible(state: PlanState, alloc: Allocation) -> None:
    """Check the promises of `policies.feasibility` on one answer."""
    asked = {s: a for s, a in alloc.assignments.items() if a.samples > 0}
    for s, a in alloc.assignments.items():
        assert s in state.ready, s
        assert a.model in state.dag.models[s], (s, a)
        assert a.samples <= MAX_SAMPLES, (s, a)
        cap = a.max_tokens if a.max_tokens is not None else default_cap(state, s, a.model)
        ceiling = state.max_tokens_ceiling.get(s)
        assert ceiling is None or cap <= ceiling, (s, a, ceiling)
    holds = allocation_holds_usd(state, asked)
    if holds <= state.remaining_budget_usd + 1e-9:
        return
    # the one exception: nothing fits and nothing runs, so one sample is asked for the ledger to refuse
    cheapest = min(
        state.reservation_usd(s, m, default_cap(state, s, m))
        for s in state.ready
        for m in state.dag.models[s]
    )
    assert not state.in_flight and len(asked) == 1, (holds, state.remaining_budget_usd, asked)
    assert next(iter(asked.values())).samples == 1
    assert cheapest > state.remaining_budget_usd
