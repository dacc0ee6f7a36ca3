"""The workflow of the fault suite and the worker benchmark: three simulated steps whose agent writes
every reply it received to a log, so that a test can count the calls made against the calls recorded.

The agent is `LLMAgent` plus one line per delivered reply, appended to `calls.log` in the worker's
working directory (`O_APPEND`, one `write` per line: lines of concurrent workers never interleave,
and a line written survives a SIGKILL). A line says which process (`pid`) made the call of which
attempt and when (`start`, `end`, epoch seconds), which is how the suite proves that no run was
executed by two workers at once.
"""

from __future__ import annotations

import json
import os
import time
from decimal import Decimal
from pathlib import Path

from agents import LLMAgent
from orchestrator import Workflow
from orchestrator.agent import AttemptContext, AttemptOutput
from tests.conftest import estimate, simulated_catalog

__all__ = ["CALLS_LOG", "LoggingAgent", "budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

CALLS_LOG = "calls.log"
"""The log's name, in each worker's working directory."""


class LoggingAgent(LLMAgent):
    """`LLMAgent` that appends one JSON line per reply it received to `CALLS_LOG`."""

    async def attempt(self, ctx: AttemptContext) -> AttemptOutput:
        start = time.time()
        output = await super().attempt(ctx)
        line = {
            "run": ctx.run_id,
            "attempt": ctx.attempt_id,
            "subtask": ctx.subtask,
            "pid": os.getpid(),
            "start": start,
            "end": time.time(),
        }
        fd = os.open(Path.cwd() / CALLS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(line) + "\n").encode())
        finally:
            os.close(fd)
        return output


catalog = simulated_catalog()

workflow = Workflow("load", inputs=["topic"])
_est = {"small": estimate(0.7, 150, 20.0), "large": estimate(0.95, 200, 30.0)}
_plan = workflow.subtask(
    "plan", LoggingAgent(prompt="Plan {topic}"), models=["small", "large"], estimates=_est
)
_draft = workflow.subtask(
    "draft",
    LoggingAgent(prompt="Draft from {plan}"),
    models=["small", "large"],
    after=[_plan],
    estimates=_est,
)
workflow.subtask(
    "review", LoggingAgent(prompt="Review {draft}"), models=["small", "large"], after=[_draft], estimates=_est
)

inputs = {"topic": "parsing CSV"}
budget_usd = Decimal("0.05")
deadline_s = 600.0
