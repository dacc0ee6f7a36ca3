"""The README runs as written, imports from the one door, and documents every CLI option."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from budgetflow.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def test_readme_python_blocks_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        namespace: dict[str, object] = {}
        exec(compile(block, str(README), "exec"), namespace)
        result = namespace["result"]
        assert result.spent_usd <= 0.40  # type: ignore[attr-defined]


def test_readme_and_examples_import_from_budgetflow_only() -> None:
    sources = {README: README.read_text(), **{p: p.read_text() for p in (ROOT / "examples").glob("*.py")}}
    for path, text in sources.items():
        for line in re.findall(r"^(?:from|import) (\w+)", text, flags=re.M):
            assert line not in {"orchestrator", "agents", "policies", "storage"}, f"`{path}` imports `{line}`"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--") and o != "--help")
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.add(name)
                found |= _options(sub)
    return found


def test_every_cli_command_and_option_is_in_the_readme() -> None:
    text = README.read_text()
    missing = sorted(o for o in _options(_parser()) if o not in text)
    assert missing == []
    for variable in (
        "BUDGETFLOW_DATABASE_URL",
        "BUDGETFLOW_REDIS_URL",
        "BUDGETFLOW_VLLM_URL",
        "BUDGETFLOW_CATALOG",
    ):
        assert variable in text
    flowing = " ".join(text.split())
    assert "What a seed fixes" in flowing and "On the real clock it does not" in flowing


def test_what_the_readme_says_the_planner_chooses() -> None:
    """The demo races `mini` and never needs `4o`; `hard_step` sends `port` to `4o` and the rest to `mini`."""
    from budgetflow import simulate
    from examples import code_pipeline, hard_step

    for seed in range(3):
        demo = simulate(
            code_pipeline.workflow,
            catalog=code_pipeline.catalog,
            inputs=code_pipeline.inputs,
            budget_usd=5,
            deadline_s=code_pipeline.deadline_s,
            policy="mcpp",
            seed=seed,
        )
        assert demo.outcome.value == "completed" and {a.model for a in demo.attempts} == {"mini"}
        hard = simulate(
            hard_step.workflow,
            catalog=hard_step.catalog,
            inputs=hard_step.inputs,
            budget_usd=hard_step.budget_usd,
            deadline_s=hard_step.deadline_s,
            policy="mcpp",
            seed=seed,
        )
        assert hard.outcome.value == "completed"
        port = [a.model for a in hard.attempts if a.subtask == "port"]
        assert port.count("4o") > port.count("mini")
        assert {a.model for a in hard.attempts if a.subtask == "docs"} == {"mini"}
