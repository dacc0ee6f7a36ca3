"""A chain of six subtasks on simulated models that cannot finish within a 3 s deadline.

Used by `benchmarks/bench_deadline.py` (in process and through `budgetflow run`).
"""

from decimal import Decimal

from budgetflow import AttemptEstimate, Catalog, LLMAgent, LogNormal, ModelSpec, Workflow

catalog = Catalog.of(
    ModelSpec(
        name="small",
        litellm_model="budgetflow-sim/small",
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.60"),
    ),
    ModelSpec(
        name="large",
        litellm_model="budgetflow-sim/large",
        input_price_per_mtok=Decimal("2.50"),
        output_price_per_mtok=Decimal("10.00"),
    ),
)
_est = {
    "small": AttemptEstimate(
        success_prob=0.6, output_tokens=LogNormal(mean=300, std=90), latency_s=LogNormal(mean=1.2, std=0.3)
    ),
    "large": AttemptEstimate(
        success_prob=0.9, output_tokens=LogNormal(mean=400, std=120), latency_s=LogNormal(mean=2.0, std=0.5)
    ),
}
workflow = Workflow("deadline-chain", inputs=["topic"])
previous = None
for i in range(6):
    prompt = "Begin {topic}" if previous is None else "Go on from {" + previous + "}"
    workflow.subtask(
        f"s{i}",
        LLMAgent(prompt=prompt),
        models=["small", "large"],
        after=[previous] if previous else [],
        estimates=_est,
    )
    previous = f"s{i}"
inputs = {"topic": "deadlines"}
budget_usd = Decimal("0.20")
