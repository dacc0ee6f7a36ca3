"""A workflow the API tests register by module path: one simulated step that takes minutes."""

from __future__ import annotations

from agents import LLMAgent
from orchestrator import Workflow
from tests.api.quick_workflow import catalog
from tests.conftest import estimate

__all__ = ["catalog", "workflow"]

workflow = Workflow("slow")
workflow.subtask(
    "wait",
    LLMAgent(prompt="Take your time"),
    models=["small"],
    estimates={"small": estimate(0.9, 200, 20_000.0)},
)
