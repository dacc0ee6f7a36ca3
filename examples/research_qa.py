"""A research/QA pipeline: decompose -> answer sub-questions in parallel -> synthesize -> judge.

    budgetflow run examples/research_qa.py --budget 0.03 --deadline 60

The judge is itself an LLM call through the same budget. Sub-questions are
cheap and parallel; synthesis is long and is where the strong model pays.
"""

from __future__ import annotations

from budgetflow import AttemptEstimate, LLMAgent, Workflow, checks
from examples._models import catalog, estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

RESEARCHER = "You are a research assistant. Answer precisely and cite the source of each claim."


def _est(p: float, tokens: float, seconds: float) -> AttemptEstimate:
    return estimate(p, tokens, seconds, spread=0.3, input_tokens=1200)


workflow = Workflow("research-qa", inputs=["question"])

decompose = workflow.subtask(
    "decompose",
    LLMAgent(
        system=RESEARCHER, prompt="Split into three independent sub-questions, numbered 1-3:\n{question}"
    ),
    models=["mini", "4o"],
    check=checks.regex(r"(?s)1\..*2\..*3\."),
    estimates={"mini": _est(0.85, 200, 3.0), "4o": _est(0.97, 220, 5.0)},
)
answers = [
    workflow.subtask(
        f"answer_{i}",
        LLMAgent(system=RESEARCHER, prompt=f"Sub-questions:\n{{decompose}}\n\nAnswer sub-question {i} only."),
        after=[decompose],
        models=["mini", "4o"],
        check=checks.regex(r"\w+.{40,}"),
        estimates={"mini": _est(0.65, 400, 5.0), "4o": _est(0.9, 450, 8.0)},
    )
    for i in (1, 2, 3)
]
synthesize = workflow.subtask(
    "synthesize",
    LLMAgent(
        system=RESEARCHER,
        prompt="Question: {question}\n\nFindings:\n{answer_1}\n{answer_2}\n{answer_3}\n\n"
        "Write the final answer.",
    ),
    after=answers,
    models=["mini", "4o"],
    estimates={"mini": _est(0.55, 800, 9.0), "4o": _est(0.9, 850, 14.0)},
)
workflow.subtask(
    "judge",
    LLMAgent(
        prompt="Question: {question}\nAnswer: {synthesize}\nIs the answer complete and supported? "
        "Reply PASS or FAIL, then one sentence."
    ),
    after=[synthesize],
    models=["mini", "4o"],
    check=checks.regex(r"^\s*PASS"),
    estimates={"mini": _est(0.8, 40, 1.5), "4o": _est(0.95, 40, 2.5)},
)

inputs = {"question": "Why did the 2021 Texas power grid fail, and which fixes have been made since?"}
budget_usd = 0.03
deadline_s = 60.0
