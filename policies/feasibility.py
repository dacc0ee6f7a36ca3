"""What a policy may ask for: bounded samples, max_tokens under the ceiling, holds that fit.

The executor reserves each sample's hold (`PlanState.reservation_usd`: input tokens
at the input price plus max_tokens at the output price) before starting it, subtask
by subtask in the order of `state.ready`; once one sample of a subtask is refused,
none of its later samples start. A policy that asks for more than fits has part of
its answer refused, and when nothing else runs the run ends `budget_exhausted`
although a smaller or cheaper answer would have fitted. So every policy answers
only what fits:

- at most `MAX_SAMPLES` samples per subtask and decision;
- `max_tokens` never above the subtask's ceiling (`state.max_tokens_ceiling`); when
  a policy has no reason to choose, `default_cap`: the estimate's default cap
  (`orchestrator.estimates.default_max_tokens`), lowered to the ceiling;
- holds that fit the budget left, counted with `samples_that_fit`, the one statement
  of "how many samples fit" on the planner side (the rollout kernel, being compiled,
  restates it; a test checks they agree).

`repair` applies these to any answer: fewer samples first, then a cheaper model;
a subtask none of whose options fits is deferred. When nothing of the answer fits
and nothing is running, it keeps one sample of the smallest hold, which the ledger
then refuses, so that the run ends `budget_exhausted` (true) rather than `failed`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray

from orchestrator.errors import ConfigError
from orchestrator.estimates import default_max_tokens
from orchestrator.plan import Assignment, PlanState

__all__ = [
    "HOLD_TOLERANCE_USD",
    "MAX_SAMPLES",
    "allocation_holds_usd",
    "check_samples",
    "default_cap",
    "repair",
    "samples_that_fit",
    "under_ceiling",
]

MAX_SAMPLES = 64
"""The most samples any policy gives one subtask in one decision (MCPP's largest k level)."""

HOLD_TOLERANCE_USD = 1e-12
"""Float slack when comparing holds with the budget left (the ledger counts whole nano-dollars)."""


def check_samples(policy: str, samples: int) -> None:
    """Raise `ConfigError` unless `1 <= samples <= MAX_SAMPLES` (a policy's configured width)."""
    if not 1 <= samples <= MAX_SAMPLES:
        raise ConfigError(f"policy `{policy}`: samples must be between 1 and {MAX_SAMPLES}, got {samples}")


def samples_that_fit(left: ArrayLike, hold: ArrayLike, wanted: ArrayLike) -> NDArray[np.int64]:
    """How many of `wanted` samples, each holding `hold` USD, fit in `left` USD (broadcasts).

    Samples hold one after another; the first that does not fit stops the subtask.
    """
    avail = np.asarray(left, dtype=np.float64) + HOLD_TOLERANCE_USD
    h = np.asarray(hold, dtype=np.float64)
    k = np.asarray(wanted, dtype=np.int64)
    partial = np.minimum(k, np.floor(np.maximum(avail, 0.0) / np.maximum(h, 1e-15)).astype(np.int64))
    out: NDArray[np.int64] = np.where(k * h > avail, partial, k).astype(np.int64)
    return out


def under_ceiling(max_tokens: int, ceiling: int | None) -> int:
    """`max_tokens` lowered to a subtask's ceiling (`None`: the subtask has none)."""
    return max_tokens if ceiling is None else min(max_tokens, ceiling)


def default_cap(state: PlanState, subtask: str, model: str) -> int:
    """The max_tokens a policy asks for (subtask, model) when it has no reason to choose.

    The estimate's default cap (`default_max_tokens`: 1.25 x its 99th percentile of output
    tokens), lowered to the subtask's ceiling.
    """
    return default_max_tokens(
        state.estimates[(subtask, model)], ceiling=state.max_tokens_ceiling.get(subtask)
    )


def _cap(state: PlanState, subtask: str, model: str, asked: int | None) -> int:
    if asked is None:
        return default_cap(state, subtask, model)
    return under_ceiling(asked, state.max_tokens_ceiling.get(subtask))


def allocation_holds_usd(state: PlanState, assignments: Mapping[str, Assignment]) -> float:
    """What the ledger would hold for every sample of `assignments` (a `None` cap: `default_cap`)."""
    return sum(
        a.samples * state.reservation_usd(s, a.model, _cap(state, s, a.model, a.max_tokens))
        for s, a in assignments.items()
    )


def repair(state: PlanState, assignments: Mapping[str, Assignment]) -> dict[str, Assignment]:
    """The nearest answer that fits: caps under the ceiling, fewer samples, then a cheaper model.

    Subtasks are served in the order of `state.ready`, as the executor launches them. A
    subtask whose chosen model holds too much moves to the most reliable of its cheaper
    models that fits one sample; with none, it is deferred. Explicit deferrals (0 samples)
    are kept. Every assignment comes back with an explicit `max_tokens`.
    """
    left = state.remaining_budget_usd
    out: dict[str, Assignment] = {}
    wanted: list[str] = []
    for s in state.ready:
        a = assignments.get(s)
        if a is None:
            continue
        if a.samples == 0:
            out[s] = Assignment(model=a.model, samples=0, max_tokens=_cap(state, s, a.model, a.max_tokens))
            continue
        wanted.append(s)
        k = min(a.samples, MAX_SAMPLES)
        first = (a.model, _cap(state, s, a.model, a.max_tokens))
        first_hold = state.reservation_usd(s, first[0], first[1])
        cheaper = sorted(
            (
                (m, default_cap(state, s, m))
                for m in state.dag.models[s]
                if m != a.model and state.reservation_usd(s, m, default_cap(state, s, m)) < first_hold
            ),
            key=lambda o: (-state.estimates[(s, o[0])].success_prob, state.reservation_usd(s, *o), o[0]),
        )
        for model, cap in (first, *cheaper):
            hold = state.reservation_usd(s, model, cap)
            fit = int(samples_that_fit(left, hold, k))
            if fit > 0:
                out[s] = Assignment(model=model, samples=fit, max_tokens=cap)
                left -= fit * hold
                break
    if wanted and not state.in_flight and not any(a.samples for a in out.values()):
        # nothing fits and nothing runs: ask for the smallest hold, which the ledger refuses
        s = wanted[0]
        model = min(state.dag.models[s], key=lambda m: state.reservation_usd(s, m, default_cap(state, s, m)))
        out[s] = Assignment(model=model, samples=1, max_tokens=default_cap(state, s, model))
    return out
