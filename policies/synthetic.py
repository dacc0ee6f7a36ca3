"""Seeded layered random DAGs in the pool format, for scale benchmarks and tests.

```python
problem = layered_problem(2000, seed=0)
workflow, catalog = pool_workflow(problem)
budget, deadline = layered_limits(problem, budget_factor=2.0, deadline_factor=1.5)
```

Subtasks are arranged in layers of random width (1 to `2 x width - 1`); every
subtask after the first layer depends on 1-3 subtasks of the layer above (and
sometimes one of the layer before that). Each subtask may use `models` of the
pool's four models (a seeded choice, in the pool's order), and each (subtask,
model) has `samples` recorded attempts: success with a per-pair probability,
output tokens lognormal around the model's typical length, latency in
proportion to the tokens plus an overhead. The same `(subtasks, seed, ...)`
always gives the same problem.
"""

from __future__ import annotations

import math

import numpy as np

from policies.dag_pool import DEFAULT_PRICES_PER_MTOK, ModelTemplate, PoolNode, PoolProblem, PoolSample

__all__ = ["layered_limits", "layered_problem"]

# (model, typical output tokens, seconds per 1,000 output tokens, success bonus)
_MODELS: tuple[tuple[str, float, float, float], ...] = (
    ("4B_ins", 500.0, 3.0, 0.0),
    ("30B_ins", 700.0, 4.5, 0.1),
    ("4B_think", 3000.0, 3.2, 0.15),
    ("30B_think", 3500.0, 4.0, 0.25),
)


def layered_problem(
    subtasks: int, *, seed: int, width: int = 8, models: int = 2, samples: int = 12
) -> PoolProblem:
    """A layered random DAG of `subtasks` nodes, each on `models` models with `samples` attempts each."""
    if subtasks < 1 or width < 1 or not 1 <= models <= len(_MODELS) or samples < 1:
        raise ValueError(
            f"need subtasks >= 1, width >= 1, 1 <= models <= {len(_MODELS)} and samples >= 1;"
            f" got subtasks={subtasks}, width={width}, models={models}, samples={samples}"
        )
    rng = np.random.default_rng([seed, subtasks, width, models, samples])
    layers: list[list[int]] = []
    count = 0
    while count < subtasks:
        w = min(int(rng.integers(1, 2 * width)), subtasks - count)
        layers.append(list(range(count, count + w)))
        count += w
    parents: list[tuple[int, ...]] = []
    layer_of: list[int] = []
    for depth, layer in enumerate(layers):
        for _ in layer:
            layer_of.append(depth)
            if depth == 0:
                parents.append(())
                continue
            above = layers[depth - 1]
            picked = set(rng.choice(above, size=min(len(above), int(rng.integers(1, 4))), replace=False))
            if depth >= 2 and rng.random() < 0.2:
                picked.add(int(rng.choice(layers[depth - 2])))
            parents.append(tuple(sorted(int(p) for p in picked)))
    children: list[list[int]] = [[] for _ in range(subtasks)]
    for node, ps in enumerate(parents):
        for p in ps:
            children[p].append(node)
    nodes = []
    for node in range(subtasks):
        chosen = sorted(rng.choice(len(_MODELS), size=models, replace=False))
        difficulty = float(rng.uniform(0.0, 0.5))
        by_model: dict[str, tuple[PoolSample, ...]] = {}
        templates: dict[str, ModelTemplate] = {}
        for j in chosen:
            name, tokens, s_per_k, bonus = _MODELS[j]
            p_pass = float(np.clip(0.95 - difficulty + bonus + rng.normal(0.0, 0.05), 0.05, 0.98))
            tok = np.maximum(16, rng.lognormal(np.log(tokens * (1 + difficulty)), 0.5, samples)).astype(int)
            lat = 0.5 + tok * s_per_k / 1000.0 * rng.uniform(0.8, 1.2, samples)
            ok = rng.random(samples) < p_pass
            by_model[name] = tuple(
                PoolSample(latency_s=float(lat[i]), success=bool(ok[i]), output_tokens=int(tok[i]))
                for i in range(samples)
            )
            templates[name] = ModelTemplate(
                success_prob=float(ok.mean()),
                lat_mean=float(lat.mean()),
                lat_std=float(lat.std()),
                cost_mean=float(tok.mean()),
            )
        nodes.append(
            PoolNode(
                node_id=node,
                name=f"subproblem_{node}",
                parents=parents[node],
                children=tuple(children[node]),
                layer=layer_of[node],
                templates=templates,
                samples=by_model,
            )
        )
    model_ids = tuple(m[0] for m in _MODELS)
    return PoolProblem(
        problem_id=f"layered_{subtasks}_s{seed}",
        model_ids=model_ids,
        prices_per_mtok={m: DEFAULT_PRICES_PER_MTOK[m] for m in model_ids},
        nodes=tuple(nodes),
        dag_kind="synthetic_layered",
        baseline_model="30B_ins",
    )


def layered_limits(
    problem: PoolProblem, *, budget_factor: float, deadline_factor: float
) -> tuple[float, float]:
    """A budget (USD) and a deadline (s) scaled to a problem's needs, for benchmark cells.

    Per node, take the model with the least expected output cost per success (mean tokens
    x price / success rate, from its samples); the budget is `budget_factor` x the sum of
    those costs, the deadline `deadline_factor` x the longest path of their mean latencies.
    """
    cost = 0.0
    finish: dict[int, float] = {}
    for node in problem.nodes:
        best = (math.inf, 0.0)
        for model, rows in node.samples.items():
            p = max(sum(r.success for r in rows) / len(rows), 1e-3)
            tokens = sum(r.output_tokens for r in rows) / len(rows)
            per_success = tokens * problem.prices_per_mtok[model] / 1e6 / p
            best = min(best, (per_success, sum(r.latency_s for r in rows) / len(rows)))
        cost += best[0]
        finish[node.node_id] = best[1] + max((finish[p] for p in node.parents), default=0.0)
    return budget_factor * cost, deadline_factor * max(finish.values())
