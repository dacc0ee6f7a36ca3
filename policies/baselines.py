"""Simple closed-loop baselines: one rule for every ready subtask, replanned at each event."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.plan import Allocation, Assignment, PlanState

__all__ = ["AlwaysCheapest", "AlwaysStrongest", "FixedModel"]


def _price_key(state: PlanState, subtask: str, model: str) -> float:
    return state.expected_attempt_cost(subtask, model)


def _cheapest(state: PlanState, subtask: str) -> str:
    return min(state.dag.models[subtask], key=lambda m: _price_key(state, subtask, m))


@dataclass(kw_only=True)
class AlwaysCheapest:
    """Every ready subtask gets its cheapest model (by expected attempt cost), k samples."""

    samples: int = 1
    """Parallel samples per subtask."""
    name: str = "always_cheapest"
    """Policy name."""

    def decide(self, state: PlanState) -> Allocation:
        """Cheapest model for each ready subtask."""
        return Allocation(
            assignments={s: Assignment(model=_cheapest(state, s), samples=self.samples) for s in state.ready}
        )


@dataclass(kw_only=True)
class AlwaysStrongest:
    """Every ready subtask gets its model with the highest estimated success (ties: cheaper)."""

    samples: int = 1
    """Parallel samples per subtask."""
    name: str = "always_strongest"
    """Policy name."""

    def decide(self, state: PlanState) -> Allocation:
        """Most reliable model for each ready subtask."""

        def best(s: str) -> str:
            return max(
                state.dag.models[s],
                key=lambda m: (state.estimates[(s, m)].success_prob, -_price_key(state, s, m)),
            )

        return Allocation(
            assignments={s: Assignment(model=best(s), samples=self.samples) for s in state.ready}
        )


@dataclass(kw_only=True)
class FixedModel:
    """`sequential_k`: every ready subtask gets model `model` with `samples` samples, retried on failure.

    A subtask that cannot use `model` falls back to its first listed model.
    """

    model: str
    """Model for every subtask."""
    samples: int = 1
    """Parallel samples per subtask."""
    name: str = "fixed"
    """Policy name."""

    def decide(self, state: PlanState) -> Allocation:
        """The fixed (model, k) for each ready subtask."""
        return Allocation(
            assignments={
                s: Assignment(
                    model=self.model if self.model in state.dag.models[s] else state.dag.models[s][0],
                    samples=self.samples,
                )
                for s in state.ready
            }
        )
