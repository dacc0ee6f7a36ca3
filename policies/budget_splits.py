"""Static one-shot budget splits (the reference's open-loop baselines).

At the first decision the whole budget is split into per-subtask shares by a
weight rule. Each subtask is dispatched once, when it first becomes ready, on
the model that maximises `1 - (1 - p)^k` with `k = floor(share / expected
attempt cost)` samples, and is never retried. `k` is bounded twice: by
`MAX_SAMPLES`, and by what the budget left can hold (`samples_that_fit`, with the
subtasks ready together served in order): a share is an expectation, a hold is
max_tokens at full price, and a big budget on few subtasks once bought 12,613
samples.

How they end: a subtask whose share buys no sample, or whose one batch failed,
is deferred (`samples=0`) from then on; once nothing else is running the
executor ends the run `failed`. When the shares buy samples but no hold fits the
budget left and nothing runs, the answer is one sample of the smallest hold
(`policies.feasibility.repair`), which the ledger refuses: `budget_exhausted`.
Shares are recomputed from the DAG and the run's whole budget at every
decision, so the policies keep no state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from orchestrator.plan import Allocation, Assignment, PlanState
from policies.feasibility import MAX_SAMPLES, default_cap, repair, samples_that_fit

__all__ = [
    "StaticSplit",
    "critical_path_weights",
    "dirichlet_weights",
    "latency_weights",
    "success_weights",
    "uniform_weights",
]

WeightRule = Callable[[PlanState, int], Mapping[str, float]]


def _mean_latency(state: PlanState, subtask: str) -> float:
    return float(np.mean([state.estimates[(subtask, m)].latency_s.mean for m in state.dag.models[subtask]]))


def _mean_success(state: PlanState, subtask: str) -> float:
    return float(np.mean([state.estimates[(subtask, m)].success_prob for m in state.dag.models[subtask]]))


def uniform_weights(state: PlanState, seed: int) -> Mapping[str, float]:
    """Equal shares."""
    return {s: 1.0 for s in state.dag.subtasks}


def dirichlet_weights(state: PlanState, seed: int) -> Mapping[str, float]:
    """Random shares from a flat Dirichlet, fixed by the seed."""
    draw = np.random.default_rng(seed).dirichlet(np.ones(len(state.dag.subtasks)))
    return dict(zip(state.dag.subtasks, (float(x) for x in draw), strict=True))


def latency_weights(state: PlanState, seed: int) -> Mapping[str, float]:
    """Shares proportional to mean attempt latency (averaged over the subtask's models)."""
    return {s: _mean_latency(state, s) for s in state.dag.subtasks}


def success_weights(state: PlanState, seed: int) -> Mapping[str, float]:
    """Shares proportional to the failure probability `1 - p` (harder subtasks get more)."""
    return {s: max(1e-3, 1.0 - _mean_success(state, s)) for s in state.dag.subtasks}


def critical_path_weights(state: PlanState, seed: int) -> Mapping[str, float]:
    """Shares proportional to the expected length of the longest path through the subtask."""
    lat = {s: _mean_latency(state, s) for s in state.dag.subtasks}
    head: dict[str, float] = {}
    for s in state.dag.subtasks:
        head[s] = lat[s] + max((head[p] for p in state.dag.parents[s]), default=0.0)
    tail: dict[str, float] = {}
    children = state.dag.children()
    for s in reversed(state.dag.subtasks):
        tail[s] = lat[s] + max((tail[c] for c in children[s]), default=0.0)
    return {s: head[s] + tail[s] - lat[s] for s in state.dag.subtasks}


@dataclass(kw_only=True)
class StaticSplit:
    """Open loop: split the budget once by `weights`, dispatch each subtask once, never retry."""

    weights: WeightRule
    """Maps (state, seed) to a non-negative weight per subtask."""
    name: str = "split_uniform"
    """Policy name."""
    seed: int = 0
    """Seed for random weight rules."""

    def decide(self, state: PlanState) -> Allocation:
        """Dispatch never-attempted ready subtasks with their share's worth of samples, as far as they fit."""
        raw = self.weights(state, self.seed)
        total = sum(raw.values()) or 1.0
        left = state.remaining_budget_usd
        out: dict[str, Assignment] = {}
        unfit: list[str] = []
        for s in state.ready:
            if state.attempts.get(s, 0) > 0:
                continue  # one shot: never retried
            share = state.budget_usd * raw[s] / total
            best: tuple[float, float, str, int, int, float] | None = None
            for m in state.dag.models[s]:
                cost = state.expected_attempt_cost(s, m)
                cap = default_cap(state, s, m)
                hold = state.reservation_usd(s, m, cap)
                bought = min(int(share // max(cost, 1e-12)), MAX_SAMPLES)
                k = int(samples_that_fit(left, hold, bought))
                p = state.estimates[(s, m)].success_prob
                key = (1.0 - (1.0 - p) ** k, -k * cost, m, k, cap, hold)
                if k > 0 and (best is None or key[:2] > best[:2]):
                    best = key
                elif bought > 0 and k == 0:
                    unfit.append(s)
            if best is not None:
                _, _, model, k, cap, hold = best
                out[s] = Assignment(model=model, samples=k, max_tokens=cap)
                left -= k * hold
        if not out and unfit and not state.in_flight:
            # the shares buy samples that no hold fits: let the ledger refuse one, honestly
            out = repair(state, {unfit[0]: Assignment(model=state.dag.models[unfit[0]][0])})
        return Allocation(assignments=out)
