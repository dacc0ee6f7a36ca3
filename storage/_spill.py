"""The spill file: records the database would not take, kept on local disk until it does.

When a write fails for good (the database stays unreachable past the recorder's retry
window, or refuses a row), the `SqlRecorder` appends the rows to a JSON-lines file
next to the database (SQLite) or in the user's cache (PostgreSQL), and the next
recorder opened on that database writes them back before anything else. A paid call
is then never lost to a storage fault, only delayed.

One line per row: `{"table": "calls", "values": {...}}`, with `Decimal` and
`datetime` values tagged so that they come back exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from storage._engine import redact, sqlite_path

__all__ = ["default_spill_path", "read_spill", "spill_rows"]

_DECIMAL = "__decimal__"
_DATETIME = "__datetime__"


def default_spill_path(url: URL, database_id: str = "") -> Path | None:
    """Where a recorder on `url` spills: beside a SQLite file, in the user cache for a server.

    For a server the file is named after the URL and `database_id` (PostgreSQL: the
    database's OID, which survives restarts but not a drop and re-create, so rows kept for
    one database are never written into another of the same name). `None` for in-memory
    SQLite (nothing outlives the process anyway).
    """
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        return None if path is None else path.with_name(path.name + ".spill.jsonl")
    digest = hashlib.sha256(f"{redact(url)}\x00{database_id}".encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "budgetflow" / "spill" / f"{digest}.jsonl"


def spill_rows(path: Path, rows: list[tuple[str, Mapping[str, object]]]) -> None:
    """Append rows (table name, column values) to the spill file and fsync it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as file:
        for table, values in rows:
            file.write(json.dumps({"table": table, "values": _encode(values)}, ensure_ascii=False) + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_spill(path: Path) -> Iterator[tuple[str, dict[str, object]]]:
    """The rows of a spill file, in the order they were spilled (a torn last line is skipped)."""
    with path.open(encoding="utf-8") as file:
        for line in file:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the process died mid-line: everything before it is whole
            yield str(entry["table"]), {k: _decode(v) for k, v in entry["values"].items()}


def _encode(values: Mapping[str, object]) -> dict[str, Any]:
    return {key: _encode_value(value) for key, value in values.items()}


def _encode_value(value: object) -> object:
    if isinstance(value, Decimal):
        return {_DECIMAL: str(value)}
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    if isinstance(value, Mapping):
        return {str(k): _encode_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def _decode(value: object) -> object:
    if isinstance(value, dict):
        if set(value) == {_DECIMAL}:
            return Decimal(value[_DECIMAL])
        if set(value) == {_DATETIME}:
            return datetime.fromisoformat(value[_DATETIME])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
