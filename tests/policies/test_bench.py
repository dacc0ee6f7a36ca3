"""The planner benchmark CLI, in-process, on a tiny pool."""

from __future__ import annotations

import json
from pathlib import Path

from policies.bench import main, wilson_interval
from tests.policies.conftest import dumps, pool_line


def test_bench_main_writes_json_and_heatmap(tmp_path: Path) -> None:
    pool = tmp_path / "pool.jsonl"
    pool.write_text(dumps(pool_line("a", nodes=2)) + "\n" + dumps(pool_line("b", nodes=3)) + "\n")
    out, png = tmp_path / "r.json", tmp_path / "h.png"
    code = main(
        [
            "--pool",
            str(pool),
            "--budgets",
            "0.001,0.01",
            "--deadlines",
            "20",
            "--trials",
            "1",
            "--policies",
            "mcpp,always_cheapest,split_uniform",
            "--seed",
            "3",
            "--out",
            str(out),
            "--heatmap",
            str(png),
            "--quiet",
        ]
    )
    assert code == 0
    data = json.loads(out.read_text())
    cell = data["cells"]["0.01|20"]
    assert set(cell) == {"mcpp", "always_cheapest", "split_uniform"}
    assert (
        cell["mcpp"]["n"] == 2
        and 0 <= cell["mcpp"]["ci95"][0] <= cell["mcpp"]["p"] <= cell["mcpp"]["ci95"][1]
    )
    assert png.stat().st_size > 1000


def test_bench_rejects_bad_flags(tmp_path: Path) -> None:
    assert main(["--pool", str(tmp_path / "none.jsonl")]) == 2
    assert main(["--pool", "x", "--policies", "nope"]) == 2
    assert main(["--pool", "x", "--budgets", "a,b"]) == 2


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    lo, hi = wilson_interval(5, 10)
    assert lo < 0.5 < hi and abs((lo + hi) / 2 - 0.5) < 1e-9
