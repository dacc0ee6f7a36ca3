"""Simple closed-loop baselines: one rule for every ready subtask, replanned at each event.

Each answer goes through `policies.feasibility.repair`: at most `MAX_SAMPLES` samples,
max_tokens under the subtask's ceiling, and only what the budget left can hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.plan import Allocation, Assignment, PlanState
from policies.feasibility import check_samples, default_cap, repair

__all__ = ["AlwaysCheapest", "AlwaysStrongest", "FixedModel"]


def _price_key(state: PlanState, subtask: str, model: str) -> float:
    return state.expected_attempt_cost(subtask, model)


def _cheapest(state: PlanState, subtask: str) -> str:
    return min(state.dag.models[subtask], key=lambda m: _price_key(state, subtask, m))


def _answer(state: PlanState, models: dict[str, str], samples: int) -> Allocation:
    wanted = {
        s: Assignment(model=m, samples=samples, max_tokens=default_cap(state, s, m))
        for s, m in models.items()
    }
    return Allocation(assignments=repair(state, wanted))


@dataclass(kw_only=True)
class AlwaysCheapest:
    """Every ready subtask gets its cheapest model (by expected attempt cost), k samples."""

    samples: int = 1
    """Parallel samples per subtask."""
    name: str = "always_cheapest"
    """Policy name."""

    def __post_init__(self) -> None:
        check_samples(self.name, self.samples)

    def decide(self, state: PlanState) -> Allocation:
        """Cheapest model for each ready subtask."""
        return _answer(state, {s: _cheapest(state, s) for s in state.ready}, self.samples)


@dataclass(kw_only=True)
class AlwaysStrongest:
    """Every ready subtask gets its model with the highest estimated success (ties: cheaper)."""

    samples: int = 1
    """Parallel samples per subtask."""
    name: str = "always_strongest"
    """Policy name."""

    def __post_init__(self) -> None:
        check_samples(self.name, self.samples)

    def decide(self, state: PlanState) -> Allocation:
        """Most reliable model for each ready subtask."""

        def best(s: str) -> str:
            return max(
                state.dag.models[s],
                key=lambda m: (state.estimates[(s, m)].success_prob, -_price_key(state, s, m)),
            )

        return _answer(state, {s: best(s) for s in state.ready}, self.samples)


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

    def __post_init__(self) -> None:
        check_samples(self.name, self.samples)

    def decide(self, state: PlanState) -> Allocation:
        """The fixed (model, k) for each ready subtask."""
        return _answer(
            state,
            {
                s: self.model if self.model in state.dag.models[s] else state.dag.models[s][0]
                for s in state.ready
            },
            self.samples,
        )
