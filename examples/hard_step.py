"""A pipeline with one step the cheap model rarely gets right: where the planner pays for `4o`.

    budgetflow run examples/hard_step.py --budget 0.20 --deadline 90

`plan` and `docs` are easy for `mini`. `port` (a C function ported to Rust that
must compile) succeeds for `mini` one time in twenty: racing even sixteen `mini`
samples passes less often than one `4o` attempt, so MCPP sends `port` to `4o`
and keeps `mini` for the rest. Compare `examples/code_pipeline.py`, where every
step is within `mini`'s reach and racing a few `mini` samples beats `4o` on
price and on time, so `4o` is never chosen.
"""

from __future__ import annotations

from budgetflow import AttemptEstimate, LLMAgent, Workflow, checks
from examples._models import catalog, estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

ENGINEER = "You are a systems engineer fluent in C and Rust. Answer with one fenced code block."


def _est(p: float, tokens: float, seconds: float) -> AttemptEstimate:
    return estimate(p, tokens, seconds, spread=0.35, input_tokens=1500)


workflow = Workflow("hard-step", inputs=["c_source"])

plan = workflow.subtask(
    "plan",
    LLMAgent(system=ENGINEER, prompt="List the unsafe spots and the ownership plan for porting:\n{c_source}"),
    models=["mini", "4o"],
    check=checks.regex(r"(?i)ownership"),
    estimates={"mini": _est(0.8, 400, 5.0), "4o": _est(0.95, 450, 8.0)},
)
port = workflow.subtask(
    "port",
    LLMAgent(system=ENGINEER, prompt="Port to safe Rust, following this plan:\n{plan}\n\n{c_source}"),
    after=[plan],
    models=["mini", "4o"],
    check=checks.regex(r"```rust[\s\S]*fn "),
    estimates={"mini": _est(0.05, 1400, 14.0), "4o": _est(0.9, 1500, 24.0)},
)
workflow.subtask(
    "docs",
    LLMAgent(system=ENGINEER, prompt="Write rustdoc comments for:\n{port}"),
    after=[port],
    models=["mini", "4o"],
    check=checks.regex(r"///"),
    estimates={"mini": _est(0.85, 500, 6.0), "4o": _est(0.95, 550, 9.0)},
)

inputs = {
    "c_source": "int sum(const int *xs, size_t n) {\n"
    "    int s = 0;\n    for (size_t i = 0; i < n; i++) s += xs[i];\n    return s;\n}"
}
budget_usd = 0.20
deadline_s = 90.0
