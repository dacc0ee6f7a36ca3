"""docs/learning.md's Python example runs as written, and its export section matches the CLI."""

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
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/learning.md should have one Python example"
    exec(compile(blocks[0], str(DOC), "exec"), {"DATABASE_URL": sqlite_url})
    assert capsys.readouterr().out.split() == ["1", "1", "2"]


def test_every_export_option_is_documented() -> None:
    from budgetflow.cli import _parser
    from tests.test_readme import _options

    text = DOC.read_text()
    commands = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = _options(commands.choices["export"])
    assert options and sorted(o for o in options if o not in text) == []
