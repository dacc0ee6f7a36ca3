"""`CheapestWhen`: a policy that plans with each subtask's cheapest model only, while a signal says so.

A shared budget set to `downgrade` (`storage.shared_budgets`) turns the signal on once its
spend passes its point: from the next decision on, the runs under it see a workflow
whose subtasks each have one model, their cheapest by expected attempt cost, and the
wrapped policy plans on that (how many samples, which `max_tokens`) as usual.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from orchestrator.plan import Allocation, DagView, PlanState, Policy

__all__ = ["CheapestWhen"]


class CheapestWhen:
    """Wraps a policy; while `active()` is true, each subtask may only use its cheapest model."""

    def __init__(self, policy: Policy, active: Callable[[], bool]) -> None:
        """Args:
        policy: the policy that decides.
        active: asked at every decision (no I/O: it reads what the ledger last saw).
        """
        self.inner = policy
        """The wrapped policy."""
        self.name = policy.name
        """The wrapped policy's name (decisions are its decisions)."""
        self.offload = bool(getattr(policy, "offload", False))
        """Decide on a worker thread when the wrapped policy does."""
        self._active = active
        self._restricted: tuple[DagView, DagView] | None = None
        """The last DAG restricted, and its restriction (kept, so a policy caching by DAG keeps it)."""

    def decide(self, state: PlanState) -> Allocation:
        """The wrapped policy's decision, on the cheapest models only while active."""
        if not self._active():
            return self.inner.decide(state)
        return self.inner.decide(dataclasses.replace(state, dag=self._cheapest(state)))

    def _cheapest(self, state: PlanState) -> DagView:
        if self._restricted is not None and self._restricted[0] is state.dag:
            return self._restricted[1]
        dag = state.dag
        models: dict[str, tuple[str, ...]] = {}
        for name, options in dag.models.items():
            costs = {model: state.expected_attempt_cost(name, model) for model in options}
            models[name] = (min(options, key=costs.__getitem__),) if options else ()
        restricted = DagView(subtasks=dag.subtasks, parents=dag.parents, models=models)
        self._restricted = (dag, restricted)
        return restricted
