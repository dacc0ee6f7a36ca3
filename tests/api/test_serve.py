"""`budgetflow serve` in a process of its own: its URLs, tokens, a run, and SIGINT."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from budgetflow.cli import main
from storage import get_run
from tests.cli.conftest import capture

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def _serving(tmp_path: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """`budgetflow serve --port 0` on a temporary database; yield the process and its first output lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    for key in [k for k in env if k.startswith(("BUDGETFLOW_", "OPENAI_", "OTEL_"))]:
        del env[key]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "budgetflow",
            "serve",
            "--port",
            "0",
            "--db",
            f"sqlite:///{tmp_path / 'r.db'}",
            "--workflow",
            "tests.api.quick_workflow",
            "--time-scale",
            "0.01",
            *flags,
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("budgetflow API on" in line for line in lines):
            line = process.stdout.readline()
            assert line or process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        if "--insecure-no-auth" not in flags:
            lines.append(process.stdout.readline())  # the login URL
        yield process, lines
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            process.stdout.close()


def test_serve_prints_its_url_and_a_login_url_and_needs_a_token(tmp_path: Path) -> None:
    with _serving(tmp_path) as (process, lines):
        text = "".join(lines)
        base = re.search(r"budgetflow API on (http://127\.0\.0\.1:\d+)", text)
        login = re.search(r"(http://127\.0\.0\.1:\d+/login\?token=bf_[\w-]+)", text)
        assert base and login, text
        assert "workflows: `quick`" in text
        with httpx.Client(base_url=base.group(1), timeout=30) as client:
            assert client.get("/healthz").json() == {"status": "ok"}
            refused = client.get("/runs")
            assert refused.status_code == 401 and "budgetflow tokens create" in refused.json()["detail"]
            assert client.get(login.group(1)).status_code == 200  # a browser session
            assert client.get("/runs").status_code == 200
            csrf = {"X-CSRF-Token": client.cookies["budgetflow_csrf"]}
            submitted = client.post(
                "/runs", json={"workflow": "quick", "policy": "always_cheapest"}, headers=csrf
            )
            assert submitted.status_code == 202, submitted.text
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    run = get_run(f"sqlite:///{tmp_path / 'r.db'}", submitted.json()["run_id"]).run
    assert run.outcome.value in (
        "completed",
        "cancelled",
    )  # ended before the server stopped, or stopped by it


def test_serve_insecure_no_auth_serves_open_and_says_so(tmp_path: Path) -> None:
    with _serving(tmp_path, "--insecure-no-auth") as (_process, lines):
        text = "".join(lines)
        base = re.search(r"budgetflow API on (http://127\.0\.0\.1:\d+)", text)
        assert base and "--insecure-no-auth" in text and "local experiments only" in text
        assert "/login" not in text
        assert httpx.get(f"{base.group(1)}/runs", timeout=30).status_code == 200


def test_serve_refuses_a_workflow_module_it_cannot_import(tmp_path: Path) -> None:
    console, out = capture()
    code = main(
        ["serve", "--port", "0", "--db", f"sqlite:///{tmp_path / 'r.db'}", "--workflow", "no_such.module"],
        console=console,
    )
    assert code == 2
    assert "workflow module `no_such.module` cannot be imported" in out.getvalue()
    bad = main(["serve", "--workflow", "examples/code_pipeline.py"], console=console)
    assert bad == 2 and "not a Python module path" in out.getvalue()
