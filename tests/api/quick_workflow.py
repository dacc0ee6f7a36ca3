"""A workflow the API tests register by module path: three simulated steps that finish in about a second."""

from __future__ import annotations

from decimal import Decimal

from agents import LLMAgent
from orchestrator import Catalog, ModelSpec, Workflow
from tests.conftest import estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

catalog = Catalog.of(
    ModelSpec(
        name="small",
        litellm_model="budgetflow-sim/small",
        input_price_per_mtok="0.10",
        output_price_per_mtok="0.40",
        tier="cheap",
    ),
    ModelSpec(
        name="large",
        litellm_model="budgetflow-sim/large",
        input_price_per_mtok="2.50",
        output_price_per_mtok="10.00",
        tier="strong",
    ),
)

workflow = Workflow("quick", inputs=["topic"])
_est = {"small": estimate(0.7, 200, 10.0), "large": estimate(0.95, 250, 15.0)}
plan = workflow.subtask("plan", LLMAgent(prompt="Plan {topic}"), models=["small", "large"], estimates=_est)
draft = workflow.subtask(
    "draft", LLMAgent(prompt="Draft from {plan}"), models=["small", "large"], after=[plan], estimates=_est
)
workflow.subtask(
    "review", LLMAgent(prompt="Review {draft}"), models=["small", "large"], after=[draft], estimates=_est
)

inputs = {"topic": "parsing CSV"}
budget_usd = Decimal("0.05")
deadline_s = 600.0
