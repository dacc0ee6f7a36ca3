"""A workflow the API tests register by module path: three simulated steps that finish in about a second."""

from __future__ import annotations

from decimal import Decimal

from agents import LLMAgent
from orchestrator import Workflow
from tests.conftest import estimate, simulated_catalog

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

catalog = simulated_catalog()

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
