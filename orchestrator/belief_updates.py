"""Beliefs updated within a run after every finished attempt: one input's failures are correlated.

A run starts from its estimator's (or its priors') beliefs per (subtask, model). Each
attempt that ends says something about *this* input: a model that failed its check
on it is likely to fail again, and the other models of the subtask a little more
likely too (what makes the input hard for one often makes it hard for all). The rule,
here and nowhere else:

- **Success.** The belief `p0` about (subtask, model) when its first evidence arrives
  is read as a Beta(p0·k, (1 − p0)·k) prior, `k` = `concentration` (the prior weighs
  as much as `k` attempts on this input). A verdict of model `m` on subtask `s` adds
  one pass (or one failure) to (s, m) and `spillover` ρ < 1 of one to every other
  model of `s`. The belief is the posterior mean
  `(p0·k + passes) / (k + passes + failures)`.
- **Truncation.** An attempt that stopped at its `max_tokens` (a model call ended with
  finish reason `length`) shows that this input's output is longer than the cap: the
  model's output-token mean becomes at least `truncation_growth` × the cap, with its
  relative spread kept (so the next default cap, 1.25 × the 99th percentile, is
  higher). A truncated *failure* is not a failure of the model's skill (the cap made
  it fail; the planner models that by truncating its draws), so it changes no success
  odds; a truncated pass counts as a pass.
- **Errors and cancellations** (a provider or pool outage, a refused hold, the
  deadline, a sibling that won first) say nothing about the model: nothing changes.
- An estimate made of empirical samples becomes parametric when it is updated, with
  the same moments: resampling the recorded attempts would ignore the update.

Updated estimates are new objects, so a planner that recompiles only changed
estimates (MCPP's `policies.problem.CompiledDag`) sees them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate, LogNormal

__all__ = [
    "DEFAULT_CONCENTRATION",
    "DEFAULT_SPILLOVER",
    "DEFAULT_TRUNCATION_GROWTH",
    "InRunBeliefs",
    "InRunUpdate",
]

DEFAULT_CONCENTRATION = 4.0
"""`k`: the run's starting belief weighs as much as this many attempts on the input."""
DEFAULT_SPILLOVER = 0.3
"""`ρ`: a verdict of one model counts this fraction of one verdict for the subtask's other models."""
DEFAULT_TRUNCATION_GROWTH = 1.5
"""After a truncated attempt, its model's output-token mean is at least this times the cap it hit."""

Key = tuple[str, str]


@dataclass(frozen=True, kw_only=True)
class InRunUpdate:
    """The in-run update rule's constants (see the module docstring)."""

    concentration: float = DEFAULT_CONCENTRATION
    """`k` of the Beta prior: how many attempts on this input the starting belief weighs."""
    spillover: float = DEFAULT_SPILLOVER
    """`ρ` in [0, 1): how much one model's verdict counts for the subtask's other models."""
    truncation_growth: float = DEFAULT_TRUNCATION_GROWTH
    """> 1: a truncated model's output-token mean becomes at least this times the cap it hit."""

    def __post_init__(self) -> None:
        if not self.concentration > 0:
            raise ConfigError(f"in-run update: `concentration` must be positive, got {self.concentration}")
        if not 0 <= self.spillover < 1:
            raise ConfigError(f"in-run update: `spillover` must be in [0, 1), got {self.spillover}")
        if not self.truncation_growth > 1:
            raise ConfigError(
                f"in-run update: `truncation_growth` must be above 1, got {self.truncation_growth}"
            )

    def success_prob(self, prior: float, passes: float, failures: float) -> float:
        """The posterior mean success probability after `passes` and `failures` on this input."""
        k = self.concentration
        return (prior * k + passes) / (k + passes + failures)

    def output_tokens(self, current: LogNormal, cap: int) -> LogNormal:
        """The output-token belief after an attempt was cut at `cap` tokens."""
        floor = self.truncation_growth * cap
        if current.mean >= floor:
            return current
        return LogNormal(mean=floor, std=current.std * floor / current.mean)


class InRunBeliefs:
    """One run's evidence per (subtask, model) and the estimates it implies."""

    def __init__(self, rule: InRunUpdate, models: Mapping[str, Sequence[str]]) -> None:
        """Args:
        rule: the update's constants.
        models: each subtask's models.
        """
        self.rule = rule
        self._models = models
        self._prior: dict[Key, float] = {}
        self._passes: defaultdict[Key, float] = defaultdict(float)
        self._failures: defaultdict[Key, float] = defaultdict(float)

    def observe(
        self,
        table: Mapping[Key, AttemptEstimate],
        subtask: str,
        model: str,
        *,
        passed: bool | None,
        truncated_at: int | None = None,
    ) -> dict[Key, AttemptEstimate]:
        """Take in one finished attempt; return the estimates that change.

        Args:
            table: the run's current estimates.
            subtask: the attempt's subtask.
            model: its model.
            passed: its check's verdict; `None` for an error or a cancellation.
            truncated_at: the cap it hit, if a model call stopped at `max_tokens`.
        """
        changed: dict[Key, AttemptEstimate] = {}
        if truncated_at is not None:
            est = table[(subtask, model)]
            tokens = self.rule.output_tokens(est.output_tokens, truncated_at)
            if tokens != est.output_tokens:
                changed[(subtask, model)] = replace(_parametric(est), output_tokens=tokens)
            if not passed:
                return changed
        if passed is None:
            return changed
        for other in self._models[subtask]:
            key = (subtask, other)
            est = changed.get(key, table[key])
            prior = self._prior.setdefault(key, est.success_prob)
            weight = 1.0 if other == model else self.rule.spillover
            if weight == 0:
                continue
            if passed:
                self._passes[key] += weight
            else:
                self._failures[key] += weight
            p = self.rule.success_prob(prior, self._passes[key], self._failures[key])
            if p != est.success_prob:
                changed[key] = replace(_parametric(est), success_prob=p)
        return changed

    def evidence(self, subtasks: Sequence[str], limit: int) -> dict[str, dict[str, dict[str, Any]]]:
        """What was learned in this run about `subtasks` (at most `limit` of them), for the records."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for s in subtasks:
            if len(out) >= limit:
                break
            seen = {m: (s, m) for m in self._models[s] if (s, m) in self._prior}
            if seen:
                out[s] = {m: self._summary(key) for m, key in seen.items()}
        return out

    def _summary(self, key: Key) -> dict[str, Any]:
        prior, passes, failures = self._prior[key], self._passes[key], self._failures[key]
        return {
            "prior": round(prior, 4),
            "passes": round(passes, 3),
            "failures": round(failures, 3),
            "success_prob": round(self.rule.success_prob(prior, passes, failures), 4),
        }


def _parametric(est: AttemptEstimate) -> AttemptEstimate:
    """`est` without its empirical samples (their moments are its parametric form already)."""
    return replace(est, samples=()) if est.samples else est
