"""docs/observability.md lists every metric with its type and labels, and every span."""

from __future__ import annotations

from pathlib import Path

from web import METRICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def _rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].startswith("`budgetflow_"):
            rows.setdefault(cells[0].strip("`"), cells)
    return rows


def test_every_metric_is_listed_with_its_type_and_labels() -> None:
    rows = _rows()
    for spec in METRICS:
        assert spec.name in rows, f"docs/observability.md does not list `{spec.name}`"
        _, kind, labels, *_ = rows[spec.name]
        assert kind == spec.kind, f"`{spec.name}` is a {spec.kind}, the doc says {kind}"
        assert labels == ", ".join(f"`{label}`" for label in spec.labels), (
            f"`{spec.name}` has labels {spec.labels}, the doc says {labels}"
        )
    assert set(rows) - {spec.name for spec in METRICS} == set(), "the doc lists metrics that do not exist"


def test_every_span_has_its_section() -> None:
    text = DOC.read_text()
    for span in ("invoke_workflow {workflow}", "plan", "invoke_agent {subtask}", "chat {model}"):
        assert f"#### `{span}`" in text, f"docs/observability.md has no section for the `{span}` span"
