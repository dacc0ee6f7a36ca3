"""The money of the runs in progress, summed by workflow at scrape time.

Each run's latest ledger view (carried by every event) replaces the previous one, and a
run leaves the table when it finishes, so the sums are exact (`Decimal`) and drop back to
zero when the runs end, however many runs came and went. A workflow once seen keeps its
series at zero while none of its runs is in progress.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from orchestrator.events import LedgerView
from web._spec import MetricSpec

__all__ = ["RunsInProgress"]


class RunsInProgress(Collector):
    """Runs in progress, their budgets, spend and reservations, by workflow."""

    def __init__(self, specs: Mapping[str, MetricSpec]) -> None:
        """Args:
        specs: the metric table by name (`web.metrics.METRICS`).
        """
        self._specs = specs
        self._runs: dict[str, tuple[str, LedgerView]] = {}
        self._workflows: set[str] = set()

    def start(self, run_id: str, workflow: str, ledger: LedgerView) -> None:
        """A run began."""
        self._workflows.add(workflow)
        self._runs[run_id] = (workflow, ledger)

    def update(self, run_id: str, ledger: LedgerView) -> None:
        """A run's money changed (ignored for a run not in progress)."""
        entry = self._runs.get(run_id)
        if entry is not None:
            self._runs[run_id] = (entry[0], ledger)

    def finish(self, run_id: str) -> None:
        """A run ended: it no longer counts."""
        self._runs.pop(run_id, None)

    def collect(self) -> Iterable[Metric]:
        """The families (called by the registry at scrape time)."""
        runs = {w: 0 for w in self._workflows}
        budget = {w: Decimal(0) for w in self._workflows}
        spent = dict(budget)
        reserved = dict(budget)
        for workflow, view in list(self._runs.values()):
            runs[workflow] += 1
            budget[workflow] += view.budget_usd
            spent[workflow] += view.spent_usd
            reserved[workflow] += view.reserved_usd
        families = []
        for name, values in (
            ("budgetflow_runs_in_progress", runs),
            ("budgetflow_runs_in_progress_budget_usd", budget),
            ("budgetflow_runs_in_progress_spent_usd", spent),
            ("budgetflow_runs_in_progress_reserved_usd", reserved),
        ):
            family = self._specs[name].gauge_family()
            for workflow in sorted(values):
                family.add_metric([workflow], float(values[workflow]))
            families.append(family)
        return families
