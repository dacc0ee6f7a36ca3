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
    calls = _model_calls(text)

    console, out = _console()
    assert main(["--db", db, "runs", "list"], console=console) == 0
    listed = out.getvalue()
    assert run_id in listed and "research-qa" in listed and "model calls" in listed
    row = next(line for line in listed.splitlines() if line.startswith(run_id))
    assert f" {calls} " in row, "`runs list` counts model calls as the summary does"

    console, out = _console()
    assert main(["--db", db, "runs", "show", run_id[:5]], console=console) == 0
    shown = out.getvalue()
    for subtask in ("decompose", "answer_1", "answer_2", "answer_3", "synthesize", "judge"):
        assert subtask in shown
    assert "llm mini" in shown and "ttft" in shown
    assert _model_calls(shown) == calls
    assert shown.count("llm mini") + shown.count("llm 4o") == calls


def _model_calls(text: str) -> int:
    """The `model calls` line of a summary or a `runs show` header."""
    line = next(line for line in text.splitlines() if line.startswith("model calls"))
    return int(line.split()[2])


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
    assert "6 subtasks, 2 models (4o, mini), 1 input" in out.getvalue()


PIPELINE = str(EXAMPLES / "code_pipeline.py")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "nowhere.py", "--budget", "1"], "does not exist"),
        (["run", PIPELINE, "--budget", "-1"], "`--budget` = `-1` is not positive"),
        (["run", PIPELINE, "--budget", "1e-12"], "`--budget` = `1e-12` is below one nano-dollar"),
        (["run", PIPELINE, "--budget", "0.0000000001"], "is below one nano-dollar"),
        (["run", PIPELINE, "--budget", "nan"], "`--budget` = `nan` is not a finite amount"),
        (["run", PIPELINE, "--budget", "inf"], "`--budget` = `inf` is not a finite amount"),
        (["run", PIPELINE, "--budget", "1e400"], "above the largest budget a run accepts"),
        (["run", PIPELINE, "--budget", "lots"], "`--budget` = `lots` is not an amount in USD"),
        (["run", PIPELINE, "--deadline", "soon"], "`--deadline` = `soon` is not a number of seconds"),
        (["run", PIPELINE, "--deadline", "inf"], "`--deadline` = `inf` is not a finite number of seconds"),
        (["run", PIPELINE, "--deadline", "0"], "`--deadline` = `0` is not positive"),
        (["run", PIPELINE, "--time-scale", "nan"], "must be a positive, finite number"),
        (["run", PIPELINE, "--time-scale", "0"], "must be a positive, finite number"),
        (["run", PIPELINE, "--seed", "-1"], "must be from 0 to 2**63 - 1"),
        (["run", PIPELINE, "--policy", "mcppp"], "unknown policy `mcppp`"),
        (["run", PIPELINE, "--input", "oops"], "is not KEY=VALUE"),
        (["run", PIPELINE, "--input", "=x"], "is not KEY=VALUE"),
        (["runs", "list", "--limit", "0"], "must be at least 1"),
        (["runs", "mark-abandoned", "--older-than", "nan"], "positive, finite number of seconds"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_flags_and_paths_exit_2_with_a_message(argv: list[str], fragment: str, db: str) -> None:
    console, out = _console()
    assert main(["--db", db, *argv], console=console) == 2
    assert fragment in out.getvalue()
    assert "Traceback" not in out.getvalue()


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
    assert main(["--db", db, "runs", "show", "nope"], console=console) == 2
    assert "no runs are recorded in" in out.getvalue() and "the file does not exist" in out.getvalue()
    console, out = _console()
    assert main(["--db", db, "runs", "list"], console=console) == 0
    assert "no runs recorded in" in out.getvalue()
    upgrade(db)
    console, out = _console()
    assert main(["--db", db, "runs", "show", "nope"], console=console) == 2
    assert (
        "error: no run has an id starting with `nope`; `budgetflow runs list` shows the ids" in out.getvalue()
    )


def test_help_exits_zero() -> None:
    console, _ = _console()
    assert main(["--help"], console=console) == 0
