"""A workflow the browser tests register by module path: its input comes back as a subtask's
output and then in a prompt, so a test can check that text from a run is shown as text."""

from __future__ import annotations

from decimal import Decimal

from agents import FunctionAgent, LLMAgent
from orchestrator import AttemptContext, Workflow
from tests.api.quick_workflow import catalog
from tests.conftest import estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]


async def _echo(ctx: AttemptContext) -> str:
    return str(ctx.inputs["text"])


workflow = Workflow("echo", inputs=["text"])
echo = workflow.subtask("echo", FunctionAgent(_echo))
workflow.subtask(
    "summarise",
    LLMAgent(prompt="Summarise: {echo}"),
    models=["small"],
    after=[echo],
    estimates={"small": estimate(0.9, 100, 5.0)},
)

inputs = {"text": "hello"}
budget_usd = Decimal("0.05")
deadline_s = 600.0
