"""`checks.python_tests`: a real pytest run in a subprocess, with a timeout that kills."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from agents import checks
from orchestrator.agent import AttemptOutput
from orchestrator.errors import WorkflowError

if TYPE_CHECKING:
    from tests.agents.conftest import MakeCtx

TESTS = """\
from solution import add


def test_add() -> None:
    assert add(2, 3) == 5
"""
GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"


def out(text: str) -> AttemptOutput:
    return AttemptOutput(value=text, text=text)


@pytest.fixture
def fast_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip plugin autoloading in the child pytest (it inherits our environment): faster start."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


@pytest.fixture
def tests_file(tmp_path: Path) -> Path:
    path = tmp_path / "suite" / "test_add.py"
    path.parent.mkdir()
    path.write_text(TESTS)
    return path


async def test_passes_when_tests_pass(tests_file: Path, make_ctx: MakeCtx) -> None:
    result = await checks.python_tests(tests_file)(out(GOOD), make_ctx())
    assert result.passed, result.detail
    assert "1 passed" in result.detail


async def test_fails_when_tests_fail(tests_file: Path, make_ctx: MakeCtx, fast_pytest: None) -> None:
    result = await checks.python_tests(tests_file)(out(BAD), make_ctx())
    assert not result.passed
    assert result.detail.startswith("pytest exited with 1 (some tests failed)")
    assert "1 failed" in result.detail


async def test_code_is_taken_from_a_markdown_fence(
    tests_file: Path, make_ctx: MakeCtx, fast_pytest: None
) -> None:
    text = f"Here is the fix:\n\n```python\n{GOOD}```\n\nIt adds the numbers."
    result = await checks.python_tests(tests_file)(out(text), make_ctx())
    assert result.passed, result.detail


async def test_directory_of_tests_and_custom_code_file(
    tmp_path: Path, make_ctx: MakeCtx, fast_pytest: None
) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_one.py").write_text(TESTS.replace("solution", "impl"))
    (suite / "test_two.py").write_text(
        "from impl import add\n\ndef test_zero():\n    assert add(0, 0) == 0\n"
    )
    check = checks.python_tests(suite, code_file="impl.py")
    result = await check(out(GOOD), make_ctx())
    assert result.passed, result.detail
    assert "2 passed" in result.detail
    assert not (suite / "impl.py").exists()  # the user's directory is left untouched


async def test_no_tests_collected_fails(tmp_path: Path, make_ctx: MakeCtx, fast_pytest: None) -> None:
    empty = tmp_path / "test_nothing.py"
    empty.write_text("X = 1\n")
    result = await checks.python_tests(empty)(out(GOOD), make_ctx())
    assert not result.passed
    assert "no tests were collected" in result.detail


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A killed process nobody has reaped yet is a zombie: dead, but still listed.
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z"


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


async def test_timeout_kills_the_whole_process_group(
    tmp_path: Path, make_ctx: MakeCtx, fast_pytest: None
) -> None:
    pid_file = tmp_path / "grandchild.pid"
    slow = tmp_path / "test_slow.py"
    slow.write_text(
        "import subprocess, sys, time\n"
        "from pathlib import Path\n\n"
        "def test_slow():\n"
        "    child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"    Path({str(pid_file)!r}).write_text(str(child.pid))\n"
        "    time.sleep(60)\n"
    )
    # Generous enough for pytest to start and spawn the grandchild on a loaded 2-core machine.
    check = checks.python_tests(slow, timeout_s=15)
    started = time.monotonic()
    result = await check(out(GOOD), make_ctx())
    elapsed = time.monotonic() - started

    assert not result.passed
    assert result.detail.startswith("tests timed out after 15s and were killed")
    assert elapsed < 25
    assert pid_file.exists(), result.detail
    grandchild = int(pid_file.read_text())
    assert await asyncio.to_thread(_wait_dead, grandchild, 5.0)


def test_missing_tests_path_is_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="does not exist"):
        checks.python_tests(tmp_path / "nope")


@pytest.mark.parametrize("code_file", ["/abs/solution.py", "../solution.py", "solution.txt"])
def test_bad_code_file_is_workflow_error(tests_file: Path, code_file: str) -> None:
    with pytest.raises(WorkflowError, match="code_file"):
        checks.python_tests(tests_file, code_file=code_file)


def test_bad_timeout_is_workflow_error(tests_file: Path) -> None:
    with pytest.raises(WorkflowError, match="timeout_s"):
        checks.python_tests(tests_file, timeout_s=0)


def test_repr_names_the_tests(tests_file: Path) -> None:
    check = checks.python_tests(str(tests_file), python=sys.executable)
    assert repr(check) == f"python_tests({str(tests_file)!r})"
