"""The DAG-pool importer: parsing, round trip, workflow building, and errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import PoolFormatError
from policies.dag_pool import parse_pool_line, pool_workflow, read_pool, write_pool
from tests.policies.conftest import dumps, pool_line

SHARED_POOL = Path(__file__).resolve().parents[3] / "shared" / "benchmarks" / "pool_dev.jsonl"


def test_parse_and_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "pool.jsonl"
    src.write_text(dumps(pool_line("a")) + "\n\n" + dumps(pool_line("b", nodes=2)) + "\n")
    problems = read_pool(src)
    assert [p.problem_id for p in problems] == ["a", "b"]
    assert problems[0].nodes[1].parents == (0,)
    assert problems[0].nodes[0].samples["4B_ins"][1].success is True
    assert problems[0].prices_per_mtok == {"30B_ins": 0.8, "4B_ins": 0.42}
    out = tmp_path / "again.jsonl"
    write_pool(out, problems)
    assert read_pool(out) == problems


@pytest.mark.skipif(not SHARED_POOL.is_file(), reason="shared pool_dev.jsonl not present")
def test_real_pool_round_trips(tmp_path: Path) -> None:
    problems = read_pool(SHARED_POOL)
    assert len(problems) == 40
    write_pool(tmp_path / "p.jsonl", problems)
    assert read_pool(tmp_path / "p.jsonl") == problems


def test_pool_workflow_names_models_and_prices() -> None:
    problem = parse_pool_line(dumps(pool_line()))
    wf, catalog = pool_workflow(problem)
    view = wf.dag_view()
    assert view.subtasks == ("n0", "n1", "n2")
    assert view.parents["n2"] == ("n1",)
    assert view.models["n0"] == ("30B_ins", "4B_ins")
    est = wf.subtasks["n0"].estimates["4B_ins"]
    assert est.input_tokens == 0 and est.success_prob == 0.5
    spec = catalog.get("4B_ins")
    assert spec.litellm_model == "budgetflow-sim/4B_ins"
    assert float(spec.output_price_per_mtok or 0) == 0.42 and spec.input_price_per_mtok == 0
    wf.validate(catalog=catalog)


def _broken(mutate: str) -> str:
    line = pool_line()
    node = line["nodes"][1]
    if mutate == "latency":
        node["empirical_samples_by_model"]["4B_ins"][2]["latency"] = "slow"
    elif mutate == "parent":
        node["parents"] = [7]
    elif mutate == "success":
        node["empirical_samples_by_model"]["30B_ins"][0]["success"] = 3
    elif mutate == "nodes":
        del line["nodes"]
    elif mutate == "price":
        node["empirical_samples_by_model"]["mystery"] = [{"latency": 1.0, "success": 1, "cost": 5}]
    return json.dumps(line)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        ("latency", "nodes[1].empirical_samples_by_model.4B_ins[2].latency"),
        ("parent", "nodes[1].parents"),
        ("success", "nodes[1].empirical_samples_by_model.30B_ins[0].success"),
        ("nodes", "nodes"),
        ("price", "nodes[1].empirical_samples_by_model.mystery"),
    ],
)
def test_malformed_lines_name_file_line_and_field(tmp_path: Path, mutate: str, field: str) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text(dumps(pool_line()) + "\n" + _broken(mutate) + "\n")
    with pytest.raises(PoolFormatError) as info:
        read_pool(src)
    message = str(info.value)
    assert f"`{src}` line 2" in message
    assert f"`{field}`" in message


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PoolFormatError, match="line 4: not valid JSON"):
        parse_pool_line("{nope", source="x.jsonl", line_no=4)
    with pytest.raises(PoolFormatError, match="does not exist"):
        read_pool(tmp_path / "missing.jsonl")
