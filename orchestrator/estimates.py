"""What we believe about one attempt of a subtask on a model.

An `AttemptEstimate` gives the success probability of one attempt and the
distribution of its output tokens and latency, either as joint empirical
samples (recorded or imported attempts, drawn together so that correlations
between length, latency and success are kept) or as a parametric model
(success ~ Bernoulli(p), output tokens and latency ~ lognormal matched to a
mean and standard deviation).

`draw` is vectorised: the executor's simulated backend draws one attempt at
a time, the planner's rollouts draw thousands at once, from the same code.
The max_tokens rule (`truncate`) lives here too, so that the simulator, the
planner and the simulated backend share one definition of truncation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "AttemptDraws",
    "AttemptEstimate",
    "EmpiricalSample",
    "LogNormal",
    "default_max_tokens",
    "truncate",
]


@dataclass(frozen=True, kw_only=True)
class LogNormal:
    """A positive quantity given by its mean and standard deviation (lognormal with those moments)."""

    mean: float
    """Mean of the quantity."""
    std: float = 0.0
    """Standard deviation; 0 makes it a constant."""

    def __post_init__(self) -> None:
        if not (self.mean > 0 and math.isfinite(self.mean)):
            raise ValueError(f"LogNormal mean must be positive and finite, got {self.mean}")
        if self.std < 0:
            raise ValueError(f"LogNormal std must be >= 0, got {self.std}")

    def quantile(self, q: float) -> float:
        """The `q` quantile, in closed form."""
        if self.std == 0:
            return self.mean
        sigma = math.sqrt(math.log1p((self.std / self.mean) ** 2))
        mu = math.log(self.mean) - sigma**2 / 2
        return math.exp(mu + sigma * NormalDist().inv_cdf(q))

    def sample(self, rng: np.random.Generator, n: int) -> NDArray[np.float64]:
        """Draw `n` values."""
        if self.std == 0:
            return np.full(n, self.mean)
        sigma2 = math.log1p((self.std / self.mean) ** 2)
        mu = math.log(self.mean) - sigma2 / 2
        return rng.lognormal(mu, math.sqrt(sigma2), n)


@dataclass(frozen=True, kw_only=True)
class EmpiricalSample:
    """One observed attempt."""

    success: bool
    """Whether the attempt passed its check."""
    output_tokens: int
    """Output tokens the attempt produced."""
    latency_s: float
    """Wall time of the attempt (call + check), seconds."""


@dataclass(frozen=True, kw_only=True)
class AttemptDraws:
    """`n` drawn attempts as parallel arrays."""

    success: NDArray[np.bool_]
    """Whether each attempt passed its check."""
    output_tokens: NDArray[np.int64]
    """Output tokens of each attempt."""
    latency_s: NDArray[np.float64]
    """Wall time of each attempt."""


@dataclass(frozen=True, kw_only=True)
class AttemptEstimate:
    """Beliefs about one attempt of one subtask on one model."""

    success_prob: float
    """Probability that one attempt passes its check."""
    output_tokens: LogNormal
    """Output-token distribution (parametric form; also the summary of `samples`)."""
    latency_s: LogNormal
    """Attempt wall-time distribution (parametric form; also the summary of `samples`)."""
    input_tokens: int = 500
    """Prompt tokens of one attempt (used for reservation and cost)."""
    samples: tuple[EmpiricalSample, ...] = ()
    """Joint empirical samples; when present, draws resample them instead of the parametric form."""
    _arrays: tuple[NDArray[np.bool_], NDArray[np.int64], NDArray[np.float64]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if not 0.0 <= self.success_prob <= 1.0:
            raise ValueError(f"success_prob must be in [0, 1], got {self.success_prob}")
        if self.input_tokens < 0:
            raise ValueError(f"input_tokens must be >= 0, got {self.input_tokens}")
        if self.samples:
            arrays = (
                np.array([s.success for s in self.samples], dtype=np.bool_),
                np.array([s.output_tokens for s in self.samples], dtype=np.int64),
                np.array([s.latency_s for s in self.samples], dtype=np.float64),
            )
            object.__setattr__(self, "_arrays", arrays)

    @classmethod
    def from_samples(cls, samples: list[EmpiricalSample], *, input_tokens: int = 500) -> AttemptEstimate:
        """An estimate that resamples `samples` (at least one)."""
        if not samples:
            raise ValueError("from_samples needs at least one sample")
        tokens = np.array([max(1, s.output_tokens) for s in samples], dtype=np.float64)
        lat = np.array([max(1e-3, s.latency_s) for s in samples], dtype=np.float64)
        return cls(
            success_prob=float(np.mean([s.success for s in samples])),
            output_tokens=LogNormal(mean=float(tokens.mean()), std=float(tokens.std())),
            latency_s=LogNormal(mean=float(lat.mean()), std=float(lat.std())),
            input_tokens=input_tokens,
            samples=tuple(samples),
        )

    def draw(self, rng: np.random.Generator, n: int) -> AttemptDraws:
        """Draw `n` independent attempts (before any max_tokens cap)."""
        if self._arrays is not None:
            succ, tok, lat = self._arrays
            idx = rng.integers(0, len(succ), n)
            return AttemptDraws(success=succ[idx], output_tokens=tok[idx], latency_s=lat[idx])
        success = rng.random(n) < self.success_prob
        tokens = np.maximum(1, np.rint(self.output_tokens.sample(rng, n))).astype(np.int64)
        latency = self.latency_s.sample(rng, n)
        return AttemptDraws(success=success, output_tokens=tokens, latency_s=latency)

    def mean_output_tokens(self) -> float:
        """Expected output tokens."""
        if self._arrays is not None:
            return float(self._arrays[1].mean())
        return self.output_tokens.mean

    def output_token_quantile(self, q: float) -> int:
        """The `q` quantile of output tokens (used to choose max_tokens)."""
        if self._arrays is not None:
            return int(np.quantile(self._arrays[1], q, method="higher"))
        return math.ceil(self.output_tokens.quantile(q))


def truncate(draws: AttemptDraws, max_tokens: int | None) -> AttemptDraws:
    """Apply a per-call max_tokens cap: a truncated attempt fails, stops at the cap, and ends early.

    Its latency shrinks in proportion to the tokens actually generated.
    """
    if max_tokens is None:
        return draws
    over = draws.output_tokens > max_tokens
    if not over.any():
        return draws
    scale = np.where(over, max_tokens / np.maximum(draws.output_tokens, 1), 1.0)
    return AttemptDraws(
        success=draws.success & ~over,
        output_tokens=np.minimum(draws.output_tokens, max_tokens),
        latency_s=draws.latency_s * scale,
    )


def default_max_tokens(
    estimate: AttemptEstimate, *, ceiling: int | None = None, headroom: float = 1.25
) -> int:
    """The max_tokens cap used when nobody chose one: 1.25 x the 99th percentile of output tokens.

    High enough that truncation is rare, low enough that reservations stay honest; never
    above the subtask's `ceiling` (its own `max_tokens`). The executor and every policy
    use this one rule.
    """
    cap = max(16, int(np.ceil(estimate.output_token_quantile(0.99) * headroom)))
    return cap if ceiling is None else min(cap, ceiling)
