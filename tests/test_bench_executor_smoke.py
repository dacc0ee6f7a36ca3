"""Smoke test of the executor-overhead benchmark: it runs on tiny sizes and writes complete JSON."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_executor import fan_shape, main


def test_fan_shape_has_exactly_n_subtasks_in_topological_order() -> None:
    for n in (1, 2, 10, 37, 100):
        shape = fan_shape(n)
        assert len(shape) == n
        seen: set[str] = set()
        for name, parents in shape:
            assert set(parents) <= seen
            seen.add(name)


def test_quick_benchmark_writes_positive_numbers(tmp_path: Path) -> None:
    out = tmp_path / "executor.json"

    code = main(["--quick", "--sizes", "5", "12", "--reps", "1", "--in-flight", "40", "--out", str(out)])

    assert code == 0
    data = json.loads(out.read_text())
    assert [d["subtasks"] for d in data["dispatch"]] == [5, 12]
    for d in data["dispatch"]:
        assert d["budgetflow"]["attempts"] == d["subtasks"]
        assert d["langgraph"]["nodes"] == d["subtasks"]
        for value in (
            d["budgetflow"]["us_per_attempt"],
            d["budgetflow"]["attempts_per_s"],
            d["langgraph"]["us_per_node"],
            d["langgraph"]["nodes_per_s"],
            d["ratio_budgetflow_over_langgraph"],
        ):
            assert value > 0
        assert isinstance(d["meets_targets"], bool)
    assert {c["mode"] for c in data["concurrency"]} == {"samples", "fanout"}
    for c in data["concurrency"]:
        assert c["in_flight"] == 40
        for key in ("time_to_all_in_flight_s", "total_s", "us_per_call", "tracemalloc_per_call_bytes"):
            assert c[key] > 0, key
        assert c["peak_rss_mb"] > 0
    profile = data["profile"]
    assert profile["attempts"] == 12
    assert profile["top_tottime"] and all(r["tottime_s"] >= 0 for r in profile["top_tottime"])
    assert data["targets"] == {"us_per_attempt_max": 200.0, "attempts_per_s_min": 5000.0}
    assert data["machine"]["cpus"] >= 1
