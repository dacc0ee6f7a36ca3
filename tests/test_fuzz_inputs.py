"""Fuzzed user inputs get clear errors: catalog files, DAG-pool lines and workflow definitions.

Whatever hypothesis writes, the loaders either accept it or raise one of our user
errors (`ConfigError`, `PoolFormatError`, `WorkflowError`) with a message; never a
`TypeError`, `RecursionError`, `UnicodeDecodeError`, a raw pydantic dump or any other
exception. The example counts are bounded so that `make test` runs them every time.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from budgetflow import (
    AttemptEstimate,
    Catalog,
    ConfigError,
    FunctionAgent,
    LLMAgent,
    LogNormal,
    ModelSpec,
    UserError,
    Workflow,
    WorkflowError,
)
from orchestrator.agent import AttemptContext
from orchestrator.errors import PoolFormatError
from policies.dag_pool import parse_pool_line, pool_workflow, read_pool
from tests.policies.conftest import pool_line

FUZZ = settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
"""Bounded and derandomized: the same examples in every `make test`, in seconds."""

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_json = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_MODEL_FIELDS = [*ModelSpec.model_fields, "models", "model", "price"]
_model_entries = st.one_of(
    _json,
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(["small", "large", "local"]),
            "litellm_model": st.sampled_from(["openai/gpt-4o-mini", "hosted_vllm/tiny", "x"]),
            "input_price_per_mtok": st.sampled_from([0, 0.15, "2.5", 1]),
            "output_price_per_mtok": st.sampled_from([0, 0.6, "10", 2]),
        },
        optional={"pool": st.just("gpu"), "latency": st.just({"ttft_s": 0.4, "tokens_per_s": 90})},
    ),
    st.dictionaries(
        st.sampled_from(_MODEL_FIELDS), _json | st.sampled_from(["openai/gpt-4o-mini", "small", "0.5"])
    ),
    st.fixed_dictionaries(
        {
            "name": st.text(max_size=8) | st.sampled_from(["small", "large"]),
            "litellm_model": st.text(max_size=12),
        },
        optional={
            "input_price_per_mtok": _scalars,
            "output_price_per_mtok": _scalars,
            "context_window": _scalars,
            "latency": _json,
            "pool": st.sampled_from(["gpu", "gpus"]) | _scalars,
            "tier": st.sampled_from(["cheap", "strong", "other", "best"]),
        },
    ),
)
_catalogs = st.one_of(
    st.dictionaries(
        st.sampled_from(["models", "pools", "model", "extra"]) | st.text(max_size=6),
        st.lists(_model_entries, max_size=4) | _json,
        max_size=3,
    ),
    st.fixed_dictionaries(
        {"models": st.lists(_model_entries, min_size=1, max_size=3)},
        optional={
            "pools": st.lists(_json | st.just({"name": "gpu", "served_model": "m", "replicas": ["http://x"]}))
        },
    ),
)


def _toml_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        items = [v for v in (_toml_value(x) for x in value) if v is not None]
        return "[" + ", ".join(items) + "]"
    pairs = [(k, _toml_value(v)) for k, v in value.items()]
    return (
        "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {v}" for k, v in pairs if v is not None) + "}"
    )


def _toml(data: dict[str, Any]) -> str:
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for table in value:
                lines.append(f"[[{json.dumps(key, ensure_ascii=False)}]]")
                lines += [
                    f"{json.dumps(k, ensure_ascii=False)} = {t}"
                    for k, v in table.items()
                    if (t := _toml_value(v)) is not None
                ]
        elif (text := _toml_value(value)) is not None:
            lines.insert(0, f"{json.dumps(key, ensure_ascii=False)} = {text}")
    return "\n".join(lines) + "\n"


_WRITERS: dict[str, Callable[[dict[str, Any]], str]] = {
    ".json": json.dumps,
    ".yaml": lambda d: yaml.safe_dump(d, allow_unicode=True),
    ".toml": _toml,
}


def _expect_clear(error: BaseException, *kinds: type[UserError]) -> None:
    assert isinstance(error, kinds), f"{type(error).__name__}: {error}"
    assert str(error).strip(), "an error says what is wrong"
    assert "Traceback" not in str(error) and "validation error for" not in str(error)


@FUZZ
@given(data=_catalogs, suffix=st.sampled_from(sorted(_WRITERS)))
def test_structured_catalog_files(data: dict[str, Any], suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"models{suffix}"
        path.write_text(_WRITERS[suffix](data), encoding="utf-8", errors="surrogatepass")
        try:
            catalog = Catalog.from_file(path)
        except Exception as error:
            _expect_clear(error, ConfigError)
            assert str(path) in str(error)
        else:
            assert catalog.models, "a catalog that loads has models"


@FUZZ
@given(
    raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    suffix=st.sampled_from(sorted(_WRITERS)),
)
def test_raw_catalog_files(raw: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"models{suffix}"
        path.write_bytes(raw)
        try:
            Catalog.from_file(path)
        except Exception as error:
            _expect_clear(error, ConfigError)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


@st.composite
def _pool_lines(draw: st.DrawFn) -> str:
    line = pool_line(nodes=draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(line)[1:]))
        parent = line
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(_json)
    return json.dumps(line)


@FUZZ
@given(
    lines=st.lists(_pool_lines() | st.text(max_size=60), min_size=1, max_size=3), junk=st.binary(max_size=30)
)
def test_pool_lines(lines: list[str], junk: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.jsonl"
        path.write_bytes(b"\n".join(line.encode("utf-8", "surrogatepass") for line in lines) + b"\n" + junk)
        try:
            problems = read_pool(path)
        except Exception as error:
            _expect_clear(error, PoolFormatError)
            assert str(path) in str(error) and "line" in str(error)
            return
    for problem in problems:
        try:
            workflow, catalog = pool_workflow(problem)
            workflow.validate(catalog=catalog)
        except Exception as error:
            _expect_clear(error, WorkflowError, ConfigError)


@FUZZ
@given(text=st.text(max_size=80))
def test_single_pool_lines(text: str) -> None:
    try:
        parse_pool_line(text, source="fuzz.jsonl", line_no=3)
    except Exception as error:
        _expect_clear(error, PoolFormatError)
        assert "`fuzz.jsonl` line 3" in str(error)


async def _noop(ctx: AttemptContext) -> str:
    return "ok"


_ESTIMATE = AttemptEstimate(success_prob=0.5, output_tokens=LogNormal(mean=100), latency_s=LogNormal(mean=1))
_names = st.sampled_from(["a", "b", "c", "plan", "a\n", "", "1x", "x y"]) | st.text(max_size=6) | _scalars
_models = st.sampled_from(["small", "large", "smal"]) | _scalars


@st.composite
def _subtask_calls(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["llm", "function", "junk"]))
    agent: Any = (
        ("llm", draw(st.text(max_size=20) | st.sampled_from(["{a}", "{b:d}", "{x!z}", "{plan} {issue}"])))
        if kind == "llm"
        else FunctionAgent(_noop)
        if kind == "function"
        else draw(_scalars)
    )
    return {
        "name": draw(_names),
        "agent": agent,
        "models": draw(st.lists(_models, max_size=3) | _scalars),
        "after": draw(st.lists(_names, max_size=3) | _scalars),
        "estimates": draw(
            st.none() | st.dictionaries(_models, st.just(_ESTIMATE) | _scalars, max_size=2) | _scalars
        ),
        "max_attempts": draw(st.none() | _scalars),
        "max_tokens": draw(st.none() | st.integers(-2, 5)),
        "max_errors": draw(st.integers(-1, 4) | st.sampled_from([True, 2.5])),
    }


@FUZZ
@given(
    name=_names,
    declared=st.none() | st.lists(st.sampled_from(["issue", "topic"]), max_size=2) | _scalars,
    calls=st.lists(_subtask_calls(), max_size=6),
    inputs=st.none()
    | st.dictionaries(st.sampled_from(["issue", "topic", "a"]), st.text(max_size=4), max_size=2),
)
def test_workflow_definitions(
    name: Any, declared: Any, calls: list[dict[str, Any]], inputs: dict[str, str] | None
) -> None:
    catalog = Catalog.of(
        ModelSpec(
            name="small",
            litellm_model="budgetflow-sim/small",
            input_price_per_mtok=1,
            output_price_per_mtok=1,
        ),
        ModelSpec(
            name="large",
            litellm_model="budgetflow-sim/large",
            input_price_per_mtok=2,
            output_price_per_mtok=2,
        ),
    )
    try:
        workflow = Workflow(name, inputs=declared)
    except Exception as error:
        _expect_clear(error, WorkflowError)
        return
    for call in calls:
        try:
            agent = call.pop("agent")
            if isinstance(agent, tuple):
                agent = LLMAgent(prompt=agent[1])
            workflow.subtask(call.pop("name"), agent, **call)
        except Exception as error:
            _expect_clear(error, WorkflowError)
    try:
        workflow.validate(catalog=catalog, inputs=inputs)
        workflow.topological_order()
    except Exception as error:
        _expect_clear(error, WorkflowError, ConfigError)
