"""A two-step workflow on a local vLLM model (`local`), with `mini` as the hosted alternative.

    budgetflow run examples/local_model.py
    BUDGETFLOW_VLLM_URL=http://127.0.0.1:8000/v1 budgetflow run examples/local_model.py

`local` is `hosted_vllm/local`: a server started with `--served-model-name local`
(compose.yaml's `vllm-cpu` or `vllm-gpu` service). With `LOCAL_MODEL_REPLICAS` (base
URLs, comma-separated; the stack sets it) it is a vLLM pool of those replicas, routed for
prefix-cache hits (docs/vllm_pool.md); with only `BUDGETFLOW_VLLM_URL` its calls go to that
one server; without either the simulated backend serves it under the same name and
prices, as for a hosted model without a key. The checks only ask for some text: the CPU
profile's model has random weights, and this workflow is about the plumbing (routing,
budget, recorded calls), not about the answers.
"""

from __future__ import annotations

import os

from budgetflow import (
    AttemptEstimate,
    Catalog,
    LatencyProfile,
    LLMAgent,
    ModelSpec,
    PoolSpec,
    Workflow,
    checks,
)
from examples._models import catalog as hosted
from examples._models import estimate

__all__ = ["budget_usd", "catalog", "deadline_s", "inputs", "workflow"]

_REPLICAS = tuple(url.strip() for url in os.environ.get("LOCAL_MODEL_REPLICAS", "").split(",") if url.strip())

catalog = Catalog.of(
    ModelSpec(
        name="local",
        litellm_model="hosted_vllm/local",
        pool="local" if _REPLICAS else None,
        # litellm has no prices for a local model: what its hardware costs per token.
        input_price_per_mtok="0.02",
        output_price_per_mtok="0.05",
        context_window=4096,  # the services' `--max-model-len`
        latency=LatencyProfile(ttft_s=0.2, tokens_per_s=50),
        tier="cheap",
    ),
    hosted.get("mini"),
    pools=(PoolSpec(name="local", served_model="local", replicas=_REPLICAS),) if _REPLICAS else (),
)


def _est(p: float, tokens: float, seconds: float) -> AttemptEstimate:
    return estimate(p, tokens, seconds, spread=0.3, input_tokens=80)


def _has_text(output: str) -> bool:
    return bool(output.strip())


workflow = Workflow("local-model", inputs=["topic"])

outline = workflow.subtask(
    "outline",
    LLMAgent(system="You write short outlines.", prompt="Outline a note about {topic} in three points."),
    models=["local", "mini"],
    check=checks.python(_has_text),
    estimates={"local": _est(0.9, 120, 2.5), "mini": _est(0.9, 120, 2.0)},
    max_tokens=256,
)
workflow.subtask(
    "note",
    LLMAgent(prompt="Write the note from this outline:\n{outline}"),
    after=[outline],
    models=["local", "mini"],
    check=checks.python(_has_text),
    estimates={"local": _est(0.9, 300, 6.0), "mini": _est(0.9, 300, 4.0)},
    max_tokens=512,
)

inputs = {"topic": "keeping LLM workflows under a hard budget"}
budget_usd = 0.01
deadline_s = 60.0
