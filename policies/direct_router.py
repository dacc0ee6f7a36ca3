"""A direct router: does the cheap model suffice for this input? Then cheap, else strong.

The baseline of routers such as RouteLLM and budget-constrained routing policies: a
predictor scores each request, and a threshold on the score sends it to a cheap or a
strong model. Here the score is the planner's belief about this input, the estimated
success probability of one attempt on the cheap model (`PlanState.estimates`, which a
per-input estimator such as `storage.learned_estimator.LearnedEstimator` fills in from
the request's features).

Per ready subtask:

- **cheap** is its model with the lowest price per token, **strong** the one with the
  highest (input plus output price; ties by name);
- a first attempt goes to cheap when its estimated success is at least `threshold`,
  else to strong;
- after a failure the subtask escalates: every later attempt goes to strong (a subtask
  is ready again only when its attempts ended without a pass). A router decides once
  per request; escalation is what it does when that decision was wrong;
- one sample per attempt, `max_tokens` by the shared default rule, and `repair` keeps
  the answer within the budget left (a strong attempt that does not fit falls back to
  a cheaper model that does).

`ThresholdRouter` differs: it picks the cheapest of all models that clears its
threshold and never escalates by itself (only through in-run belief updates).
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.errors import ConfigError
from orchestrator.plan import Allocation, Assignment, PlanState
from policies.feasibility import default_cap, repair

__all__ = ["DirectRouter"]


@dataclass(kw_only=True)
class DirectRouter:
    """Cheap model when its estimated success clears `threshold`, else strong; escalate after a failure."""

    threshold: float = 0.7
    """Estimated success of one cheap attempt needed to route a first attempt to the cheap model."""
    name: str = "direct_router"
    """Policy name."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(
                f"policy `{self.name}`: threshold must be between 0 and 1, got {self.threshold}"
            )

    def decide(self, state: PlanState) -> Allocation:
        """Route each ready subtask to its cheap or its strong model."""
        wanted: dict[str, Assignment] = {}
        routes: dict[str, str] = {}
        for s in state.ready:
            cheap, strong = _cheap_and_strong(state, s)
            if state.attempts.get(s, 0) > 0:
                model, why = strong, "escalated"
            elif state.estimates[(s, cheap)].success_prob >= self.threshold:
                model, why = cheap, "cheap suffices"
            else:
                model, why = strong, "cheap below threshold"
            wanted[s] = Assignment(model=model, samples=1, max_tokens=default_cap(state, s, model))
            routes[s] = why
        return Allocation(assignments=repair(state, wanted), info={"routes": routes})


def _cheap_and_strong(state: PlanState, subtask: str) -> tuple[str, str]:
    def price(model: str) -> tuple[float, str]:
        p = state.prices[model]
        return p.input_usd_per_token + p.output_usd_per_token, model

    models = state.dag.models[subtask]
    return min(models, key=price), max(models, key=price)
