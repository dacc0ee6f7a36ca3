"""The DAG-pool importer: parsing, round trip, workflow building, and errors that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import PoolFormatError
from policies.dag_pool import parse_pool_line, pool_workflow, read_pool, write_pool
from tests.policies.conftest import dumps, pool_line

DEV_POOL = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "pool_dev.jsonl"


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


def test_real_pool_round_trips(tmp_path: Path) -> None:
    problems = read_pool(DEV_POOL)
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


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[" * 100_000, "line 3: nests too deeply to be a DAG"),
        ('{"nodes": ' + "9" * 5000 + "}", "line 3: holds a number JSON cannot read here"),
        ("", "line 3: field `nodes[1].empirical_samples_by_model.4B_ins[0].latency` must be a finite number"),
        ("1e400", "line 3: field `nodes[1].empirical_samples_by_model.4B_ins[0].latency` must be a finite"),
        ("cost", "field `nodes[1].empirical_samples_by_model.4B_ins[0].cost` must be a finite number"),
        ("cycle", "field `nodes` form a cycle through node 0"),
        ("self", "field `nodes[1].parents` names node 1 itself"),
        ("model", "field `output_price_per_1m_tokens` must be a model id without white space"),
        ("problem_id", "field `problem_id` must be a non-empty name on one line"),
    ],
)
def test_hostile_lines_name_the_line_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    line = pool_line()
    sample = line["nodes"][1]["empirical_samples_by_model"]["4B_ins"][0]
    if text == "":
        sample["latency"] = 10**400  # an integer beyond float range
        text = json.dumps(line)
    elif text == "1e400":
        sample["latency"] = 12345.678
        text = json.dumps(line).replace("12345.678", "1e400")
    elif text == "cost":
        sample["cost"] = 10**30
        text = json.dumps(line)
    elif text == "cycle":
        line["nodes"][0]["parents"] = [2]
        text = json.dumps(line)
    elif text == "self":
        line["nodes"][1]["parents"] = [1]
        text = json.dumps(line)
    elif text == "model":
        line["output_price_per_1m_tokens"]["a b"] = 1.0
        text = json.dumps(line)
    elif text == "problem_id":
        line["problem_id"] = "a\nb"
        text = json.dumps(line)
    src = tmp_path / "bad.jsonl"
    src.write_text(dumps(pool_line("a")) + "\n" + dumps(pool_line("b")) + "\n" + text + "\n")
    with pytest.raises(PoolFormatError) as info:
        read_pool(src)
    assert f"`{src}` " in str(info.value) and fragment in str(info.value)


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_bytes(dumps(pool_line("a")).encode() + b'\n{"problem_id": "caf\xe9"}\n')
    with pytest.raises(PoolFormatError, match=r"line 2: not UTF-8 text \(byte 0xe9 at column 20\)"):
        read_pool(src)


def test_node_names_with_braces_stay_literal_in_prompts() -> None:
    line = pool_line()
    line["nodes"][0]["name"] = "{weird} name}"
    wf, catalog = pool_workflow(parse_pool_line(json.dumps(line)))
    wf.validate(catalog=catalog)
    assert wf.subtasks["n0"].agent.template_variables() == frozenset()
