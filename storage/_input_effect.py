"""Success with a shared per-input effect: one logistic model per subtask whose attempts of the same
run share a latent difficulty, fitted by maximum marginal likelihood.

The recorded attempts are not a random sample of (input, model) pairs: a run tries a model
again, or a stronger one, *because* an attempt failed on that input, and it reaches a later
subtask only when the earlier ones passed. Counted as independent draws, the attempts made
after failures describe hard inputs, and a model mostly tried after another failed looks
much worse than it is on a fresh input. The planner's choices depend only on what the run
had seen (features and verdicts), so a likelihood that models the input's shared difficulty
is not biased by them (the selection is ignorable). The model:

```text
u_run ~ N(0, 1)                                   one per run (its input)
logit P(pass | attempt) = a_s + c_m + d_sm + w_s · z + v_sm · z − λ_m · u_run
```

with `a_s` the subtask's intercept, `c_m` the model's (shared by every subtask, so a cell
with few attempts borrows the model's strength measured elsewhere, free of the selection),
`d_sm` their interaction, `w_s` the subtask's feature weights shared by its models, `v_sm` the
model's own, and `λ_m >= 0` how strongly the model's odds fall with the input's difficulty;
every term is L2-penalized toward zero (the interactions and features more than the main
effects). EM over `u` on Gauss-Hermite nodes: the E-step weighs each run's nodes by its
verdicts, the M-step takes a penalized Newton step per subtask (`a_s`, `d_sm`, `w_s`,
`v_sm`), per model (`c_m`) and per loading. A fresh input's probability is the average over
`u` (`marginal_logits`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.typing import NDArray

__all__ = ["SuccessFit", "fit_success", "loadings_of", "marginal_logits"]

NODES = 15
"""Gauss-Hermite nodes over the input's effect."""
SUBTASK_PENALTY = 0.25
"""L2 penalty of a subtask's intercept `a_s` (weak: subtasks have many attempts)."""
MODEL_PENALTY = 0.5
"""L2 penalty of a model's intercept `c_m`: a model with a couple of verdicts stays near the rest."""
INTERACTION_PENALTY = 2.0
"""L2 penalty of `d_sm`: a cell departs from `a_s + c_m` only as its own verdicts show."""
LOADING_PRIOR = (0.8, 1.0)
"""Mean and precision of the Gaussian prior on each loading λ_m (few repeated attempts: about 0.8)."""
MAX_LOADING = 4.0
_ROUNDS = 200
_TOLERANCE = 1e-6
"""EM stops once a round improves the penalized log-likelihood by less than this per attempt: past
it, the parameters drift along directions the data hardly pin down, and the answers stay put."""

_X, _W = hermegauss(NODES)
_W = _W / _W.sum()


@dataclass(frozen=True)
class SuccessFit:
    """The fitted success model (see the module docstring)."""

    shared: dict[str, tuple[float, ...]]
    """Subtask -> `w_s`."""
    weights: dict[tuple[str, str], tuple[float, ...]]
    """(subtask, model) -> (`a_s + c_m + d_sm`, *`v_sm`)."""
    loadings: dict[str, float]
    """Model -> `λ_m`."""


def marginal_logits(logits: NDArray[np.float64], loadings: NDArray[np.float64]) -> NDArray[np.float64]:
    """The log-odds of a fresh input: `logit E_u[sigmoid(logit − λ u)]`, u ~ N(0, 1), per element."""
    p = _sigmoid(logits[:, None] - loadings[:, None] * _X[None, :]) @ _W
    p = np.clip(p, 1e-12, 1 - 1e-12)
    out: NDArray[np.float64] = np.log(p) - np.log1p(-p)
    return out


def fit_success(
    keys: Sequence[tuple[str, str]],
    runs: Sequence[str],
    z: NDArray[np.float64],
    outcome: NDArray[np.float64],
    penalty: float,
    cells: Sequence[tuple[str, str]],
) -> SuccessFit:
    """Fit the model to judged attempts and answer for `cells`.

    `keys[i]` = (subtask, model) of attempt i, `runs[i]` its run, `z[i]` its standardized
    features, `outcome[i]` 1 for a pass and 0 for a failed check; `penalty` is the features'
    L2 penalty. A cell of `cells` without attempts gets `a_s + c_m` (or less, when its
    subtask or model has none either)."""
    n, width = z.shape
    subtasks = sorted({s for s, _ in keys} | {s for s, _ in cells})
    models = sorted({m for _, m in keys} | {m for _, m in cells})
    model_of = np.array([models.index(m) for _, m in keys], dtype=np.int64)
    run_names, run_of = np.unique(np.array(runs), return_inverse=True)
    blocks = [_Block.build(subtask, models, keys, z, penalty) for subtask in subtasks]
    intercepts = np.zeros(len(models))
    loadings = np.full(len(models), LOADING_PRIOR[0])
    y = outcome[:, None]
    previous = -math.inf

    def chances() -> NDArray[np.float64]:
        """P(pass) of every attempt at every node, at the current parameters."""
        eta = intercepts[model_of]
        for block in blocks:
            eta[block.rows] += block.design @ block.theta
        return _sigmoid(eta[:, None] - loadings[model_of][:, None] * _X[None, :])

    for _ in range(_ROUNDS):
        # E-step: each run's posterior over the nodes.
        p = chances()
        log_lik = y * np.log(np.clip(p, 1e-300, None)) + (1 - y) * np.log(np.clip(1 - p, 1e-300, None))
        per_run = np.zeros((len(run_names), NODES))
        np.add.at(per_run, run_of, log_lik)
        per_run += np.log(_W)[None, :]
        top = per_run.max(axis=1, keepdims=True)
        joint = np.exp(per_run - top)
        total = joint.sum(axis=1, keepdims=True)
        objective = float(np.sum(np.log(total) + top)) - sum(block.cost() for block in blocks)
        objective -= 0.5 * MODEL_PENALTY * float(np.sum(intercepts**2))
        objective -= 0.5 * LOADING_PRIOR[1] * float(np.sum((loadings - LOADING_PRIOR[0]) ** 2))
        posterior = (joint / total)[run_of]
        # M-step, one group of parameters after the other (the intercepts overlap).
        residual = np.sum(posterior * (p - y), axis=1)
        curvature = np.sum(posterior * p * (1 - p), axis=1)
        for block in blocks:
            block.newton(residual[block.rows], curvature[block.rows])
        p = chances()
        residual = np.sum(posterior * (p - y), axis=1)
        curvature = np.sum(posterior * p * (1 - p), axis=1)
        by_model = np.bincount(model_of, residual, len(models)) + MODEL_PENALTY * intercepts
        step = by_model / (np.bincount(model_of, curvature, len(models)) + MODEL_PENALTY)
        intercepts -= step
        p = chances()
        slope = np.sum(posterior * (y - p) * -_X[None, :], axis=1)
        bend = np.sum(posterior * p * (1 - p) * _X[None, :] ** 2, axis=1)
        mean, precision = LOADING_PRIOR
        step = (np.bincount(model_of, slope, len(models)) - precision * (loadings - mean)) / (
            np.bincount(model_of, bend, len(models)) + precision
        )
        loadings = np.clip(loadings + step, 0.0, MAX_LOADING)
        if abs(objective - previous) < _TOLERANCE * max(1, n):
            break
        previous = objective
    shared: dict[str, tuple[float, ...]] = {}
    weights: dict[tuple[str, str], tuple[float, ...]] = {}
    for block in blocks:
        shared[block.subtask] = tuple(float(x) for x in block.theta[1 : 1 + width])
    for subtask, model in cells:
        block = blocks[subtasks.index(subtask)]
        i = models.index(model)
        start = 1 + width + i * (width + 1)
        own = block.theta[start : start + width + 1]
        intercept = float(block.theta[0] + intercepts[i] + own[0])
        weights[(subtask, model)] = (intercept, *(float(x) for x in own[1:]))
    return SuccessFit(
        shared=shared, weights=weights, loadings={m: float(loadings[i]) for i, m in enumerate(models)}
    )


@dataclass
class _Block:
    """One subtask's attempts: columns [1 | shared z | per model: 1, z] and their penalties."""

    subtask: str
    rows: NDArray[np.int64]
    design: NDArray[np.float64]
    penalties: NDArray[np.float64]
    theta: NDArray[np.float64]

    @classmethod
    def build(
        cls,
        subtask: str,
        models: Sequence[str],
        keys: Sequence[tuple[str, str]],
        z: NDArray[np.float64],
        penalty: float,
    ) -> _Block:
        rows = np.array([i for i, (s, _) in enumerate(keys) if s == subtask], dtype=np.int64)
        width = z.shape[1]
        mine = z[rows]
        design = np.zeros((len(rows), 1 + width + len(models) * (width + 1)))
        design[:, 0] = 1.0
        design[:, 1 : 1 + width] = mine
        penalties = np.full(design.shape[1], penalty)
        penalties[0] = SUBTASK_PENALTY
        for i, model in enumerate(models):
            own = np.array([keys[r][1] == model for r in rows], dtype=bool)
            start = 1 + width + i * (width + 1)
            if len(rows):
                design[own, start] = 1.0
                design[own, start + 1 : start + 1 + width] = mine[own]
            penalties[start] = INTERACTION_PENALTY
        return cls(subtask, rows, design, penalties, np.zeros(design.shape[1]))

    def cost(self) -> float:
        return 0.5 * float(np.sum(self.penalties * self.theta**2))

    def newton(self, residual: NDArray[np.float64], curvature: NDArray[np.float64]) -> None:
        """One penalized Newton step on the expected log-likelihood."""
        grad = self.design.T @ residual + self.penalties * self.theta
        hessian = (self.design * curvature[:, None]).T @ self.design + np.diag(self.penalties)
        self.theta = self.theta - np.linalg.solve(hessian, grad)


def _sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 0.5 * (1 + np.tanh(np.clip(x, -60, 60) / 2))
    return out


def loadings_of(loadings: Mapping[str, float], models: Sequence[str]) -> NDArray[np.float64]:
    """The loading of each model in `models` (0 for a model fitted without one)."""
    return np.array([loadings.get(m, 0.0) for m in models], dtype=np.float64)
