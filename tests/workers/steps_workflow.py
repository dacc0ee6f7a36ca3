"""A workflow the worker tests register by module path: four simulated steps in a row, each a few
seconds at the tests' time scale, so that a worker can die between two of them."""

from __future__ import annotations

from decimal import Decimal

from agents import LLMAgent
from orchestrator import Workflow
from tests.api.quick_workflow import catalog
from tests.conftest import estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "workflow"]

workflow = Workflow("steps")
_sure = {"small": estimate(1.0, 200, 250.0, spread=0.05)}
_first = workflow.subtask("one", LLMAgent(prompt="Step one"), models=["small"], estimates=_sure)
_second = workflow.subtask(
    "two", LLMAgent(prompt="Step two after {one}"), models=["small"], after=[_first], estimates=_sure
)
_third = workflow.subtask(
    "three", LLMAgent(prompt="Step three after {two}"), models=["small"], after=[_second], estimates=_sure
)
workflow.subtask(
    "four", LLMAgent(prompt="Step four after {three}"), models=["small"], after=[_third], estimates=_sure
)

budget_usd = Decimal("0.05")
deadline_s = 600.0
