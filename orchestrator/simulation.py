"""Whole runs on virtual time: the real executor, the simulated backend, no waiting.

The planner benchmark and the simulator-vs-executor tests use this, so that
what they measure is what production does, only faster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from orchestrator._estimate_book import EstimateBook
from orchestrator.belief_updates import InRunUpdate
from orchestrator.catalog import Catalog
from orchestrator.estimator import Estimator
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
    difficulty: float = 0.0,
    update_in_run: bool | InRunUpdate = True,
    estimator: Estimator | None = None,
    record_content: bool = False,
    observers: Sequence[Observer] = (),
) -> RunResult:
    """Run `workflow` once on virtual time with the seeded simulated backend.

    Common random numbers: the n-th call of a (subtask, model) sees the same draw for
    the same `seed`, whatever the policy, so policies compared on one seed face the same luck.

    The backend draws from the workflow's priors (the truth of the simulation); the run's
    planner believes what `estimator` says, where it says something, and updates its beliefs
    within the run unless `update_in_run` is `False` (see `arun`). `difficulty` is the σ of
    the per-input latent difficulty that makes one input's attempts fail together
    (`orchestrator.simulated`; 0, the default, draws every attempt independently).
    """
    estimates = EstimateBook.build(workflow, catalog)
    backend = SimulatedBackend(estimates.table, seed=seed, error_rate=error_rate, difficulty=difficulty)
    client = SimulatedClient(backend)
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
            estimator=estimator,
            update_in_run=update_in_run,
        )
    )
