"""Pooled estimates: what every recorded attempt says about every (subtask, model).

`storage.learn_estimates` trusts a (subtask, model) only after 8 judged attempts of
it and knows nothing before. This module pools instead: a cell with few attempts
borrows strength from the same model on the workflow's other subtasks and from the
other models on the same subtask, and a cell with many attempts speaks for itself.

**Success** (check verdicts only: provider errors, cancelled and lost attempts never
count) is Beta-Binomial empirical Bayes. With `P`, `N` the passes and verdicts of the
whole workflow, `P_m`, `N_m` those of model m over its subtasks, `P_s`, `N_s` those of
subtask s over its models, and `P_sm`, `N_sm` the cell's:

```text
p̄   = (P + 1) / (N + 2)
m_m = (P_m + a p̄) / (N_m + a)        s_s = (P_s + a p̄) / (N_s + a)        a = MARGIN_STRENGTH
μ_sm = sigmoid(logit m_m + logit s_s − logit p̄)                      (the prior mean)
p_sm = (P_sm + k μ_sm) / (N_sm + k) = (1 − w) P_sm/N_sm + w μ_sm,    w = k / (k + N_sm)
```

The prior mean adds the model's and the subtask's effects on the log-odds scale: a
model that passes more often than the workflow's average does so on each subtask. A
cell with no verdicts gets `μ_sm`, so a new model on a known subtask starts at the
subtask's rate and a known model on a new subtask at the model's rate.

The prior strength `k` (one per workflow) comes from the data by the method of
moments: under the model, a cell's raw rate `r = P_sm/N_sm` has variance
`μ(1 − μ) (1 + (N − 1) ρ) / N` around `μ`, with `ρ = 1 / (k + 1)`, so

```text
ρ = Σ [(r − μ)² − μ(1 − μ)/N] / Σ μ(1 − μ)(N − 1)/N      (cells with N ≥ 2)
```

where the squared residuals are first scaled by `C / (C − q)` for `C` such cells and
`q` fitted effects (models + subtasks − 1), because the prior means were fitted to
the same cells. `k` is clipped to [`MIN_STRENGTH`, `MAX_STRENGTH`]; when `C − q` is
below `MIN_CELLS_FOR_MOMENTS`, `k = DEFAULT_STRENGTH`.

**Output tokens** are a lognormal fitted (in log space) to the attempts that ended
with a verdict. **Latency** is a right-censored lognormal: attempts with a verdict are
observed latencies, cancelled ones (a sibling won first) lasted *at least* their
recorded time. The maximum-likelihood fit is found by EM in log space (the censored
values replaced by their conditional moments above the censoring point); dropping
the cancelled attempts would keep only the fast ones and learn latency biased low.
A cell with no observed latency (or no verdict with tokens) takes the model's pooled
fit over the workflow's subtasks, else the subtask's over its models.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import URL, Engine

from orchestrator.estimates import AttemptEstimate, LogNormal
from orchestrator.estimator import RequestFeatures
from storage.training_data import AttemptExample, AttemptOutcome, iter_examples

__all__ = [
    "DEFAULT_STRENGTH",
    "MARGIN_STRENGTH",
    "MAX_STRENGTH",
    "MIN_CELLS_FOR_MOMENTS",
    "MIN_STRENGTH",
    "PooledCell",
    "PooledEstimates",
    "censored_lognormal",
    "pool_examples",
    "pooled_estimates",
]

DEFAULT_STRENGTH = 10.0
"""Prior strength `k` (in attempts) when too few cells have data to estimate it."""
MIN_STRENGTH = 1.0
"""Floor of `k`: even very different cells lean on the prior as much as one attempt."""
MAX_STRENGTH = 50.0
"""Ceiling of `k`: when the cells look alike, 50 attempts of a cell still outweigh the prior."""
MIN_CELLS_FOR_MOMENTS = 4
"""Cells with at least two verdicts, beyond the fitted model and subtask effects, needed to estimate `k`."""
MARGIN_STRENGTH = 10.0
"""Pseudo-verdicts at the workflow's rate that smooth a model's or a subtask's pooled rate."""
_PROB_CLIP = 1e-3
"""Rates are kept inside [0.001, 0.999] before taking log-odds."""
_SIGMA_FLOOR = 0.05
"""Smallest log-space spread of a fit (one observation, or identical ones)."""
_EM_ROUNDS = 200


@dataclass(frozen=True, kw_only=True)
class PooledCell:
    """One (workflow, subtask, model): its counts, its prior and what was learned."""

    workflow: str
    """Workflow name."""
    subtask: str
    """Subtask name."""
    model: str
    """Catalog model name."""
    passes: int
    """Attempts that passed their check."""
    failures: int
    """Attempts that failed their check."""
    errors: int
    """Attempts that ended in an error (not counted in success)."""
    censored: int
    """Cancelled attempts (right-censored latencies, not counted in success)."""
    prior_mean: float
    """The pooled prior mean `μ` (model and subtask effects on the log-odds scale)."""
    strength: float
    """The workflow's prior strength `k`, in attempts."""
    strength_from_data: bool
    """`k` was estimated from the cells (else `DEFAULT_STRENGTH`: too few cells with verdicts)."""
    success_prob: float
    """Posterior mean success probability."""
    output_tokens: LogNormal | None
    """Output tokens of one attempt (`None`: no attempt of this model ended with a verdict)."""
    latency_s: LogNormal | None
    """Latency of one attempt, censoring accounted for (`None`: no latency observed for the model)."""
    input_tokens: int | None
    """Mean prompt tokens (`None`: no model call recorded)."""

    @property
    def verdicts(self) -> int:
        """Attempts with a check verdict."""
        return self.passes + self.failures

    @property
    def shrinkage(self) -> float:
        """Weight `w = k / (k + N)` of the prior mean in `success_prob` (1: prior only)."""
        return self.strength / (self.strength + self.verdicts)

    def estimate(self) -> AttemptEstimate | None:
        """The planner's belief, or `None` when tokens or latency are unknown."""
        if self.output_tokens is None or self.latency_s is None:
            return None
        if self.input_tokens is None:
            return AttemptEstimate(
                success_prob=self.success_prob, output_tokens=self.output_tokens, latency_s=self.latency_s
            )
        return AttemptEstimate(
            success_prob=self.success_prob,
            output_tokens=self.output_tokens,
            latency_s=self.latency_s,
            input_tokens=self.input_tokens,
        )


@dataclass(frozen=True)
class PooledEstimates:
    """Every pooled cell; an `orchestrator.Estimator` over them.

    As an estimator it answers for a (subtask, model) without recorded attempts too, when
    the model or the subtask has some in the workflow (the pooled prior, the model's
    tokens and latency), and `None` for a workflow it has no attempts of.
    """

    cells: tuple[PooledCell, ...]
    """One per (workflow, subtask, model) with recorded attempts, sorted."""
    _raw: Mapping[str, tuple[_Raw, ...]] = field(default_factory=dict, repr=False, compare=False)
    """Each workflow's cells before pooling, to pool a pair without attempts on request."""

    def table(self, workflow: str) -> dict[tuple[str, str], AttemptEstimate]:
        """The estimates of `workflow`'s cells, usable as `learned_estimates` or in a `TableEstimator`."""
        table: dict[tuple[str, str], AttemptEstimate] = {}
        for cell in self.cells:
            estimate = cell.estimate() if cell.workflow == workflow else None
            if estimate is not None:
                table[(cell.subtask, cell.model)] = estimate
        return table

    def cell(self, workflow: str, subtask: str, model: str) -> PooledCell | None:
        """The cell of (workflow, subtask, model): recorded, or pooled from its model and subtask."""
        for cell in self.cells:
            if (cell.workflow, cell.subtask, cell.model) == (workflow, subtask, model):
                return cell
        ours = self._raw.get(workflow, ())
        if not any(c.model == model or c.subtask == subtask for c in ours):
            return None
        fitted = _fit_workflow(workflow, [*ours, _Raw(subtask, model, 0, 0, 0, (), (), (), ())])
        return next(c for c in fitted if (c.subtask, c.model) == (subtask, model))

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        """`orchestrator.Estimator`: the pooled belief, whatever the request's features."""
        cell = self.cell(workflow, subtask, model)
        return None if cell is None else cell.estimate()


def pooled_estimates(
    target: str | URL | Engine,
    *,
    workflow: str | None = None,
    since: datetime | None = None,
    max_runs: int | None = 500,
    models: Mapping[str, str] | None = None,
    include_simulated: bool = False,
) -> PooledEstimates:
    """Pooled estimates from the recorded runs (real runs only unless `include_simulated`).

    Args:
        target: database URL or engine.
        workflow: only this workflow's runs (`None`: every workflow, each pooled apart).
        since: only runs started at or after this time.
        max_runs: at most the newest this many runs (`None`: all).
        models: catalog name -> the litellm model the coming run calls it by; only attempts
            whose first call went to that model count (`None`: by catalog name alone).
        include_simulated: also simulated runs (their outcomes echo the priors).

    Raises:
        StorageError: the database cannot be read.
    """
    examples = iter_examples(
        target, workflow=workflow, since=since, max_runs=max_runs, include_simulated=include_simulated
    )
    if models is not None:
        examples = (e for e in examples if e.model in models and e.litellm_model == models[e.model])
    return pool_examples(examples)


def pool_examples(examples: Iterable[AttemptExample]) -> PooledEstimates:
    """Pool recorded attempts (see the module docstring); each workflow is pooled apart."""
    by_cell: defaultdict[tuple[str, str, str], list[AttemptExample]] = defaultdict(list)
    for example in examples:
        by_cell[(example.workflow, example.subtask, example.model)].append(example)
    cells: list[PooledCell] = []
    raw: dict[str, tuple[_Raw, ...]] = {}
    for workflow in sorted({w for w, _, _ in by_cell}):
        raw[workflow] = tuple(
            _raw_cell(subtask, model, found)
            for (w, subtask, model), found in sorted(by_cell.items())
            if w == workflow
        )
        cells.extend(_fit_workflow(workflow, raw[workflow]))
    return PooledEstimates(tuple(cells), raw)


def censored_lognormal(observed: Sequence[float], censored: Sequence[float] = ()) -> LogNormal | None:
    """The maximum-likelihood lognormal of `observed` values and right-`censored` lower bounds.

    EM in log space: each round replaces a censored log value by its conditional mean and
    second moment above the censoring point under the current fit. `None` without an
    observed value (censored ones alone bound the distribution from below only).
    """
    logs = [math.log(max(v, 1e-6)) for v in observed]
    if not logs:
        return None
    bounds = [math.log(max(v, 1e-6)) for v in censored]
    n = len(logs) + len(bounds)
    mu = sum(logs) / len(logs)
    sigma = max(_SIGMA_FLOOR, math.sqrt(sum((y - mu) ** 2 for y in logs) / len(logs)))
    for _ in range(_EM_ROUNDS if bounds else 1):
        first, second = sum(logs), sum(y * y for y in logs)
        for c in bounds:
            alpha = (c - mu) / sigma
            hazard = _normal_hazard(alpha)
            first += mu + sigma * hazard
            second += sigma**2 * (1 + alpha * hazard) + 2 * mu * sigma * hazard + mu**2
        new_mu = first / n
        new_sigma = max(_SIGMA_FLOOR, math.sqrt(max(0.0, second / n - new_mu**2)))
        converged = abs(new_mu - mu) < 1e-9 and abs(new_sigma - sigma) < 1e-9
        mu, sigma = new_mu, new_sigma
        if converged:
            break
    mean = math.exp(mu + sigma**2 / 2)
    return LogNormal(mean=mean, std=mean * math.sqrt(math.expm1(sigma**2)))


@dataclass(frozen=True)
class _Raw:
    """A cell's data before pooling."""

    subtask: str
    model: str
    passes: int
    failures: int
    errors: int
    tokens: tuple[float, ...]
    latencies: tuple[float, ...]
    cancelled_at: tuple[float, ...]
    prompt_tokens: tuple[int, ...]


def _raw_cell(subtask: str, model: str, found: list[AttemptExample]) -> _Raw:
    judged = [e for e in found if e.skill_verdict is not None]
    return _Raw(
        subtask=subtask,
        model=model,
        passes=sum(1 for e in judged if e.skill_verdict),
        failures=sum(1 for e in judged if not e.skill_verdict),
        errors=sum(1 for e in found if e.outcome is AttemptOutcome.PROVIDER_ERROR),
        tokens=tuple(float(max(1, e.output_tokens)) for e in judged),
        latencies=tuple(e.latency_s for e in judged if e.latency_s is not None),
        cancelled_at=tuple(
            e.latency_s for e in found if e.censored and e.latency_observed and e.latency_s is not None
        ),
        prompt_tokens=tuple(e.prompt_tokens for e in found if e.prompt_tokens is not None),
    )


def _fit_workflow(workflow: str, raw: Sequence[_Raw]) -> list[PooledCell]:
    """Pool one workflow's cells."""
    total_p = sum(c.passes for c in raw)
    total_n = sum(c.passes + c.failures for c in raw)
    overall = (total_p + 1) / (total_n + 2)

    def margin(members: list[_Raw]) -> float:
        p = sum(c.passes for c in members)
        n = sum(c.passes + c.failures for c in members)
        return (p + MARGIN_STRENGTH * overall) / (n + MARGIN_STRENGTH)

    by_model = {m: margin([c for c in raw if c.model == m]) for m in {c.model for c in raw}}
    by_subtask = {s: margin([c for c in raw if c.subtask == s]) for s in {c.subtask for c in raw}}
    priors = [
        _sigmoid(_logit(by_model[c.model]) + _logit(by_subtask[c.subtask]) - _logit(overall)) for c in raw
    ]
    moments = _strength(
        [(c.subtask, c.model, c.passes, c.passes + c.failures, mu) for c, mu in zip(raw, priors, strict=True)]
    )
    strength = DEFAULT_STRENGTH if moments is None else moments
    model_tokens = {m: _lognormal([t for c in raw if c.model == m for t in c.tokens]) for m in by_model}
    model_latency = {m: _latency([c for c in raw if c.model == m]) for m in by_model}
    subtask_tokens = {s: _lognormal([t for c in raw if c.subtask == s for t in c.tokens]) for s in by_subtask}
    subtask_latency = {s: _latency([c for c in raw if c.subtask == s]) for s in by_subtask}
    fitted: list[PooledCell] = []
    for c, mu in zip(raw, priors, strict=True):
        n = c.passes + c.failures
        fitted.append(
            PooledCell(
                workflow=workflow,
                subtask=c.subtask,
                model=c.model,
                passes=c.passes,
                failures=c.failures,
                errors=c.errors,
                censored=len(c.cancelled_at),
                prior_mean=mu,
                strength=strength,
                strength_from_data=moments is not None,
                success_prob=(c.passes + strength * mu) / (n + strength),
                output_tokens=_lognormal(c.tokens) or model_tokens[c.model] or subtask_tokens[c.subtask],
                latency_s=_latency([c]) or model_latency[c.model] or subtask_latency[c.subtask],
                input_tokens=round(sum(c.prompt_tokens) / len(c.prompt_tokens)) if c.prompt_tokens else None,
            )
        )
    return fitted


def _strength(cells: Sequence[tuple[str, str, int, int, float]]) -> float | None:
    """The prior strength `k` by the method of moments (`None`: too few cells; see the module docstring).

    `cells` are (subtask, model, passes, verdicts, prior mean). The prior means were fitted
    to the same cells (one effect per model and per subtask, less one), which shrinks the
    squared residuals by about `(C − q) / C` for `C` cells and `q` effects: they are
    scaled back up, or `k` would come out too large and pull cells to an overfitted prior.
    """
    usable = [(s, m, p, n, mu) for s, m, p, n, mu in cells if n >= 2]
    fitted = len({s for s, *_ in usable}) + len({m for _, m, *_ in usable}) - 1
    if len(usable) - fitted < MIN_CELLS_FOR_MOMENTS:
        return None
    inflate = len(usable) / (len(usable) - fitted)
    excess = sum(inflate * (p / n - mu) ** 2 - mu * (1 - mu) / n for _, _, p, n, mu in usable)
    scale = sum(mu * (1 - mu) * (n - 1) / n for *_, n, mu in usable)
    rho_low, rho_high = 1 / (MAX_STRENGTH + 1), 1 / (MIN_STRENGTH + 1)
    rho = min(rho_high, max(rho_low, excess / scale)) if scale > 0 else rho_low
    return 1 / rho - 1


def _latency(cells: Sequence[_Raw]) -> LogNormal | None:
    """The censored fit of the cells' latencies together."""
    return censored_lognormal(
        [t for c in cells for t in c.latencies], [t for c in cells for t in c.cancelled_at]
    )


def _lognormal(values: Sequence[float]) -> LogNormal | None:
    return censored_lognormal(values) if values else None


def _normal_hazard(alpha: float) -> float:
    """φ(α) / (1 − Φ(α)), the mean excess of a standard normal above α (stable far in the tail)."""
    tail = 0.5 * math.erfc(alpha / math.sqrt(2))
    if tail < 1e-300:
        return alpha
    return math.exp(-0.5 * alpha * alpha) / math.sqrt(2 * math.pi) / tail


def _logit(p: float) -> float:
    p = min(1 - _PROB_CLIP, max(_PROB_CLIP, p))
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))
