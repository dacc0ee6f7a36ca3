"""The DAG-pool JSONL format of the MCPP reference code: read, write, and turn into workflows.

One DAG per line. Each node has `node_id`, `parents`, `children`, `layer`,
per-model summary statistics in `model_templates` and per-model empirical
rollouts in `empirical_samples_by_model` (`latency` seconds, `success` 0/1,
`cost` = output tokens). Prices are USD per million *output* tokens, from the
line's `output_price_per_1m_tokens`, else `DEFAULT_PRICES_PER_MTOK`.

```python
problems = read_pool("pool_dev.jsonl")
workflow, catalog = pool_workflow(problems[0])
```

`write_pool` writes the fields this module reads, so `read_pool(write_pool(x)) == x`.
Fields the reader does not use (`infer_latency_sec`, `pass_rate`, ...) are dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from orchestrator.catalog import SIMULATED_PREFIX, Catalog, ModelSpec
from orchestrator.errors import PoolFormatError
from orchestrator.estimates import AttemptEstimate, EmpiricalSample
from orchestrator.workflow import Workflow

__all__ = [
    "DEFAULT_PRICES_PER_MTOK",
    "ModelTemplate",
    "PoolNode",
    "PoolProblem",
    "PoolSample",
    "parse_pool_line",
    "pool_workflow",
    "problem_to_json",
    "read_pool",
    "subtask_name",
    "write_pool",
]

DEFAULT_PRICES_PER_MTOK: Mapping[str, float] = {
    "30B_ins": 0.8,
    "30B_think": 2.4,
    "4B_ins": 0.42,
    "4B_think": 1.26,
    "goedel32b": 2.8,
    "goedel8b": 0.7,
    "kimina7b": 0.5,
}
"""USD per million output tokens for the models of the reference pools."""


@dataclass(frozen=True, kw_only=True)
class PoolSample:
    """One recorded attempt of a node on a model."""

    latency_s: float
    """Wall time of the attempt, seconds."""
    success: bool
    """Whether it passed."""
    output_tokens: int
    """Output tokens (the pool's `cost`)."""


@dataclass(frozen=True, kw_only=True)
class ModelTemplate:
    """Summary statistics of a node on a model (`model_templates`)."""

    success_prob: float
    """Fraction of successful attempts."""
    lat_mean: float
    """Mean latency, seconds."""
    lat_std: float
    """Latency standard deviation, seconds."""
    cost_mean: float
    """Mean output tokens."""


@dataclass(frozen=True, kw_only=True)
class PoolNode:
    """One subtask of a pool DAG."""

    node_id: int
    """Id, unique within the DAG."""
    name: str
    """The pool's name for the node (e.g. `subproblem_0`)."""
    parents: tuple[int, ...]
    """Ids of the nodes this one needs."""
    children: tuple[int, ...]
    """Ids of the nodes that need this one."""
    layer: int
    """Depth in the layered DAG."""
    templates: Mapping[str, ModelTemplate]
    """Summary statistics per model."""
    samples: Mapping[str, tuple[PoolSample, ...]]
    """Empirical attempts per model (every model listed has at least one)."""


@dataclass(frozen=True, kw_only=True)
class PoolProblem:
    """One DAG of a pool."""

    problem_id: str
    """Identifier of the DAG."""
    model_ids: tuple[str, ...]
    """Models of the pool, in the line's order."""
    prices_per_mtok: Mapping[str, float]
    """USD per million output tokens, per model."""
    nodes: tuple[PoolNode, ...]
    """Nodes in increasing `node_id`."""
    dag_kind: str = ""
    """The generator's label for the DAG shape."""
    baseline_model: str = ""
    """The pool's reference model."""


def subtask_name(node_id: int) -> str:
    """Name of the workflow subtask for a pool node (`n0`, `n1`, ...)."""
    return f"n{node_id}"


def _fail(source: str, line_no: int, field: str, problem: str) -> PoolFormatError:
    return PoolFormatError(f"`{source}` line {line_no}: field `{field}` {problem}")


_MAX_TOKENS = 10_000_000
"""Most output tokens one recorded attempt may have (far above any context window)."""
_MAX_SECONDS = 1_000_000.0
"""Longest latency one recorded attempt may have (eleven days)."""
_MAX_PRICE = 1_000_000.0
"""Highest price per million tokens a pool may give."""
_MAX_NUMBER = 1e12
"""Bound on the summary statistics, which only need to be finite in float arithmetic."""


def _number(
    value: object,
    source: str,
    line_no: int,
    field: str,
    *,
    minimum: float = 0.0,
    maximum: float = _MAX_NUMBER,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, line_no, field, f"must be a number, got {_preview(value)}; fix or drop the line")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond float range
        out = math.inf
    if not math.isfinite(out) or not minimum <= out <= maximum:
        raise _fail(
            source,
            line_no,
            field,
            f"must be a finite number from {minimum:g} to {maximum:g}, got {_preview(value)}",
        )
    return out


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _model_id(value: object, source: str, line_no: int, field: str) -> str:
    if not isinstance(value, str) or not value or any(ch.isspace() or not ch.isprintable() for ch in value):
        raise _fail(
            source,
            line_no,
            field,
            f"must be a model id without white space (e.g. `4B_ins`), got {_preview(value)}",
        )
    return value


def _get(obj: Mapping[str, Any], key: str, source: str, line_no: int, where: str) -> Any:
    if key not in obj:
        raise _fail(source, line_no, f"{where}{key}", "is missing; every DAG line needs it")
    return obj[key]


def _ids(value: object, source: str, line_no: int, field: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise _fail(source, line_no, field, f"must be a list of node ids, got {_preview(value)}")
    return tuple(value)


def _parse_sample(raw: object, source: str, line_no: int, field: str) -> PoolSample:
    if not isinstance(raw, dict):
        raise _fail(source, line_no, field, f"must be an object, got {_preview(raw)}")
    success = _get(raw, "success", source, line_no, f"{field}.")
    if not isinstance(success, int | bool) or success not in (0, 1):
        raise _fail(source, line_no, f"{field}.success", f"must be 0 or 1, got {_preview(success)}")
    cost_key = "cost" if "cost" in raw else "token_cost"
    return PoolSample(
        latency_s=_number(
            _get(raw, "latency", source, line_no, f"{field}."),
            source,
            line_no,
            f"{field}.latency",
            maximum=_MAX_SECONDS,
        ),
        success=bool(success),
        output_tokens=int(
            _number(
                _get(raw, cost_key, source, line_no, f"{field}."),
                source,
                line_no,
                f"{field}.{cost_key}",
                maximum=_MAX_TOKENS,
            )
        ),
    )


def _parse_node(raw: object, source: str, line_no: int, index: int, prices: Mapping[str, float]) -> PoolNode:
    where = f"nodes[{index}]"
    if not isinstance(raw, dict):
        raise _fail(source, line_no, where, f"must be an object, got {type(raw).__name__}")
    node_id = _get(raw, "node_id", source, line_no, f"{where}.")
    if not isinstance(node_id, int) or isinstance(node_id, bool) or node_id < 0:
        raise _fail(
            source, line_no, f"{where}.node_id", f"must be a non-negative integer, got {_preview(node_id)}"
        )
    by_model = _get(raw, "empirical_samples_by_model", source, line_no, f"{where}.")
    if not isinstance(by_model, dict) or not by_model:
        raise _fail(
            source, line_no, f"{where}.empirical_samples_by_model", "must map at least one model to samples"
        )
    samples: dict[str, tuple[PoolSample, ...]] = {}
    for model, rows in by_model.items():
        field = f"{where}.empirical_samples_by_model.{model}"
        _model_id(model, source, line_no, f"{where}.empirical_samples_by_model")
        if model not in prices:
            raise _fail(
                source,
                line_no,
                field,
                f"names model `{model}`, which has no price; add it to `output_price_per_1m_tokens`",
            )
        if not isinstance(rows, list) or not rows:
            raise _fail(source, line_no, field, "must be a non-empty list of samples")
        samples[model] = tuple(_parse_sample(r, source, line_no, f"{field}[{j}]") for j, r in enumerate(rows))
    templates: dict[str, ModelTemplate] = {}
    raw_templates = raw.get("model_templates", {})
    if not isinstance(raw_templates, dict):
        raise _fail(source, line_no, f"{where}.model_templates", "must be an object keyed by model")
    for model, t in raw_templates.items():
        field = f"{where}.model_templates.{model}"
        if not isinstance(t, dict):
            raise _fail(source, line_no, field, "must be an object")
        templates[model] = ModelTemplate(
            success_prob=_number(
                _get(t, "success_prob", source, line_no, f"{field}."),
                source,
                line_no,
                f"{field}.success_prob",
                maximum=1.0,
            ),
            lat_mean=_number(t.get("lat_mean", 0.0), source, line_no, f"{field}.lat_mean"),
            lat_std=_number(t.get("lat_std", 0.0), source, line_no, f"{field}.lat_std"),
            cost_mean=_number(t.get("cost_mean", 0.0), source, line_no, f"{field}.cost_mean"),
        )
    layer = raw.get("layer", 0)
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise _fail(source, line_no, f"{where}.layer", f"must be an integer, got {_preview(layer)}")
    name = raw.get("name", subtask_name(node_id))
    return PoolNode(
        node_id=node_id,
        name=str(name),
        parents=_ids(_get(raw, "parents", source, line_no, f"{where}."), source, line_no, f"{where}.parents"),
        children=_ids(raw.get("children", []), source, line_no, f"{where}.children"),
        layer=layer,
        templates=templates,
        samples=samples,
    )


def parse_pool_line(text: str, *, source: str = "<pool>", line_no: int = 1) -> PoolProblem:
    """Parse one JSONL line into a `PoolProblem`.

    Raises:
        PoolFormatError: naming `source`, `line_no` and the offending field.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PoolFormatError(
            f"`{source}` line {line_no}: not valid JSON ({exc.msg} at column {exc.colno}); fix or drop"
            " the line"
        ) from None
    except RecursionError:
        raise PoolFormatError(
            f"`{source}` line {line_no}: nests too deeply to be a DAG; fix or drop the line"
        ) from None
    except ValueError as exc:  # an integer with thousands of digits
        raise PoolFormatError(
            f"`{source}` line {line_no}: holds a number JSON cannot read here ({str(exc).split(';')[0]});"
            " fix or drop the line"
        ) from None
    if not isinstance(data, dict):
        raise _fail(source, line_no, "<line>", "must be a JSON object describing one DAG")
    raw_prices = data.get("output_price_per_1m_tokens", {})
    if not isinstance(raw_prices, dict):
        raise _fail(source, line_no, "output_price_per_1m_tokens", "must map model ids to USD per 1M tokens")
    prices = dict(DEFAULT_PRICES_PER_MTOK)
    for model, price in raw_prices.items():
        _model_id(model, source, line_no, "output_price_per_1m_tokens")
        prices[model] = _number(
            price, source, line_no, f"output_price_per_1m_tokens.{model}", maximum=_MAX_PRICE
        )
    raw_nodes = _get(data, "nodes", source, line_no, "")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise _fail(source, line_no, "nodes", "must be a non-empty list")
    nodes = sorted(
        (_parse_node(n, source, line_no, i, prices) for i, n in enumerate(raw_nodes)), key=lambda n: n.node_id
    )
    ids = {n.node_id for n in nodes}
    if len(ids) != len(nodes):
        raise _fail(source, line_no, "nodes", "has duplicate `node_id`s; give each node a unique id")
    for i, node in enumerate(nodes):
        for parent in node.parents:
            if parent not in ids:
                raise _fail(
                    source, line_no, f"nodes[{i}].parents", f"names node {parent}, which is not in this DAG"
                )
            if parent == node.node_id:
                raise _fail(source, line_no, f"nodes[{i}].parents", f"names node {parent} itself")
        if len(set(node.parents)) != len(node.parents):
            raise _fail(source, line_no, f"nodes[{i}].parents", "names a node twice")
    cycle = _cycle_member(nodes)
    if cycle is not None:
        raise _fail(
            source,
            line_no,
            "nodes",
            f"form a cycle through node {cycle}; a DAG line needs parents before children",
        )
    model_ids_raw = data.get("model_ids")
    if model_ids_raw is None:
        model_ids_raw = sorted({m for n in nodes for m in n.samples})
    if not isinstance(model_ids_raw, list):
        raise _fail(
            source, line_no, "model_ids", f"must be a list of model names, got {_preview(model_ids_raw)}"
        )
    for j, model in enumerate(model_ids_raw):
        _model_id(model, source, line_no, f"model_ids[{j}]")
    if len(set(model_ids_raw)) != len(model_ids_raw):
        raise _fail(source, line_no, "model_ids", "names a model twice")
    used = {m for n in nodes for m in n.samples}
    model_ids = tuple(model_ids_raw) + tuple(sorted(used - set(model_ids_raw)))
    problem_id = data.get("problem_id", f"line{line_no}")
    if isinstance(problem_id, int) and not isinstance(problem_id, bool):
        problem_id = str(problem_id)
    if not isinstance(problem_id, str) or not problem_id.strip() or not problem_id.isprintable():
        raise _fail(
            source, line_no, "problem_id", f"must be a non-empty name on one line, got {_preview(problem_id)}"
        )
    return PoolProblem(
        problem_id=problem_id,
        model_ids=model_ids,
        prices_per_mtok={m: prices[m] for m in model_ids if m in prices},
        nodes=tuple(nodes),
        dag_kind=str(data.get("dag_kind", "")),
        baseline_model=str(data.get("baseline_model", "")),
    )


def _cycle_member(nodes: list[PoolNode]) -> int | None:
    """A node on a cycle of `parents` edges, or `None` for a DAG (Kahn's algorithm)."""
    waiting = {n.node_id: len(n.parents) for n in nodes}
    children: dict[int, list[int]] = {n.node_id: [] for n in nodes}
    for n in nodes:
        for parent in n.parents:
            children[parent].append(n.node_id)
    ready = [node_id for node_id, count in waiting.items() if count == 0]
    while ready:
        for child in children[ready.pop()]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    left = [node_id for node_id, count in waiting.items() if count > 0]
    return min(left) if left else None


def read_pool(path: str | Path) -> list[PoolProblem]:
    """Read every DAG of a pool file (blank lines are skipped).

    Raises:
        PoolFormatError: the file is missing or a line is malformed.
    """
    file = Path(path)
    if not file.is_file():
        raise PoolFormatError(f"pool file `{file}` does not exist; check the path")
    problems = []
    with file.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise PoolFormatError(
                    f"`{file}` line {line_no}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column"
                    f" {exc.start + 1}); save the file as UTF-8 or drop the line"
                ) from None
            if line.strip():
                problems.append(parse_pool_line(line, source=str(file), line_no=line_no))
    if not problems:
        raise PoolFormatError(f"pool file `{file}` has no DAG lines")
    return problems


def problem_to_json(problem: PoolProblem) -> dict[str, Any]:
    """The JSON object of one line (the inverse of `parse_pool_line`)."""
    return {
        "problem_id": problem.problem_id,
        "dag_kind": problem.dag_kind,
        "baseline_model": problem.baseline_model,
        "n_nodes": len(problem.nodes),
        "model_ids": list(problem.model_ids),
        "output_price_per_1m_tokens": dict(problem.prices_per_mtok),
        "nodes": [
            {
                "node_id": n.node_id,
                "name": n.name,
                "parents": list(n.parents),
                "children": list(n.children),
                "layer": n.layer,
                "model_templates": {
                    m: {
                        "success_prob": t.success_prob,
                        "lat_mean": t.lat_mean,
                        "lat_std": t.lat_std,
                        "cost_mean": t.cost_mean,
                    }
                    for m, t in n.templates.items()
                },
                "empirical_samples_by_model": {
                    m: [
                        {"latency": s.latency_s, "success": int(s.success), "cost": s.output_tokens}
                        for s in rows
                    ]
                    for m, rows in n.samples.items()
                },
            }
            for n in problem.nodes
        ],
    }


def write_pool(path: str | Path, problems: Iterable[PoolProblem]) -> None:
    """Write problems as JSONL, one DAG a line."""
    with Path(path).open("w", encoding="utf-8") as fh:
        for problem in problems:
            fh.write(json.dumps(problem_to_json(problem), separators=(",", ":")) + "\n")


def pool_workflow(problem: PoolProblem) -> tuple[Workflow, Catalog]:
    """A workflow (`n<id>` subtasks, one `LLMAgent` call each) and its simulated catalog.

    Each subtask may use the models that have samples for its node, in the pool's
    model order; its estimates resample those samples jointly (input tokens 0: pool
    prices are output-only). Models are `budgetflow-sim/<id>` with input price 0.
    """
    from agents.llm import LLMAgent  # agents depend on the orchestrator, not on policies

    wf = Workflow(problem.problem_id)
    for node in problem.nodes:
        models = [m for m in problem.model_ids if m in node.samples]
        wf.subtask(
            subtask_name(node.node_id),
            LLMAgent(prompt=_literal(f"Solve `{node.name}` of `{problem.problem_id}`.")),
            after=[subtask_name(p) for p in node.parents],
            models=models,
            estimates={
                m: AttemptEstimate.from_samples(
                    [
                        EmpiricalSample(
                            success=s.success, output_tokens=s.output_tokens, latency_s=s.latency_s
                        )
                        for s in node.samples[m]
                    ],
                    input_tokens=0,
                )
                for m in models
            },
        )
    used = [m for m in problem.model_ids if any(m in n.samples for n in problem.nodes)]
    catalog = Catalog.of(
        *(
            ModelSpec(
                name=m,
                litellm_model=f"{SIMULATED_PREFIX}{m}",
                input_price_per_mtok=Decimal(0),
                output_price_per_mtok=Decimal(str(problem.prices_per_mtok[m])),
            )
            for m in used
        )
    )
    return wf, catalog


def _literal(text: str) -> str:
    """`text` as a template that renders to itself (a node name may hold braces)."""
    return text.replace("{", "{{").replace("}", "}}")
