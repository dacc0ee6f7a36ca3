"""docs/learning.md's Python examples run as written, and its export section matches the CLI."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from orchestrator.records import AttemptStatus
from tests.learning.records import Tried, record_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "learning.md"


async def test_the_example_runs(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    await record_run(
        sqlite_url,
        "r",
        [
            Tried(status=AttemptStatus.PASSED, ended_s=3.0),
            Tried(status=AttemptStatus.CANCELLED, ended_s=3.0),
            Tried(status=AttemptStatus.ERROR, ended_s=0.5),
        ],
        workflow="fix-bug",
    )
    exec(compile(_example("judged = "), str(DOC), "exec"), {"DATABASE_URL": sqlite_url})
    assert capsys.readouterr().out.split() == ["1", "1", "2"]


def test_the_estimator_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import simulated_catalog

    exec(compile(_example("class LongIssuesAreHard"), str(DOC), "exec"), {"CATALOG": simulated_catalog()})
    assert capsys.readouterr().out.split() == ["large"]


async def test_the_learned_estimator_example_runs(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for run in range(3):
        await record_run(
            sqlite_url,
            f"r{run}",
            [
                Tried(status=AttemptStatus.PASSED),
                Tried(status=AttemptStatus.FAILED, sample=1),
                Tried(status=AttemptStatus.FAILED, sample=2),
                Tried(status=AttemptStatus.PASSED, sample=3),
            ],
            workflow="fix-bug",
            inputs={"issue": "it crashes" * (run + 1)},
        )
    exec(compile(_example("fit_estimator"), str(DOC), "exec"), {"DATABASE_URL": sqlite_url})
    assert capsys.readouterr().out.split() == ["3", "0", "True"]


def _example(marker: str) -> str:
    """The one Python example of the page that contains `marker`."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 3, "docs/learning.md has three Python examples, each run by a test"
    (found,) = [b for b in blocks if marker in b]
    return str(found)


def test_every_export_option_is_documented() -> None:
    from budgetflow.cli import _parser
    from tests.test_readme import _options

    text = DOC.read_text()
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = _options(commands.choices["export"])
    assert options and sorted(o for o in options if o not in text) == []
