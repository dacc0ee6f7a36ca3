"""End to end over OTLP: `budgetflow run` exports its traces to a real Arize Phoenix, read back over HTTP.

Phoenix is a real OTLP receiver with a REST API; it runs from its own virtual environment
(`bash scripts/setup_phoenix.sh`, as vLLM does), on free loopback ports, with its working
directory under the test's tmp path and its outside requests (telemetry, downloads) off.
The fixture stops it by its PID. Without that venv these tests are skipped, unless
`BUDGETFLOW_REQUIRE_PHOENIX` is set (as `make test-phoenix` does): then they fail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from budgetflow.cli import main
from storage import make_engine
from tests.cli.conftest import EXAMPLES, capture

pytestmark = pytest.mark.phoenix

PHOENIX_VENV = Path(
    os.environ.get("BUDGETFLOW_PHOENIX_VENV", str(Path.home() / ".cache" / "budgetflow" / "phoenix-venv"))
)
STARTUP_S = 90.0
"""Longest wait for Phoenix to answer (it migrates its SQLite database first: ~15 s here)."""
READ_BACK_S = 30.0
"""Longest wait for exported spans to show up in Phoenix's API."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Phoenix server on loopback; yields its base URL (OTLP/HTTP at `/v1/traces`, REST at `/v1`)."""
    binary = PHOENIX_VENV / "bin" / "phoenix"
    if not binary.exists():
        reason = (
            f"Arize Phoenix is not installed at {PHOENIX_VENV}; `bash scripts/setup_phoenix.sh` installs it"
        )
        if os.environ.get("BUDGETFLOW_REQUIRE_PHOENIX"):
            pytest.fail(f"BUDGETFLOW_REQUIRE_PHOENIX is set but {reason}")
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(_free_port()),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_ALLOWED_SANDBOX_PROVIDERS": "NONE",
    }
    log = (workdir / "phoenix.log").open("wb")
    proc = subprocess.Popen(
        [str(binary), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Phoenix exited with {proc.returncode}: {_tail(workdir / 'phoenix.log')}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > give_up:
                pytest.fail(f"Phoenix did not answer within {STARTUP_S:g}s: {_tail(workdir / 'phoenix.log')}")
            time.sleep(0.25)
        yield url
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s, to the process we started (and its session)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _value(value: Mapping[str, Any]) -> Any:
    """An OTLP `AnyValue` as a Python value."""
    for key in ("string_value", "bool_value", "int_value", "double_value"):
        if value.get(key) is not None:
            return value[key]
    array = value.get("array_value")
    if array is not None:
        return [_value(v) for v in array.get("values") or []]
    return None


def _spans(url: str, project: str) -> list[dict[str, Any]]:
    """Every span of `project`, as Phoenix returns them (OTLP JSON), with attributes as a dict."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        reply = httpx.get(f"{url}/v1/projects/{project}/spans/otlpv1", params=params, timeout=10)
        if reply.status_code == 404:
            return []  # the project appears with its first span
        reply.raise_for_status()
        body = reply.json()
        for span in body["data"]:
            span["attrs"] = {a["key"]: _value(a["value"]) for a in span.get("attributes") or []}
            spans.append(span)
        cursor = body.get("next_cursor")
        if not cursor:
            return spans


def test_budgetflow_run_exports_its_calling_tree_to_phoenix(
    phoenix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = f"budgetflow-{uuid.uuid4().hex[:8]}"
    for var in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", phoenix)
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")  # Phoenix receives traces only
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    console, out = capture()
    args = ["--time-scale", "0.01", "--no-progress", "--policy", "fixed:mini:2", "--seed", "3"]
    assert main(["--db", db, "run", str(EXAMPLES / "code_pipeline.py"), *args], console=console) == 0, (
        out.getvalue()
    )

    with make_engine(db).connect() as conn:
        (run_id, workflow, spent) = conn.execute(
            sa.text("SELECT run_id, workflow, spent_usd FROM runs")
        ).one()
        calls = {
            row.call_id: row
            for row in conn.execute(
                sa.text("SELECT call_id, parent_call_id, kind, subtask, input_tokens, status FROM calls")
            )
        }
        decisions = conn.execute(sa.text("SELECT count(*) FROM plan_decisions")).scalar_one()
    expected = 1 + decisions + len(calls)

    give_up = time.monotonic() + READ_BACK_S
    spans = _spans(phoenix, project)
    while len(spans) < expected and time.monotonic() < give_up:
        time.sleep(0.5)
        spans = _spans(phoenix, project)
    assert len(spans) == expected, f"{len(spans)} spans in Phoenix, {expected} expected"

    by_id = {span["span_id"]: span for span in spans}
    by_call = {
        span["attrs"]["budgetflow.call_id"]: span for span in spans if "budgetflow.call_id" in span["attrs"]
    }
    (root,) = [span for span in spans if not span.get("parent_span_id")]
    assert root["name"] == f"invoke_workflow {workflow}"
    assert root["attrs"]["budgetflow.run_id"] == run_id and root["attrs"]["budgetflow.outcome"] == "completed"
    spent = sum(
        float(span["attrs"]["budgetflow.cost.usd"]) for span in spans if span["name"].startswith("chat")
    )
    assert root["attrs"]["budgetflow.cost.usd"] == pytest.approx(spent)
    assert len({span["trace_id"] for span in spans}) == 1
    plans = [span for span in spans if span["name"] == "plan"]
    assert len(plans) == decisions and all(by_id[p["parent_span_id"]] is root for p in plans)
    assert sorted(by_call) == sorted(calls)
    for call_id, row in calls.items():
        span = by_call[call_id]
        if row.kind == "agent":
            assert span["name"] == f"invoke_agent {row.subtask}" and by_id[span["parent_span_id"]] is root
            continue
        assert span["name"] == "chat mini"
        assert by_id[span["parent_span_id"]] is by_call[row.parent_call_id]
        assert span["attrs"]["gen_ai.operation.name"] == "chat"
        assert span["attrs"]["gen_ai.usage.input_tokens"] == row.input_tokens
        kind = span["attrs"].get("error.type")
        if row.status == "ok":
            assert kind is None
        else:
            assert kind == "cancelled" if row.status == "cancelled" else kind is not None
