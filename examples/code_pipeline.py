"""A code pipeline: plan -> implement three parts in parallel -> integrate -> write tests.

    budgetflow run examples/code_pipeline.py --budget 0.05 --deadline 45

The cheap model (`mini`) fails more often (55-75% of attempts pass) and the
strong one (`4o`) costs ~16x more per token and is slower. Every step is within
`mini`'s reach, so the planner races a few `mini` samples instead of waiting for
`4o`: they pass as often, sooner, for less, at any budget. `hard_step.py` has a
step `mini` rarely passes; there the planner buys `4o`.
"""

from __future__ import annotations

import ast

from budgetflow import AttemptEstimate, LLMAgent, Workflow, checks
from examples._models import catalog, estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

ARCHITECT = "You are a senior Python architect. Be concise and concrete."
CODER = "You are a careful Python engineer. Answer with one fenced Python code block."


def _est(p: float, tokens: float, seconds: float) -> AttemptEstimate:
    return estimate(p, tokens, seconds, spread=0.35, input_tokens=900)


def _python_parses(output: str) -> bool:
    code = output.split("```python", 1)[-1].split("```", 1)[0] if "```" in output else output
    try:
        ast.parse(code)
    except SyntaxError:
        return False
    return True


workflow = Workflow("code-pipeline", inputs=["feature"])

plan = workflow.subtask(
    "plan",
    LLMAgent(
        system=ARCHITECT,
        prompt="Plan a small Python module for: {feature}. Name a parser, a formatter "
        "and a CLI part, each with its functions and signatures.",
    ),
    models=["mini", "4o"],
    check=checks.regex(r"(?i)parser.*formatter.*cli"),
    estimates={"mini": _est(0.75, 450, 5.0), "4o": _est(0.95, 500, 8.0)},
)
parts = [
    workflow.subtask(
        f"implement_{part}",
        LLMAgent(system=CODER, prompt=f"Plan:\n{{plan}}\n\nImplement only the {part} part."),
        after=[plan],
        models=["mini", "4o"],
        check=checks.python(_python_parses),
        estimates={"mini": _est(p_mini, 700, 8.0), "4o": _est(p_4o, 750, 13.0)},
    )
    for part, p_mini, p_4o in (("parser", 0.55, 0.9), ("formatter", 0.7, 0.95), ("cli", 0.6, 0.92))
]
integrate = workflow.subtask(
    "integrate",
    LLMAgent(
        system=CODER,
        prompt="Combine into one module:\n{implement_parser}\n{implement_formatter}\n{implement_cli}",
    ),
    after=parts,
    models=["mini", "4o"],
    check=checks.python(_python_parses),
    estimates={"mini": _est(0.5, 1100, 12.0), "4o": _est(0.88, 1200, 20.0)},
)
workflow.subtask(
    "tests",
    LLMAgent(system=CODER, prompt="Write pytest tests for this module:\n{integrate}"),
    after=[integrate],
    models=["mini", "4o"],
    check=checks.regex(r"def test_"),
    estimates={"mini": _est(0.7, 600, 7.0), "4o": _est(0.93, 650, 11.0)},
)

inputs = {"feature": "convert a CSV file into a Markdown table, with column alignment options"}
budget_usd = 0.05
deadline_s = 45.0
