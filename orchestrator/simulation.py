"""Whole runs on virtual time: the real executor, the simulated backend, no waiting.

The planner benchmark and the simulator-vs-executor tests use this, so that
what they measure is what production does, only faster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from orchestrator._estimate_book import EstimateBook
from orchestrator.catalog import Catalog
from orchestrator.events import Observer
from orchestrator.plan import Policy
from orchestrator.run import RunResult, arun
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.virtual_time import run_virtual
from orchestrator.workflow import Workflow

__all__ = ["simulate"]


def simulate(
    workflow: Workflow,
    *,
    catalog: Catalog,
    policy: Policy,
    budget_usd: Decimal | float | str,
    deadline_s: float | None,
    seed: int = 0,
    inputs: Mapping[str, Any] | None = None,
    error_rate: float = 0.0,
    record_content: bool = False,
    observers: Sequence[Observer] = (),
) -> RunResult:
    """Run `workflow` once on virtual time with the seeded simulated backend.

    Common random numbers: the n-th call of a (subtask, model) sees the same draw for
    the same `seed`, whatever the policy, so policies compared on one seed face the same luck.
    """
    estimates = EstimateBook.build(workflow, catalog)
    client = SimulatedClient(SimulatedBackend(estimates.table, seed=seed, error_rate=error_rate))
    return run_virtual(
        arun(
            workflow,
            catalog=catalog,
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            policy=policy,
            seed=seed,
            inputs=inputs,
            client=client,
            record_content=record_content,
            observers=observers,
        )
    )
