"""`budgetflow estimates show`: the pooled table, at 80 columns, and its errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from budgetflow.cli import main
from orchestrator.records import AttemptStatus
from storage import upgrade
from tests.cli.conftest import capture
from tests.learning.records import Tried, record_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "learning.md"
WORKFLOW_FILE = """
from budgetflow import AttemptEstimate, LLMAgent, LogNormal, Workflow

def _est(p: float) -> AttemptEstimate:
    return AttemptEstimate(
        success_prob=p, output_tokens=LogNormal(mean=300, std=100), latency_s=LogNormal(mean=4, std=1)
    )

workflow = Workflow("fix-bug", inputs=["issue"])
workflow.subtask(
    "plan", LLMAgent(prompt="Plan a fix for: {issue}"), models=["small", "large"],
    estimates={"small": _est(0.55), "large": _est(0.9)},
)
workflow.subtask(
    "implementation", LLMAgent(prompt="Fix: {issue}"), models=["small", "large"], after=["plan"]
)
"""


async def _history(url: str) -> None:
    def tried(subtask: str, model: str, status: AttemptStatus, count: int) -> list[Tried]:
        return [Tried(status=status, subtask=subtask, model=model, output_tokens=250, ended_s=3.0)] * count

    await record_run(
        url,
        "r1",
        [
            *tried("plan", "small", AttemptStatus.PASSED, 6),
            *tried("plan", "small", AttemptStatus.FAILED, 4),
            *tried("plan", "small", AttemptStatus.ERROR, 2),
            *tried("plan", "large", AttemptStatus.PASSED, 9),
            *tried("plan", "large", AttemptStatus.CANCELLED, 3),
            *tried("implementation", "small", AttemptStatus.FAILED, 2),
            *tried("implementation", "large", AttemptStatus.PASSED, 5),
            *tried("implementation", "large", AttemptStatus.FAILED, 3),
        ],
        workflow="fix-bug",
    )


async def test_the_table_fits_80_columns_with_the_declared_priors(sqlite_url: str, tmp_path: Path) -> None:
    await _history(sqlite_url)
    path = tmp_path / "fix_bug.py"
    path.write_text(WORKFLOW_FILE)
    console, buf = capture(width=80)

    code = main(["estimates", "show", "--db", sqlite_url, "--workflow-file", str(path)], console=console)
    text = buf.getvalue()
    assert code == 0, text
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    assert any(line.startswith("workflow `fix-bug`") for line in lines)
    header = next(line for line in lines if "subtask" in line)
    assert header.split() == [
        "subtask",
        "model",
        "prior",
        "pooled",
        "learned",
        "w",
        "p/f/e/c",
        "out",
        "tok",
        "latency",
    ]
    plan_small = next(line for line in lines if line.split()[:2] == ["plan", "small"])
    assert plan_small.split()[2] == "0.55"  # the declared prior
    assert "6/4/2/0" in plan_small
    plan_large = next(line for line in lines if line.split()[:2] == ["plan", "large"])
    assert "9/0/0/3" in plan_large
    implementation = next(line for line in lines if line.split()[:2] == ["implementation", "small"])
    assert implementation.split()[2] == "-"  # no declared estimate: the catalog's defaults


async def test_without_a_workflow_file_there_is_no_prior_column(db_url: str) -> None:
    await _history(db_url)
    console, buf = capture(width=80)

    assert main(["estimates", "show", "--db", db_url, "--workflow", "fix-bug"], console=console) == 0
    text = buf.getvalue()
    header = next(line for line in text.splitlines() if "subtask" in line)
    assert "prior" not in header.split()
    assert "learned" in header
    assert max(len(line) for line in text.splitlines()) <= 80


@pytest.mark.parametrize("exists", [False, True])
def test_an_empty_database_says_so(sqlite_url: str, exists: bool) -> None:
    if exists:
        upgrade(sqlite_url)
    console, buf = capture(width=80)

    assert main(["estimates", "show", "--db", sqlite_url], console=console) == 0
    assert "no runs recorded" in buf.getvalue()


async def test_an_unknown_workflow_is_a_usage_error(sqlite_url: str) -> None:
    await _history(sqlite_url)
    console, buf = capture(width=80)

    code = main(["estimates", "show", "--db", sqlite_url, "--workflow", "fix-bgu"], console=console)
    text = buf.getvalue()
    assert code == 2
    assert "no runs of workflow `fix-bgu`" in text and "did you mean `fix-bug`?" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--db", "nosuchdb://x"], "error"),
        (["--workflow-file", "missing.py"], "does not exist"),
    ],
)
def test_bad_input_is_one_message(sqlite_url: str, argv: list[str], fragment: str) -> None:
    console, buf = capture(width=80)

    code = main(["estimates", "show", "--db", sqlite_url, *argv], console=console)
    text = buf.getvalue()
    assert code != 0
    assert fragment in text and "Traceback" not in text


TRUE_P = {"plan": (0.7, 0.85, 0.95), "implementation": (0.3, 0.55, 0.8), "review": (0.6, 0.75, 0.9)}
"""The demo history's true pass rates per subtask for `small`, `medium`, `large`."""
BATCHES = {"plan": (12, 4, 10), "implementation": (10, 0, 12), "review": (1, 3, 6)}
"""Races of two samples recorded per subtask and model (`medium` never ran `implementation`)."""
MODELS = {"small": (3.0, 250), "medium": (6.0, 300), "large": (12.0, 350)}
"""Mean latency (s) and output tokens per model."""


async def _demo_history(url: str) -> None:
    """A seeded history of races of two samples: the first to pass cancels the other."""
    rng = np.random.default_rng(3)
    tried: list[Tried] = []
    clock = 0.0
    for subtask, per_model in BATCHES.items():
        for m, (model, (seconds, tokens)) in enumerate(MODELS.items()):
            sigma = math.sqrt(math.log1p(0.5**2))
            for batch in range(per_model[m]):
                latency = rng.lognormal(math.log(seconds) - sigma**2 / 2, sigma, 2)
                passes = rng.random(2) < TRUE_P[subtask][m]
                errors = rng.random(2) < 0.08
                won = min(
                    (float(latency[i]) for i in range(2) if passes[i] and not errors[i]), default=math.inf
                )
                for i in range(2):
                    if latency[i] > won:
                        status, took = AttemptStatus.CANCELLED, won
                    elif errors[i]:
                        status, took = AttemptStatus.ERROR, float(latency[i])
                    else:
                        status = AttemptStatus.PASSED if passes[i] else AttemptStatus.FAILED
                        took = float(latency[i])
                    tried.append(
                        Tried(
                            status=status,
                            subtask=subtask,
                            model=model,
                            batch=batch,
                            sample=i,
                            started_s=clock,
                            ended_s=clock + took,
                            output_tokens=int(rng.lognormal(math.log(tokens), 0.3)),
                        )
                    )
                clock += float(min(won, latency.max()))
    await record_run(url, "demo", tried, workflow="fix-bug")


async def test_the_documented_output_is_what_the_command_prints(sqlite_url: str, tmp_path: Path) -> None:
    await _demo_history(sqlite_url)
    path = tmp_path / "fix_bug.py"
    path.write_text(WORKFLOW_FILE)
    console, buf = capture(width=80)

    assert main(["estimates", "show", "--workflow-file", str(path), "--db", sqlite_url], console=console) == 0
    printed = [line.rstrip() for line in buf.getvalue().splitlines()]
    (documented,) = re.findall(
        r"```text\n\$ budgetflow estimates show[^\n]*\n(.*?)```", DOC.read_text(), re.S
    )
    assert printed == documented.rstrip("\n").splitlines()
