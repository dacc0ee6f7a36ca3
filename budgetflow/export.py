"""`budgetflow export attempts`: recorded attempts as training data, in JSONL or Parquet.

One row per `storage.training_data.AttemptExample`, with the same field names
(the schema is in docs/learning.md). JSONL is always available; Parquet needs
pyarrow (`pip install 'budgetflow[parquet]'`). Money is exact in both: a decimal
string in JSONL, `decimal128(20, 9)` in Parquet. Files are written whole or not at
all (to a temporary file, renamed at the end).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from budgetflow._format import command, plural
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError
from storage.training_data import AttemptExample, AttemptOutcome

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ExportFormat",
    "example_from_row",
    "example_to_row",
    "export_attempts",
    "parse_since",
    "read_examples",
    "write_examples",
]

ExportFormat = Literal["jsonl", "parquet"]
"""File formats of an export."""

PARQUET_HINT = (
    "Parquet export needs pyarrow, which is not installed; install it with"
    " `pip install 'budgetflow[parquet]'` (or `uv sync --extra parquet`), or use `--format jsonl`"
)
_RELATIVE = re.compile(r"(\d+)\s*([hdw])")
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
_ROWS_PER_GROUP = 10_000


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`2025-06-01`, `2025-06-01T12:00` (UTC unless an offset is given), or `7d` / `12h` / `2w` ago.

    Raises:
        ConfigError: none of those forms.
    """
    text = text.strip()
    relative = _RELATIVE.fullmatch(text.lower())
    if relative is not None:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[relative[2]]: int(relative[1])})
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--since `{text}` is not a date; use an ISO date or time (UTC), e.g. `2025-06-01` or"
            " `2025-06-01T12:00`, or a time ago, e.g. `7d`, `12h`, `2w`"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def example_to_row(example: AttemptExample) -> dict[str, Any]:
    """An example as a flat JSON-ready row (the export schema)."""
    return {
        "workflow": example.workflow,
        "subtask": example.subtask,
        "model": example.model,
        "litellm_model": example.litellm_model,
        "run_id": example.run_id,
        "attempt_id": example.attempt_id,
        "batch": example.batch,
        "sample": example.sample,
        "run_started_at": example.run_started_at.astimezone(UTC).isoformat(),
        "simulated": example.simulated,
        "input_chars": dict(example.input_chars),
        "parent_output_chars": dict(example.parent_output_chars),
        "declared_fields": None if example.declared_fields is None else list(example.declared_fields),
        "prompt_tokens": example.prompt_tokens,
        "max_tokens": example.max_tokens,
        "embedding": None if example.embedding is None else list(example.embedding),
        "outcome": example.outcome.value,
        "winner": example.winner,
        "censored": example.censored,
        "output_tokens": example.output_tokens,
        "truncated": example.truncated,
        "latency_s": example.latency_s,
        "ttft_s": example.ttft_s,
        "cost_usd": str(example.cost_usd),
        "error": example.error,
    }


def example_from_row(row: dict[str, Any]) -> AttemptExample:
    """The example a row of `example_to_row` (or of a Parquet export) holds."""
    started = row["run_started_at"]
    if isinstance(started, str):
        started = datetime.fromisoformat(started)

    def mapping(value: Any) -> dict[str, Any]:  # Parquet maps read back as (key, value) pairs
        return dict(value) if value is not None else {}

    return AttemptExample(
        workflow=row["workflow"],
        subtask=row["subtask"],
        model=row["model"],
        litellm_model=row["litellm_model"],
        run_id=row["run_id"],
        attempt_id=row["attempt_id"],
        batch=int(row["batch"]),
        sample=int(row["sample"]),
        run_started_at=started.astimezone(UTC),
        simulated=bool(row["simulated"]),
        input_chars=mapping(row["input_chars"]),
        parent_output_chars=mapping(row["parent_output_chars"]),
        declared_fields=None if row["declared_fields"] is None else tuple(row["declared_fields"]),
        prompt_tokens=row["prompt_tokens"],
        max_tokens=int(row["max_tokens"]),
        embedding=None if row["embedding"] is None else tuple(float(x) for x in row["embedding"]),
        outcome=AttemptOutcome(row["outcome"]),
        winner=bool(row["winner"]),
        censored=bool(row["censored"]),
        output_tokens=int(row["output_tokens"]),
        truncated=bool(row["truncated"]),
        latency_s=row["latency_s"],
        ttft_s=row["ttft_s"],
        cost_usd=Decimal(row["cost_usd"]),
        error=row["error"],
    )


def _arrow_schema() -> pa.Schema:
    import pyarrow as pa

    text, count = pa.string(), pa.int64()
    return pa.schema(
        [
            ("workflow", text),
            ("subtask", text),
            ("model", text),
            ("litellm_model", text),
            ("run_id", text),
            ("attempt_id", text),
            ("batch", count),
            ("sample", count),
            ("run_started_at", pa.timestamp("us", tz="UTC")),
            ("simulated", pa.bool_()),
            ("input_chars", pa.map_(text, count)),
            ("parent_output_chars", pa.map_(text, count)),
            ("declared_fields", pa.list_(text)),
            ("prompt_tokens", count),
            ("max_tokens", count),
            ("embedding", pa.list_(pa.float64())),
            ("outcome", text),
            ("winner", pa.bool_()),
            ("censored", pa.bool_()),
            ("output_tokens", count),
            ("truncated", pa.bool_()),
            ("latency_s", pa.float64()),
            ("ttft_s", pa.float64()),
            ("cost_usd", pa.decimal128(20, 9)),
            ("error", text),
        ]
    )


def _arrow_row(example: AttemptExample) -> dict[str, Any]:
    row = example_to_row(example)
    row["run_started_at"] = example.run_started_at
    row["cost_usd"] = example.cost_usd
    for name in ("input_chars", "parent_output_chars"):
        row[name] = list(row[name].items())
    return row


def _batches(examples: Iterable[AttemptExample], size: int) -> Iterator[list[AttemptExample]]:
    batch: list[AttemptExample] = []
    for example in examples:
        batch.append(example)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _require_pyarrow() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ConfigError(PARQUET_HINT) from None


def write_examples(examples: Iterable[AttemptExample], path: Path, *, fmt: ExportFormat = "jsonl") -> int:
    """Write `examples` to `path` (whole or not at all); return how many were written.

    Raises:
        ConfigError: Parquet without pyarrow, or the file cannot be written.
    """
    if fmt == "parquet":
        _require_pyarrow()
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    except OSError as exc:
        raise ConfigError(f"cannot write `{path}`: {exc.strerror or exc}; choose another --out") from None
    os.close(handle)
    try:
        if fmt == "jsonl":
            with open(temporary, "wb") as stream:
                written = _write_jsonl(examples, stream)
        else:
            written = _write_parquet(examples, temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"cannot write `{path}`: {exc.strerror or exc}; choose another --out") from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    return written


def _write_jsonl(examples: Iterable[AttemptExample], stream: IO[bytes]) -> int:
    written = 0
    for example in examples:
        stream.write(json.dumps(example_to_row(example), ensure_ascii=False).encode() + b"\n")
        written += 1
    return written


def _write_parquet(examples: Iterable[AttemptExample], path: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    written = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in _batches(examples, _ROWS_PER_GROUP):
            writer.write_table(pa.Table.from_pylist([_arrow_row(e) for e in batch], schema=schema))
            written += len(batch)
        if written == 0:
            writer.write_table(schema.empty_table())
    return written


def read_examples(path: Path) -> list[AttemptExample]:
    """The examples of a JSONL or Parquet export (by the file's suffix, `.parquet` or not)."""
    if path.suffix == ".parquet":
        _require_pyarrow()
        import pyarrow.parquet as pq

        return [example_from_row(row) for row in pq.read_table(path).to_pylist()]
    with path.open(encoding="utf-8") as lines:
        return [example_from_row(json.loads(line)) for line in lines if line.strip()]


def export_attempts(
    settings: Settings,
    console: Console,
    *,
    workflow: str | None,
    since: str | None,
    fmt: ExportFormat | None,
    out: str | None,
    max_runs: int | None,
    include_simulated: bool,
    only_simulated: bool,
) -> int:
    """The `export attempts` command: write the examples, with progress, and say what was written.

    `fmt=None` picks Parquet for an `out` ending in `.parquet`, else JSONL.
    """
    from budgetflow.show import missing_database
    from storage.training_data import iter_examples

    start = parse_since(since) if since is not None else None
    if fmt is None:
        fmt = "parquet" if (out or "").endswith(".parquet") else "jsonl"
    missing = missing_database(settings.database_url)
    if missing is not None:
        raise ConfigError(
            f"no runs recorded in `{missing}` (the file does not exist); record some with"
            f" `{command(settings, 'run', 'PATH.py')}` or pass the database with --db URL"
        )
    if out == "-" and fmt == "parquet":
        raise ConfigError("Parquet cannot be written to standard output; give a file with --out FILE")
    if fmt == "parquet":
        _require_pyarrow()
    target = Path(out or f"attempts.{fmt}")
    if out != "-" and not target.parent.is_dir():
        raise ConfigError(f"--out `{out}`: the directory `{target.parent}` does not exist; create it first")
    tally = dict.fromkeys(AttemptOutcome, 0)
    runs_read = [0]

    def counted(examples: Iterable[AttemptExample]) -> Iterator[AttemptExample]:
        for example in examples:
            tally[example.outcome] += 1
            yield example

    with Progress(
        TextColumn("exporting runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=out == "-" or not console.is_terminal,
    ) as progress:
        task = progress.add_task("runs", total=None)

        def advanced(done: int, total: int) -> None:
            runs_read[0] = done
            progress.update(task, completed=done, total=total)

        examples = counted(
            iter_examples(
                settings.database_url,
                workflow=workflow,
                since=start,
                max_runs=max_runs,
                include_simulated=include_simulated,
                only_simulated=only_simulated,
                progress=advanced,
            )
        )
        if out == "-":
            for example in examples:
                sys.stdout.write(json.dumps(example_to_row(example), ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return 0
        written = write_examples(examples, target, fmt=fmt)
    kinds = ", ".join(f"{n} {outcome.value}" for outcome, n in tally.items() if n)
    which = "simulated" if only_simulated else "real and simulated" if include_simulated else "real"
    if written == 0:
        console.print(
            f"no attempts of {which} runs matched; wrote an empty `{target}`"
            + (
                "" if include_simulated or only_simulated else " (add --include-simulated for simulated runs)"
            ),
            highlight=False,
        )
        return 0
    runs = plural(runs_read[0], f"{which} run")
    console.print(
        f"wrote {plural(written, 'attempt')} of {runs} to `{target}` ({kinds})",
        highlight=False,
        soft_wrap=True,
    )
    return 0
