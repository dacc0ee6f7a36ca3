"""Exploration: a run that plans on beliefs drawn from their uncertainty (Thompson sampling).

A planner that always plans on its estimator's best guesses tries only what those
guesses favour, so a (subtask, model) believed worse than it is never gets the
attempts that would correct the belief: learning from recorded runs then stays blind
to it. `ThompsonEstimator` wraps an estimator for one run and moves each success
belief once, at random, by as much as the belief is uncertain: a model known from a
handful of attempts is sometimes believed much better (and tried), one known from
hundreds barely moves. Everything else (tokens, latency) is the wrapped estimator's.

The draw, per (workflow, subtask, model) and fixed for the run, is on the log-odds
scale, the normal approximation of a Beta(p·k, (1 − p)·k) belief:

```text
logit p' = logit p + z / sqrt(k · p · (1 − p)),     z ~ N(0, 1) from (seed, workflow, subtask, model)
```

`k` is the belief's weight in attempts: the wrapped estimator's `evidence(subtask, model)`
when it has one (`storage.LearnedEstimator`: its pooled prior strength plus the cell's
fresh verdicts), else `default_evidence`. Explore on some runs, not all: each explored
run plans on beliefs it does not hold, and pays for what it learns.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from orchestrator.belief_updates import DEFAULT_CONCENTRATION
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate
from orchestrator.estimator import Estimator, RequestFeatures

__all__ = ["ThompsonEstimator"]

_EDGE = 1e-4
"""Beliefs are kept within [_EDGE, 1 − _EDGE] on the log-odds scale (certainty does not move)."""


class ThompsonEstimator:
    """One run's beliefs: the wrapped estimator's, each success drawn once from its uncertainty."""

    def __init__(
        self, base: Estimator, *, seed: int, default_evidence: float = DEFAULT_CONCENTRATION
    ) -> None:
        """Args:
        base: the estimator whose beliefs are drawn around.
        seed: the run's seed (the same seed draws the same beliefs).
        default_evidence: the weight `k`, in attempts, of a belief whose estimator does
            not say (`evidence`); the in-run updates' default concentration.

        Raises:
            ConfigError: `default_evidence` not positive.
        """
        if not (default_evidence > 0 and math.isfinite(default_evidence)):
            raise ConfigError(f"`default_evidence` must be a positive number, got {default_evidence}")
        self._base = base
        self._seed = seed
        self._default = default_evidence
        self._shifts: dict[tuple[str, str, str], float] = {}

    @property
    def label(self) -> str:
        """What the run's record names these beliefs (`orchestrator.describe_beliefs`)."""
        base = getattr(self._base, "label", None)
        return f"{base if isinstance(base, str) else type(self._base).__name__} explored (seed {self._seed})"

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        """The wrapped estimator's answer with its success probability drawn (`None` stays `None`)."""
        found = self._base.estimate(workflow, subtask, model, features)
        if found is None:
            return None
        p = min(1 - _EDGE, max(_EDGE, found.success_prob))
        spread = 1 / math.sqrt(self._evidence(subtask, model) * p * (1 - p))
        logit = math.log(p / (1 - p)) + self._shift(workflow, subtask, model) * spread
        drawn = 1 / (1 + math.exp(-logit))
        # Empirical samples carry the old success rate: the drawn belief is parametric.
        return replace(found, success_prob=drawn, samples=())

    def _evidence(self, subtask: str, model: str) -> float:
        weigh = getattr(self._base, "evidence", None)
        found = weigh(subtask, model) if callable(weigh) else None
        return float(found) if isinstance(found, int | float) and found > 0 else self._default

    def _shift(self, workflow: str, subtask: str, model: str) -> float:
        key = (workflow, subtask, model)
        shift = self._shifts.get(key)
        if shift is None:
            shift = self._shifts[key] = random.Random(f"{self._seed}\n{workflow}\n{subtask}\n{model}").gauss()
        return shift
