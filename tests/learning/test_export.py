"""`budgetflow export attempts`: JSONL and Parquet read back equal; the command's messages and exit codes."""

from __future__ import annotations

import io
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console

from budgetflow.cli import main
from budgetflow.export import PARQUET_HINT, parse_since, read_examples, write_examples
from orchestrator.errors import ConfigError
from orchestrator.records import AttemptStatus, CallStatus
from storage import AttemptExample, extract_examples
from tests.learning.records import Tried, record_run


async def _history(url: str) -> list[AttemptExample]:
    now = datetime.now(UTC)
    await record_run(
        url,
        "real",
        [
            Tried(status=AttemptStatus.PASSED, ended_s=4.0, calls=(CallStatus.ERROR, CallStatus.OK)),
            Tried(
                status=AttemptStatus.ERROR,
                started_s=1.5,
                ended_s=2.0,
                calls=(CallStatus.ERROR,),
                detail="429",
            ),
            Tried(status=AttemptStatus.CANCELLED, started_s=2.0, ended_s=4.0),
            Tried(status=AttemptStatus.RUNNING, started_s=3.0, ended_s=None, calls=(CallStatus.IN_FLIGHT,)),
        ],
        inputs={"issue": "é" * 5},
        completed={"plan": (0.5, "a plan"), "quiet": (0.6, None)},
        started_at=now - timedelta(days=2),
    )
    await record_run(url, "sim", [Tried(status=AttemptStatus.FAILED)], simulated=True, started_at=now)
    return extract_examples(url, include_simulated=True)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
async def test_exports_read_back_equal(db_url: str, tmp_path: Path, suffix: str) -> None:
    examples = await _history(db_url)
    assert len(examples) == 5
    # every kind of field: an embedding, declared fields, unknown sizes, a censored latency
    examples[1] = replace(examples[1], embedding=(0.25, -1.0, 3.5), declared_fields=("issue", "plan"))
    path = tmp_path / f"attempts{suffix}"
    assert write_examples(examples, path, fmt="parquet" if suffix == ".parquet" else "jsonl") == 5
    assert read_examples(path) == examples
    assert write_examples([], path, fmt="parquet" if suffix == ".parquet" else "jsonl") == 0
    assert read_examples(path) == []


def _cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), console=Console(file=out, width=200, color_system=None))
    return code, out.getvalue()


async def test_the_export_command(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = await _history(db_url)
    monkeypatch.chdir(tmp_path)

    code, text = _cli("export", "attempts", "--db", db_url)
    assert code == 0, text
    assert "wrote 4 attempts of 1 real run to `attempts.jsonl`" in text
    assert "1 passed, 1 provider_error, 1 cancelled, 1 lost" in text
    assert read_examples(tmp_path / "attempts.jsonl") == [e for e in examples if not e.simulated]

    code, text = _cli("export", "attempts", "--db", db_url, "--only-simulated", "--out", "sim.parquet")
    assert code == 0 and "1 simulated run" in text and "sim.parquet" in text, text
    assert read_examples(tmp_path / "sim.parquet") == [e for e in examples if e.simulated]

    code, text = _cli(
        "--db", db_url, "export", "attempts", "--include-simulated", "--format", "jsonl", "--out", "all.data"
    )
    assert code == 0 and "5 attempts of 2 real and simulated runs" in text, text
    assert read_examples(tmp_path / "all.data") == examples

    code, text = _cli("export", "attempts", "--db", db_url, "--since", "1d", "--out", "recent.jsonl")
    assert code == 0 and "no attempts of real runs matched" in text and "--include-simulated" in text, text
    code, text = _cli(
        "export", "attempts", "--db", db_url, "--workflow", "w", "--limit", "1", "--out", "one.jsonl"
    )
    assert code == 0 and "4 attempts of 1 real run" in text, text


async def test_export_to_standard_output(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = await _history(sqlite_url)
    code, text = _cli("export", "attempts", "--db", sqlite_url, "--only-simulated", "--out", "-")
    assert code == 0 and text == ""
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["attempt_id"] for line in lines] == [
        e.attempt_id for e in examples if e.simulated
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "last tuesday"], "--since `last tuesday` is not a date"),
        (["--include-simulated", "--only-simulated"], "not allowed with argument"),
        (["--format", "csv"], "invalid choice: 'csv'"),
        (["--limit", "0"], "must be at least 1"),
        (["--format", "parquet", "--out", "-"], "Parquet cannot be written to standard output"),
        (["--out", "no/such/dir/a.jsonl"], "the directory `no/such/dir` does not exist"),
    ],
)
async def test_bad_input_is_a_usage_error(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], message: str
) -> None:
    await _history(sqlite_url)
    monkeypatch.chdir(tmp_path)
    code, text = _cli("export", "attempts", "--db", sqlite_url, *argv)
    assert code == 2, text
    assert message in " ".join(text.split()) and "Traceback" not in text


def test_a_database_that_does_not_exist_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    code, text = _cli("export", "attempts", "--db", f"sqlite:///{missing}")
    assert code == 2 and "no runs recorded in" in text and "none.db" in text, text
    assert not missing.exists()


async def test_parquet_without_pyarrow_says_how_to_install_it(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _history(sqlite_url)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # what `import` sees when it is not installed
    code, text = _cli("export", "attempts", "--db", sqlite_url, "--out", "a.parquet")
    assert code == 2 and "pip install 'budgetflow[parquet]'" in text and "--format jsonl" in text, text
    assert not (tmp_path / "a.parquet").exists()
    with pytest.raises(ConfigError, match="needs pyarrow"):
        write_examples([], tmp_path / "b.parquet", fmt="parquet")
    assert PARQUET_HINT.startswith("Parquet export needs pyarrow")


def test_since_forms() -> None:
    now = datetime(2025, 6, 10, 12, tzinfo=UTC)
    assert parse_since("7d", now=now) == datetime(2025, 6, 3, 12, tzinfo=UTC)
    assert parse_since("12h", now=now) == datetime(2025, 6, 10, 0, tzinfo=UTC)
    assert parse_since("2025-06-01") == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_since("2025-06-01T12:00+02:00") == datetime(2025, 6, 1, 10, tzinfo=UTC)
