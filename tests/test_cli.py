"""The CLI, in-process: `main(argv)` returns the exit code."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from budgetflow import main
from storage import upgrade

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _console() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=160, force_terminal=False, color_system=None), buf


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def test_run_then_list_then_show(db: str) -> None:
    console, out = _console()
    code = main(
        [
            "--db",
            db,
            "run",
            str(EXAMPLES / "research_qa.py"),
            "--budget",
            "0.03",
            "--deadline",
            "60",
            "--policy",
            "always_cheapest",
            "--seed",
            "2",
            "--time-scale",
            "0.01",
            "--no-progress",
        ],
        console=console,
    )
    text = out.getvalue()
    assert code == 0, text
    assert "SIMULATED" in text and "completed" in text
    run_id = text.split("runs show ")[-1].split()[0]

    console, out = _console()
    assert main(["--db", db, "runs", "list"], console=console) == 0
    assert run_id in out.getvalue() and "research-qa" in out.getvalue()

    console, out = _console()
    assert main(["--db", db, "runs", "show", run_id], console=console) == 0
    shown = out.getvalue()
    for subtask in ("decompose", "answer_1", "answer_2", "answer_3", "synthesize", "judge"):
        assert subtask in shown
    assert "llm mini" in shown and "ttft" in shown


def test_live_progress_view_renders(db: str) -> None:
    console, out = _console()
    code = main(
        [
            "--db",
            db,
            "run",
            str(EXAMPLES / "research_qa.py"),
            "--policy",
            "always_strongest",
            "--budget",
            "0.2",
            "--time-scale",
            "0.01",
        ],
        console=console,
    )
    assert code == 0
    text = out.getvalue()
    assert "spent $" in text and "reserved $" in text and "left" in text and "elapsed" in text


def test_validate_ok() -> None:
    console, out = _console()
    assert main(["validate", str(EXAMPLES / "code_pipeline.py")], console=console) == 0
    assert "6 subtasks" in out.getvalue()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "nowhere.py", "--budget", "1"], "does not exist"),
        (["run", str(EXAMPLES / "code_pipeline.py"), "--budget", "-1"], "budget must be positive"),
        (["run", str(EXAMPLES / "code_pipeline.py"), "--deadline", "soon"], "not a number of seconds"),
        (["run", str(EXAMPLES / "code_pipeline.py"), "--policy", "mcppp"], "unknown policy `mcppp`"),
        (["run", str(EXAMPLES / "code_pipeline.py"), "--input", "oops"], "is not KEY=VALUE"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_flags_and_paths_exit_2_with_a_message(argv: list[str], fragment: str, db: str) -> None:
    console, out = _console()
    assert main(["--db", db, *argv], console=console) == 2
    assert fragment in out.getvalue()


def test_bad_workflow_file_is_explained(tmp_path: Path, db: str) -> None:
    bad = tmp_path / "cyclic.py"
    bad.write_text(
        "from agents import LLMAgent\nfrom examples._models import catalog\n"
        "from orchestrator import Workflow\n"
        "workflow = Workflow('cyclic')\n"
        "workflow.subtask('a', LLMAgent(prompt='x'), models=['mini'], after=['b'])\n"
        "workflow.subtask('b', LLMAgent(prompt='x'), models=['mini'], after=['a'])\n"
    )
    console, out = _console()
    assert main(["--db", db, "run", str(bad), "--budget", "1"], console=console) == 2
    assert "cycle" in out.getvalue()
    no_workflow = tmp_path / "empty.py"
    no_workflow.write_text("x = 1\n")
    console, out = _console()
    assert main(["--db", db, "validate", str(no_workflow)], console=console) == 2
    assert "must define `workflow = Workflow(...)`" in out.getvalue()


def test_unknown_run_id_and_missing_database(db: str) -> None:
    console, out = _console()
    assert main(["--db", db, "runs", "show", "nope"], console=console) == 1
    assert "no database file at" in out.getvalue()
    upgrade(db)
    console, out = _console()
    assert main(["--db", db, "runs", "show", "nope"], console=console) == 1
    assert "run `nope` not found" in out.getvalue()


def test_help_exits_zero() -> None:
    console, _ = _console()
    assert main(["--help"], console=console) == 0
