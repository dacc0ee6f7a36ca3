"""Money saved against running every subtask on its strongest model: an estimate from the priors.

For each registered workflow, the baseline is what one run would cost, by the workflow's
own estimates, if every subtask ran on its strongest model (highest estimated success;
the pricier on a tie) until an attempt passed: expected attempts `(1 - (1 - p)^m) / p`
(`m` its attempt limit, unbounded if none), each costing the estimated prompt and mean
output tokens at the catalog's prices. The saving is the baseline times the completed
runs, less what they spent. Runs of workflows this server does not register are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from orchestrator.estimates import AttemptEstimate
from orchestrator.ledger import nano_to_usd
from web.api.registry import RegisteredWorkflow, WorkflowRegistry

__all__ = ["Saving", "baseline_usd", "saving_estimate"]


@dataclass(frozen=True, kw_only=True)
class Saving:
    """The estimate over the window."""

    runs: int
    """Completed runs counted."""
    spent_usd: Decimal
    """What they spent."""
    baseline_usd: Decimal
    """What they would have cost on the strongest models, estimated."""

    @property
    def saved_usd(self) -> Decimal:
        """Baseline less spent (negative: the strongest models would have been cheaper)."""
        return self.baseline_usd - self.spent_usd

    @property
    def saved_share(self) -> float | None:
        """Saved over baseline."""
        return float(self.saved_usd / self.baseline_usd) if self.baseline_usd > 0 else None


def _expected_attempts(p: float, limit: int | None) -> float:
    if p <= 0:
        return float(limit) if limit is not None else 1.0
    if limit is None:
        return 1.0 / p
    return (1.0 - (1.0 - p) ** limit) / p


def baseline_usd(registered: RegisteredWorkflow) -> Decimal:
    """One run's estimated cost with every subtask on its strongest model."""
    total_nano = 0.0
    for subtask in registered.workflow.subtasks.values():
        priced: list[tuple[float, int, AttemptEstimate, str]] = []
        for name, estimate in subtask.estimates.items():
            if name not in registered.catalog:
                continue
            spec = registered.catalog.get(name)
            priced.append((estimate.success_prob, spec.output_nano_per_token(), estimate, name))
        if not priced:
            continue
        _, _, estimate, name = max(priced, key=lambda item: (item[0], item[1]))
        spec = registered.catalog.get(name)
        one = spec.cost_nano(
            input_tokens=estimate.input_tokens, output_tokens=round(estimate.mean_output_tokens())
        )
        total_nano += one * _expected_attempts(estimate.success_prob, subtask.max_attempts)
    return nano_to_usd(round(total_nano))


def saving_estimate(completed: Mapping[str, tuple[int, Decimal]], workflows: WorkflowRegistry) -> Saving:
    """The saving of the completed runs (`workflow -> (runs, spent)`) of registered workflows."""
    runs, spent, baseline = 0, Decimal(0), Decimal(0)
    for registered in workflows:
        count, cost = completed.get(registered.name, (0, Decimal(0)))
        if not count:
            continue
        runs += count
        spent += cost
        baseline += baseline_usd(registered) * count
    return Saving(runs=runs, spent_usd=spent, baseline_usd=baseline)
