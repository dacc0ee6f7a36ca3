"""The `python_tests` check: run a pytest suite against the attempt's code in a subprocess.

The code (the output text, or the body of its first Python code fence) is
written next to a copy of the tests in a fresh temporary directory, and
pytest runs there in its own process group. The check passes iff pytest
exits 0. On timeout, or when the check is cancelled (a sibling sample won),
the whole process group is killed, so a test that forks cannot outlive it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tempfile
from contextlib import suppress
from pathlib import Path, PurePath

from agents._check_base import NamedCheck
from agents._common import extract_fenced, tail
from orchestrator.agent import AttemptContext, AttemptOutput, CheckResult
from orchestrator.errors import WorkflowError

__all__ = ["PythonTestsCheck"]

_PY_FENCES = frozenset({"python", "py", "python3"})
_KEEP_BYTES = 64 * 1024
_DRAIN_AFTER_KILL_S = 5.0
_EXIT_MEANING = {
    1: "some tests failed",
    2: "pytest was interrupted",
    3: "pytest hit an internal error",
    4: "pytest was called wrongly",
    5: "no tests were collected",
}


class PythonTestsCheck(NamedCheck):
    """Pass iff a pytest suite passes against the output's code."""

    def __init__(
        self, tests_path: str | os.PathLike[str], *, timeout_s: float, python: str, code_file: str
    ) -> None:
        """See `agents.checks.python_tests`."""
        path = Path(tests_path).resolve()
        if not path.exists():
            raise WorkflowError(
                f"`checks.python_tests`: the tests path `{tests_path}` does not exist (resolved to"
                f" `{path}`); give a test file or a directory of tests"
            )
        if not timeout_s > 0:
            raise WorkflowError(f"`checks.python_tests`: timeout_s must be > 0 seconds, got {timeout_s}")
        rel = PurePath(code_file)
        if rel.is_absolute() or ".." in rel.parts or rel.suffix != ".py" or not rel.name:
            raise WorkflowError(
                f"`checks.python_tests`: code_file `{code_file}` must be a relative `.py` path"
                " inside the test directory, e.g. `solution.py`"
            )
        super().__init__(f"python_tests({str(tests_path)!r})")
        self.tests_path = path
        self.timeout_s = timeout_s
        self.python = python
        self.code_file = code_file

    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        """Write the code and tests to a temp dir, run pytest there, and report."""
        code = extract_fenced(output.text, _PY_FENCES)
        workdir = await asyncio.to_thread(self._prepare, output.text if code is None else code)
        try:
            code_or_none, text = await self._run_pytest(workdir)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        if code_or_none is None:
            return CheckResult(
                passed=False,
                detail=f"tests timed out after {self.timeout_s:g}s and were killed\n{tail(text)}",
            )
        if code_or_none == 0:
            return CheckResult(passed=True, detail=tail(text))
        meaning = _EXIT_MEANING.get(code_or_none, "pytest failed")
        return CheckResult(
            passed=False, detail=f"pytest exited with {code_or_none} ({meaning})\n{tail(text)}"
        )

    def _prepare(self, code: str) -> Path:
        workdir = Path(tempfile.mkdtemp(prefix="budgetflow-tests-"))
        if self.tests_path.is_dir():
            shutil.copytree(
                self.tests_path,
                workdir,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"),
            )
        else:
            shutil.copy2(self.tests_path, workdir / self.tests_path.name)
        target = workdir / self.code_file
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code if code.endswith("\n") else code + "\n", encoding="utf-8")
        return workdir

    async def _run_pytest(self, workdir: Path) -> tuple[int | None, str]:
        """Run pytest in `workdir`; return (exit code or `None` on timeout, output)."""
        proc = await asyncio.create_subprocess_exec(
            self.python,
            "-m",
            "pytest",
            "-q",
            "--no-header",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(workdir),
            str(workdir),
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        assert proc.stdout is not None  # stdout=PIPE above
        buffer = bytearray()
        reader = asyncio.create_task(_drain(proc.stdout, buffer))
        timed_out = False
        try:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await proc.wait()
            except TimeoutError:
                timed_out = True
        finally:
            # Also reaps grandchildren left behind by a test after pytest exited.
            _kill_group(proc.pid)
            if proc.returncode is None:
                await proc.wait()
            with suppress(TimeoutError):
                await asyncio.wait_for(reader, _DRAIN_AFTER_KILL_S)
        text = buffer.decode("utf-8", errors="replace")
        return (None if timed_out else proc.returncode), text


async def _drain(stream: asyncio.StreamReader, buffer: bytearray) -> None:
    """Read `stream` to its end, keeping only the last `_KEEP_BYTES`."""
    while chunk := await stream.read(65536):
        buffer.extend(chunk)
        if len(buffer) > _KEEP_BYTES:
            del buffer[: len(buffer) - _KEEP_BYTES]


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
