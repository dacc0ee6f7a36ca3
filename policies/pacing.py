"""Closed-loop allocation baselines: a threshold router and dual mirror descent budget pacing."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.plan import Allocation, Assignment, PlanState
from policies.feasibility import check_samples, default_cap, repair, samples_that_fit

__all__ = ["DualMirrorDescent", "ThresholdRouter"]


@dataclass(kw_only=True)
class ThresholdRouter:
    """RouteLLM-style: the cheapest model whose estimated success clears `threshold`, else the best one."""

    threshold: float = 0.7
    """Minimum estimated success probability of one attempt."""
    samples: int = 1
    """Samples per dispatch; failed subtasks are retried."""
    name: str = "threshold_router"
    """Policy name."""

    def __post_init__(self) -> None:
        check_samples(self.name, self.samples)

    def decide(self, state: PlanState) -> Allocation:
        """Route each ready subtask (then `repair`: fewer samples or a cheaper model when it does not fit)."""
        out: dict[str, Assignment] = {}
        for s in state.ready:
            models = state.dag.models[s]
            clear = [m for m in models if state.estimates[(s, m)].success_prob >= self.threshold]
            if clear:
                model = min(clear, key=lambda m: (state.expected_attempt_cost(s, m), m))
            else:
                model = max(models, key=lambda m: (state.estimates[(s, m)].success_prob, m))
            out[s] = Assignment(model=model, samples=self.samples, max_tokens=default_cap(state, s, model))
        return Allocation(assignments=repair(state, out))


@dataclass(kw_only=True)
class DualMirrorDescent:
    """Budget pacing (Balseiro, Lu, Mirrokni 2020): maximise `1-(1-p)^k - mu x cost / rho`, then update `mu`.

    `rho` is the per-decision spending target: remaining budget over the expected
    number of remaining dispatches (sum over unfinished subtasks of 1 / p of their
    best model). Costs are normalised by `rho`, so `mu` is unit-free; after each
    decision `mu <- max(0, mu + eta x (spend / rho - 1))` (mirror descent with the
    Euclidean mirror map on the dual).

    Only (m, k) whose holds fit the budget left are candidates (subtasks served in
    the order of `state.ready`). Expected cost is what pacing trades against success,
    but the ledger holds max_tokens at full price, several times the expected cost on
    a long-tailed model: choosing by expected cost alone once picked a strong model
    whose single hold exceeded the budget left while smaller options fitted, and the
    run ended `budget_exhausted` with most of its budget unspent.
    """

    k_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    """Sample counts to choose from."""
    eta: float = 0.5
    """Dual step size."""
    mu0: float = 0.5
    """Initial dual price."""
    name: str = "dual_mirror_descent"
    """Policy name."""
    mu: float = field(default=-1.0, init=False)
    """Current dual price (set at the first decision)."""

    def __post_init__(self) -> None:
        for k in self.k_levels:
            check_samples(self.name, k)

    def decide(self, state: PlanState) -> Allocation:
        """Pick (m, k) per ready subtask at the current dual price, then update it."""
        if self.mu < 0 or state.decision_index == 0:
            self.mu = self.mu0
        unfinished = [s for s in state.dag.subtasks if s not in state.completed]
        expected_dispatches = sum(
            1.0 / max(0.05, max(state.estimates[(s, m)].success_prob for m in state.dag.models[s]))
            for s in unfinished
        )
        rho = max(state.remaining_budget_usd, 1e-12) / max(expected_dispatches, 1.0)
        out: dict[str, Assignment] = {}
        spend = 0.0
        left = state.remaining_budget_usd
        for s in state.ready:
            best: tuple[float, float, str, int, int, float] | None = None
            for m in state.dag.models[s]:
                p = state.estimates[(s, m)].success_prob
                cost = state.expected_attempt_cost(s, m)
                cap = default_cap(state, s, m)
                hold = state.reservation_usd(s, m, cap)
                for k in self.k_levels:
                    if samples_that_fit(left, hold, k) < k:
                        continue  # the ledger would refuse part of it
                    value = 1.0 - (1.0 - p) ** k - self.mu * k * cost / rho
                    if best is None or (value, -k * cost) > best[:2]:
                        best = (value, -k * cost, m, k, cap, hold)
            if best is None:
                continue  # not even one sample fits: wait for holds to be released
            _, neg_cost, model, k, cap, hold = best
            out[s] = Assignment(model=model, samples=k, max_tokens=cap)
            left -= k * hold
            spend -= neg_cost
        if not out and state.ready and not state.in_flight:
            # nothing fits and nothing runs: let the ledger refuse the smallest hold, honestly
            out = repair(state, {state.ready[0]: Assignment(model=state.dag.models[state.ready[0]][0])})
        self.mu = max(0.0, self.mu + self.eta * (spend / rho / max(len(state.ready), 1) - 1.0))
        return Allocation(assignments=out, info={"mu": round(self.mu, 4), "rho_usd": rho})
