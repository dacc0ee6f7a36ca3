"""The learned estimator: per input, how likely one attempt passes, how long it writes, how long it takes.

`fit_estimator` turns recorded attempts (`storage.extract_examples`) into an
`EstimatorArtifact` (plain JSON, loadable with numpy alone); `LearnedEstimator` is the
`orchestrator.Estimator` that answers from it. docs/learning.md ("The learned estimator")
explains the choices; in short:

- **Features**, the same at training and decision time: `log1p` of each run input's size
  in characters, `log1p` of the prompt's tokens, and the top principal directions of the
  embedding of the rendered prompt (`prompt_text`) when an embedder is set. They are
  standardized with the training means and standard deviations; a missing feature (the
  prompt not yet counted, not recorded) takes the training mean, i.e. it moves nothing.
- **Success**: a logistic model with a hidden difficulty per input shared by the run's
  attempts (`storage._input_effect`): subtask, model and cell intercepts, feature weights
  per subtask and per cell, a loading per model, fitted by marginal likelihood (EM). The
  attempts a run makes after failures are on inputs it has shown hard, and the models it
  escalates to are tried mostly there; the shared difficulty accounts for both, and a
  fresh input's probability averages over it. The features' penalty is picked from
  `PENALTIES` by log loss on the fresh attempts of a split of the training runs. A cell
  the model cannot answer for keeps its pooled estimate (`storage.pooled_estimates`).
- **Calibration**: Platt scaling of the log-odds, fitted on the held-out runs when they hold
  at least `MIN_CALIBRATION_VERDICTS` verdicts and there are features (else none). The model
  is then refitted on all runs and keeps that calibration.
- **Output tokens and latency** per cell: a ridge regression of the log value on the features
  around the pooled cell's lognormal, right-censored values (truncated outputs, cancelled
  attempts) handled by EM (a Tobit model), its spread from leave-one-out residuals.
- **Errors** (no verdict) count for no success or failure; **lost** attempts for nothing;
  a failure that stopped at its `max_tokens` says nothing of skill
  (`AttemptExample.skill_verdict`).
- **Fresh inputs.** The estimate is for a fresh input: the penalty, the calibration and
  the held-out metrics use each run's first verdict per subtask and model made before any
  failure of that subtask (`_fresh`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate, LogNormal
from orchestrator.estimator import RequestFeatures
from orchestrator.prompt_rendering import prompt_text
from storage._input_effect import SuccessFit, fit_success, loadings_of, marginal_logits
from storage.pooled_estimates import MARGIN_STRENGTH, PooledCell, pool_examples
from storage.training_data import AttemptExample, AttemptOutcome, Embedder

__all__ = [
    "CALIBRATION_PRIOR",
    "EMBEDDING_COMPONENTS",
    "FORMAT_VERSION",
    "MIN_CALIBRATION_VERDICTS",
    "MIN_HOLDOUT_RUNS",
    "MIN_MODEL_VERDICTS",
    "PENALTIES",
    "EstimatorArtifact",
    "FitMetrics",
    "HashingEmbedder",
    "LearnedEstimator",
    "TrainingWindow",
    "fit_estimator",
    "prompt_text",
]

FORMAT_VERSION = 2
"""Version of the artifact's JSON layout."""
PENALTIES = (1.0, 10.0, 100.0)
"""L2 penalties tried (on standardized features); the one with the best held-out fit is kept."""
DEFAULT_PENALTY = 10.0
"""Penalty used when too few runs are left to choose one."""
MIN_HOLDOUT_RUNS = 5
"""Fewer runs than this: no held-out split (everything trains; no metrics, no calibration)."""
MIN_CALIBRATION_VERDICTS = 40
"""Held-out verdicts needed to fit the calibration (fewer: the model's own probabilities)."""
CALIBRATION_PRIOR = 50.0
"""L2 penalty of the calibration's departure from the identity, in units of the log-likelihood's
curvature (a held-out verdict adds about p(1 − p)·logit², some 0.3)."""
MIN_SELECTION_VERDICTS = 20
"""Verdicts of the inner validation split needed to choose the success penalty."""
MIN_MODEL_VERDICTS = 3
"""Skill verdicts a model needs before the estimator answers for it (fewer: the run's priors).
From one or two verdicts, mostly where another model had failed, the model would only answer
that it is like the others."""
EMBEDDING_COMPONENTS = 8
"""Principal directions of the prompt embedding used as features (at most)."""
PROMPTS_PER_COMPONENT = 20
"""Distinct training prompts per direction kept (fewer prompts, fewer directions)."""
SPREAD_PRIOR_WEIGHT = 5.0
"""Pseudo-observations at the pooled spread added to a cell's residuals (few attempts: pooled spread)."""
_NEWTON_ROUNDS = 25
_EM_ROUNDS = 100
_SIGMA_FLOOR = 0.05
_LOGIT_CLIP = 1e-4
_ECE_BINS = 10
_EMBEDDING_CACHE = 1024
"""Prompts whose embeddings a `LearnedEstimator` keeps (each is asked about once per model)."""
_Z90 = 1.2815515655446004
"""The standard normal's 90th percentile."""


class HashingEmbedder:
    """A deterministic, offline `storage.Embedder`: word and word-pair counts hashed into `dim` buckets.

    Each lower-cased word and each pair of adjacent words adds ±1 to a bucket chosen by
    BLAKE2b of the token (the sign by another bit of it); the vector is scaled to unit
    length. The same text gives the same vector on any machine and Python version.
    """

    def __init__(self, dim: int = 256) -> None:
        if dim < 1:
            raise ConfigError(f"`HashingEmbedder` dim must be at least 1, got {dim}")
        self.dim = dim
        self.name = f"hashing-{dim}"
        self._slots: dict[str, tuple[int, float]] = {}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector (or zeros, for a text without words) per text, in order."""
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        words = re.findall(r"\w+", text.lower())
        vector = np.zeros(self.dim)
        for token in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
            slot = self._slots.get(token)
            if slot is None:
                digest = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "big")
                slot = self._slots[token] = (digest % self.dim, 1.0 if (digest >> 63) & 1 else -1.0)
            vector[slot[0]] += slot[1]
        norm = float(np.linalg.norm(vector))
        return [float(x) for x in (vector / norm if norm > 0 else vector)]


def _builtin_embedder(name: str) -> HashingEmbedder | None:
    found = re.fullmatch(r"hashing-(\d+)", name)
    return HashingEmbedder(int(found.group(1))) if found else None


@dataclass(frozen=True, kw_only=True)
class TrainingWindow:
    """What an artifact was trained on."""

    runs: int
    """Runs with at least one example."""
    examples: int
    """Examples (attempts) of the workflow, lost ones included."""
    first_run_started_at: datetime | None
    """Start of the oldest run (`None`: no runs)."""
    last_run_started_at: datetime | None
    """Start of the newest run."""
    include_simulated: bool
    """Simulated runs were among them."""


@dataclass(frozen=True, kw_only=True)
class FitMetrics:
    """How the model did on held-out runs (each `None` when there was nothing to measure)."""

    auroc: float | None
    """Area under the ROC curve of the success probabilities (0.5: no better than a coin)."""
    brier: float | None
    """Mean squared error of the success probabilities."""
    ece: float | None
    """Expected calibration error: |mean predicted − pass rate| over 10 equal-width bins, weighted."""
    output_tokens_mae: float | None
    """Mean absolute error of the predicted median output tokens (uncensored outputs)."""
    output_tokens_p90_coverage: float | None
    """Share of held-out outputs at or below the predicted 90th percentile (0.9 is right)."""
    latency_p90_coverage: float | None
    """Share of held-out latencies at or below the predicted 90th percentile."""
    n_holdout: int
    """Held-out attempts with a verdict (what the success metrics are computed on)."""
    n_holdout_runs: int = 0
    """Held-out runs."""


@dataclass(frozen=True, kw_only=True)
class _Quantity:
    """A positive quantity of one cell: log value ~ Normal(base + w · [1, z], sigma)."""

    base: float
    sigma: float
    weights: tuple[float, ...] | None

    def log_median(self, z: NDArray[np.float64]) -> float:
        return self.base + (0.0 if self.weights is None else _affine(self.weights, z))

    def distribution(self, z: NDArray[np.float64]) -> LogNormal:
        mean = math.exp(min(700.0, self.log_median(z) + self.sigma**2 / 2))
        return LogNormal(mean=mean, std=mean * math.sqrt(math.expm1(self.sigma**2)))

    def score(self, z: NDArray[np.float64], value: float) -> float:
        """How many spreads `value` lies above the median (its standard normal score)."""
        return (math.log(max(value, 1e-6)) - self.log_median(z)) / self.sigma


@dataclass(frozen=True, kw_only=True)
class _Cell:
    """One (subtask, model): the pooled base and what the features add."""

    subtask: str
    model: str
    pooled_success: float
    evidence: float
    """How many attempts the success belief weighs: the pooled prior's strength (at most the
    verdicts of its model plus the margins' strength) plus the cell's fresh verdicts (what
    exploration draws around it with, `orchestrator.ThompsonEstimator`)."""
    success_weights: tuple[float, ...] | None
    output_tokens: _Quantity | None
    latency_s: _Quantity | None
    input_tokens: int | None


@dataclass(frozen=True, kw_only=True)
class _Params:
    """The fitted model."""

    inputs: tuple[str, ...]
    prompt_tokens: bool
    embedding_dim: int
    projection: tuple[tuple[float, ...], ...]
    """The embedding's principal directions (rows), from the training prompts (`EMBEDDING_COMPONENTS`)."""
    embedding_center: tuple[float, ...]
    """The training prompts' mean embedding (what the directions are measured from)."""
    center: tuple[float, ...]
    scale: tuple[float, ...]
    penalty: float
    calibration: tuple[float, float] | None
    shared: Mapping[str, tuple[float, ...]]
    loadings: Mapping[str, float]
    """Model -> λ_m, how its log-odds fall with an input's hidden difficulty (`storage._input_effect`)."""
    cells: tuple[_Cell, ...]


@dataclass(frozen=True, kw_only=True)
class EstimatorArtifact:
    """A fitted estimator of one workflow, as saved and loaded (`to_json`, `from_json`)."""

    workflow: str
    """Workflow it answers for."""
    format_version: int
    """Version of the JSON layout (`FORMAT_VERSION`)."""
    version: int | None
    """Version assigned by the artifact store on save (`None` before)."""
    created_at: datetime
    """When it was fitted (UTC)."""
    data: TrainingWindow
    """What it was trained on."""
    features: tuple[str, ...]
    """Names of the feature columns: `input_chars:<name>`, `prompt_tokens`, `embedding_pc:<i>`."""
    embedder: str | None
    """Name of the embedder of the prompts (`None`: no embedding feature)."""
    metrics: FitMetrics
    """Held-out metrics."""
    params: _Params = field(repr=False)
    """The fitted model (read it through `LearnedEstimator`)."""

    def to_json(self) -> str:
        """The artifact as JSON (floats kept exactly)."""
        body = {
            "workflow": self.workflow,
            "format_version": self.format_version,
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "data": {
                **asdict(self.data),
                "first_run_started_at": _iso(self.data.first_run_started_at),
                "last_run_started_at": _iso(self.data.last_run_started_at),
            },
            "features": list(self.features),
            "embedder": self.embedder,
            "metrics": asdict(self.metrics),
            "params": asdict(self.params),
        }
        return json.dumps(body, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EstimatorArtifact:
        """An artifact from `to_json`'s text.

        Raises:
            ConfigError: not an artifact, or one of a layout this version cannot read.
        """
        try:
            body = json.loads(text)
            if body["format_version"] != FORMAT_VERSION:
                raise ConfigError(
                    f"the estimator artifact has layout version {body['format_version']}; this version of"
                    f" budgetflow reads {FORMAT_VERSION}: train it again with `budgetflow train`"
                )
            data = body["data"]
            p = body["params"]
            params = _Params(
                inputs=tuple(p["inputs"]),
                prompt_tokens=bool(p["prompt_tokens"]),
                embedding_dim=int(p["embedding_dim"]),
                projection=tuple(tuple(float(x) for x in row) for row in p["projection"]),
                embedding_center=tuple(float(x) for x in p["embedding_center"]),
                center=tuple(p["center"]),
                scale=tuple(p["scale"]),
                penalty=float(p["penalty"]),
                calibration=None if p["calibration"] is None else (p["calibration"][0], p["calibration"][1]),
                shared={s: tuple(w) for s, w in p["shared"].items()},
                loadings={m: float(x) for m, x in p["loadings"].items()},
                cells=tuple(
                    _Cell(
                        subtask=c["subtask"],
                        model=c["model"],
                        pooled_success=c["pooled_success"],
                        evidence=float(c.get("evidence", 0.0)),
                        success_weights=_floats(c["success_weights"]),
                        output_tokens=_quantity(c["output_tokens"]),
                        latency_s=_quantity(c["latency_s"]),
                        input_tokens=c["input_tokens"],
                    )
                    for c in p["cells"]
                ),
            )
            return cls(
                workflow=body["workflow"],
                format_version=body["format_version"],
                version=body["version"],
                created_at=datetime.fromisoformat(body["created_at"]),
                data=TrainingWindow(
                    **{
                        **data,
                        "first_run_started_at": _from_iso(data["first_run_started_at"]),
                        "last_run_started_at": _from_iso(data["last_run_started_at"]),
                    }
                ),
                features=tuple(body["features"]),
                embedder=body["embedder"],
                metrics=FitMetrics(**body["metrics"]),
                params=params,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not an estimator artifact: {exc!r}") from exc


class LearnedEstimator:
    """The `orchestrator.Estimator` of a fitted artifact: per request, from its features."""

    def __init__(self, artifact: EstimatorArtifact, *, embedder: Embedder | None = None) -> None:
        """Args:
        artifact: the fitted estimator.
        embedder: embeds decision-time prompts; must be the one the artifact was trained with
            (`None`: rebuilt from `artifact.embedder` when it is built in, `hashing-<dim>`).

        Raises:
            ConfigError: the artifact embeds prompts and no embedder can be had.
        """
        self.artifact = artifact
        params = artifact.params
        if embedder is None and artifact.embedder is not None and params.embedding_dim:
            embedder = _builtin_embedder(artifact.embedder)
            if embedder is None:
                raise ConfigError(
                    f"the estimator was trained with the embedder `{artifact.embedder}`; pass the same"
                    " embedder as `LearnedEstimator(artifact, embedder=...)`"
                )
        self._embedder = embedder
        self._cells = {(c.subtask, c.model): c for c in params.cells}
        self._center = np.array(params.center)
        self._scale = np.array(params.scale)
        self._params = params
        self._pooled = {(c.subtask, c.model): c.pooled_success for c in params.cells}
        self._weights = {
            (c.subtask, c.model): c.success_weights for c in params.cells if c.success_weights is not None
        }
        self._embeddings: dict[str, tuple[float, ...]] = {}
        self._basis = _Basis.of(params)

    @property
    def label(self) -> str:
        """What a run's record names it (`orchestrator.describe_beliefs`): `trained v<version>`."""
        version = self.artifact.version
        return "trained (unsaved)" if version is None else f"trained v{version}"

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        """The belief about one attempt (`None`: another workflow, or a cell it knows nothing of)."""
        if workflow != self.artifact.workflow:
            return None
        cell = self._cells.get((subtask, model))
        if cell is None or cell.output_tokens is None or cell.latency_s is None:
            return None
        z = self._standardized(features)
        tokens = features.prompt_tokens if features.prompt_tokens is not None else cell.input_tokens
        found = AttemptEstimate(
            success_prob=self._success(cell, z),
            output_tokens=cell.output_tokens.distribution(z),
            latency_s=cell.latency_s.distribution(z),
        )
        return found if tokens is None else replace(found, input_tokens=tokens)

    def evidence(self, subtask: str, model: str) -> float | None:
        """How many attempts the success belief of (subtask, model) weighs (`None`: an unknown cell):
        its pooled prior's strength (at most the verdicts its model's rate rests on) plus its
        fresh verdicts."""
        cell = self._cells.get((subtask, model))
        return None if cell is None else cell.evidence

    def success_probability(self, subtask: str, model: str, features: RequestFeatures) -> float | None:
        """The calibrated probability that one attempt passes (`None`: an unknown cell)."""
        cell = self._cells.get((subtask, model))
        return None if cell is None else self._success(cell, self._standardized(features))

    def _success(self, cell: _Cell, z: NDArray[np.float64]) -> float:
        key = (cell.subtask, cell.model)
        logit = float(
            _fresh_logits(
                [key], z[None, :], self._pooled, self._params.shared, self._weights, self._params.loadings
            )[0]
        )
        calibration = self._params.calibration
        if calibration is not None:
            logit = calibration[0] * logit + calibration[1]
        return _sigmoid(logit)

    def _standardized(self, features: RequestFeatures) -> NDArray[np.float64]:
        embedding = None
        if self.artifact.params.embedding_dim and features.prompt_text is not None and self._embedder:
            embedding = self._embeddings.get(features.prompt_text)
            if embedding is None:
                if len(self._embeddings) >= _EMBEDDING_CACHE:
                    self._embeddings.clear()  # one run asks about few prompts; a server, many runs
                vector = self._embedder.embed([features.prompt_text])[0]
                embedding = self._embeddings[features.prompt_text] = tuple(float(x) for x in vector)
        raw = _raw_features(
            self.artifact.params, self._basis, features.input_chars, features.prompt_tokens, embedding
        )
        z: NDArray[np.float64] = _standardize(raw[None, :], self._center, self._scale)[0]
        return z


def fit_estimator(
    examples: Sequence[AttemptExample],
    *,
    workflow: str,
    embedder: Embedder | None = None,
    holdout_fraction: float = 0.2,
    seed: int = 0,
) -> EstimatorArtifact:
    """Fit the learned estimator of `workflow` to its recorded attempts.

    Args:
        examples: from `storage.extract_examples` (other workflows' examples are ignored);
            with `embedder=` there when the prompts' embeddings are to be features.
        workflow: the workflow it answers for.
        embedder: the embedder the examples' embeddings came from (its `name`, e.g.
            `hashing-256`, is recorded); `None`: the embeddings are not used.
        holdout_fraction: share of the runs (chosen at random by `seed`) held out to
            calibrate and measure; no split below `MIN_HOLDOUT_RUNS` runs.
        seed: seed of the splits.

    Raises:
        ConfigError: `holdout_fraction` outside [0, 1).
    """
    if not 0 <= holdout_fraction < 1:
        raise ConfigError(f"`holdout_fraction` must be in [0, 1), got {holdout_fraction}")
    ours = [e for e in examples if e.workflow == workflow and e.outcome is not AttemptOutcome.LOST]
    params = _layout(ours, embedder is not None)
    matrix = _standardize(_matrix(params, ours), np.array(params.center), np.array(params.scale))
    rows = {e.attempt_id: i for i, e in enumerate(ours)}
    earlier = _earlier_failures(ours)
    held = _split_runs(ours, holdout_fraction, seed)
    rng = np.random.default_rng(seed)
    metrics = FitMetrics(
        auroc=None,
        brier=None,
        ece=None,
        output_tokens_mae=None,
        output_tokens_p90_coverage=None,
        latency_p90_coverage=None,
        n_holdout=0,
    )
    calibration: tuple[float, float] | None = None
    if held:
        train = [e for e in ours if e.run_id not in held]
        test = [e for e in ours if e.run_id in held]
        fitted = _fit(workflow, params, train, matrix, rows, earlier, rng)
        calibration, metrics = _holdout(fitted, test, matrix, rows, earlier, len(held), rng)
    final = replace(_fit(workflow, params, ours, matrix, rows, earlier, rng), calibration=calibration)
    starts = [e.run_started_at for e in ours]
    return EstimatorArtifact(
        workflow=workflow,
        format_version=FORMAT_VERSION,
        version=None,
        created_at=datetime.now(UTC),
        data=TrainingWindow(
            runs=len({e.run_id for e in ours}),
            examples=sum(1 for e in examples if e.workflow == workflow),
            first_run_started_at=min(starts) if starts else None,
            last_run_started_at=max(starts) if starts else None,
            include_simulated=any(e.simulated for e in ours),
        ),
        features=_feature_names(params),
        embedder=None if embedder is None or not params.embedding_dim else _embedder_name(embedder),
        metrics=metrics,
        params=final,
    )


# --- features ---------------------------------------------------------------------------------


def _layout(examples: Sequence[AttemptExample], embed: bool) -> _Params:
    """Which features exist, and their training means and spreads."""
    dims = {len(e.embedding) for e in examples if e.embedding is not None} if embed else set()
    embedding_dim = max(dims) if len(dims) == 1 else 0
    projection, embedding_center = _principal_directions(examples, embedding_dim)
    params = _Params(
        inputs=tuple(sorted({name for e in examples for name in e.input_chars})),
        prompt_tokens=any(e.prompt_tokens is not None for e in examples),
        embedding_dim=embedding_dim if projection else 0,
        projection=projection,
        embedding_center=embedding_center,
        center=(),
        scale=(),
        penalty=DEFAULT_PENALTY,
        calibration=None,
        shared={},
        loadings={},
        cells=(),
    )
    raw = _matrix(params, examples)
    seen = ~np.isnan(raw)
    counts = seen.sum(axis=0)
    filled = np.where(seen, raw, 0.0)
    center = np.divide(filled.sum(axis=0), counts, out=np.zeros(raw.shape[1]), where=counts > 0)
    spread = np.sqrt(
        np.divide(
            (np.where(seen, raw - center, 0.0) ** 2).sum(axis=0),
            counts,
            out=np.zeros(raw.shape[1]),
            where=counts > 0,
        )
    )
    scale = np.where(spread > 1e-12, spread, 1.0)
    return replace(params, center=tuple(float(x) for x in center), scale=tuple(float(x) for x in scale))


def _principal_directions(
    examples: Sequence[AttemptExample], dim: int
) -> tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]:
    """The top principal directions of the distinct prompts' embeddings and their mean.

    A raw embedding has hundreds of dimensions and a workflow's history a few hundred inputs:
    per-model weights on every dimension would fit each input's own luck (the part of its
    difficulty nothing shows) and answer over-confidently. Its main directions keep what
    separates kinds of prompts; `EMBEDDING_COMPONENTS` of them, at most one per
    `PROMPTS_PER_COMPONENT` distinct prompts."""
    if not dim:
        return (), ()
    distinct = {e.embedding for e in examples if e.embedding is not None and len(e.embedding) == dim}
    count = min(EMBEDDING_COMPONENTS, len(distinct) // PROMPTS_PER_COMPONENT, dim)
    if count < 1:
        return (), ()
    matrix = np.array(sorted(distinct), dtype=np.float64)
    center = matrix.mean(axis=0)
    _, _, directions = np.linalg.svd(matrix - center, full_matrices=False)
    top = directions[:count]
    # A direction's sign is arbitrary: fix it so that the same prompts give the same artifact.
    signs = np.where(top[np.arange(count), np.argmax(np.abs(top), axis=1)] < 0, -1.0, 1.0)
    top = top * signs[:, None]
    return tuple(tuple(float(x) for x in row) for row in top), tuple(float(x) for x in center)


def _feature_names(params: _Params) -> tuple[str, ...]:
    return (
        *(f"input_chars:{name}" for name in params.inputs),
        *(("prompt_tokens",) if params.prompt_tokens else ()),
        *(f"embedding_pc:{i}" for i in range(len(params.projection))),
    )


@dataclass(frozen=True)
class _Basis:
    """The embedding's principal directions and mean as arrays (made once, not per request)."""

    directions: NDArray[np.float64]
    center: NDArray[np.float64]

    @classmethod
    def of(cls, params: _Params) -> _Basis:
        return cls(np.array(params.projection, dtype=np.float64), np.array(params.embedding_center))


def _raw_features(
    params: _Params,
    basis: _Basis,
    input_chars: Mapping[str, int],
    prompt_tokens: int | None,
    embedding: Sequence[float] | None,
) -> NDArray[np.float64]:
    """One request's features before standardizing (NaN: missing)."""
    values = [math.log1p(input_chars[n]) if n in input_chars else math.nan for n in params.inputs]
    if params.prompt_tokens:
        values.append(math.nan if prompt_tokens is None else math.log1p(prompt_tokens))
    if params.projection:
        if embedding is not None and len(embedding) == params.embedding_dim:
            values.extend(basis.directions @ (np.asarray(embedding, dtype=np.float64) - basis.center))
        else:
            values.extend([math.nan] * len(params.projection))
    return np.array(values, dtype=np.float64)


def _matrix(params: _Params, examples: Sequence[AttemptExample]) -> NDArray[np.float64]:
    width = len(params.inputs) + int(params.prompt_tokens) + len(params.projection)
    basis = _Basis.of(params)
    rows = [_raw_features(params, basis, e.input_chars, e.prompt_tokens, e.embedding) for e in examples]
    return np.array(rows, dtype=np.float64).reshape(len(examples), width)


def _standardize(
    raw: NDArray[np.float64], center: NDArray[np.float64], scale: NDArray[np.float64]
) -> NDArray[np.float64]:
    """(x − mean) / std, with a missing value at the mean (0)."""
    z = (raw - center) / scale
    return np.where(np.isnan(z), 0.0, z)


def _earlier_failures(examples: Sequence[AttemptExample]) -> dict[str, int]:
    """Per attempt, the failed skill verdicts of its subtask in its run's earlier batches.

    A batch starts only when the one before it failed whole, so an attempt after failures is
    made on an input already shown to be hard: such attempts are many (hard inputs are tried
    again and again) and fail more than a fresh input's would. Only attempts with none are
    fresh (`_fresh`): what scores and calibrates the answers for fresh inputs.
    """
    failed: defaultdict[tuple[str, str], defaultdict[int, int]] = defaultdict(lambda: defaultdict(int))
    for e in examples:
        if e.skill_verdict is False:
            failed[(e.run_id, e.subtask)][e.batch] += 1
    return {
        e.attempt_id: sum(n for batch, n in failed[(e.run_id, e.subtask)].items() if batch < e.batch)
        for e in examples
    }


def _fresh(examples: Sequence[AttemptExample], earlier: Mapping[str, int]) -> list[AttemptExample]:
    """One verdict per fresh input and model: of each (run, subtask, model)'s attempts with a skill
    verdict and no earlier failure of their subtask, the one that ended first.

    The samples of a batch start together and race: those that end before the first pass get
    a verdict, the rest are cancelled. Counting every verdict would weigh a hard input by
    its many failures; the first to end is one draw of the input's odds, assuming how long an
    attempt takes does not depend on whether it passes: a fair sample of fresh inputs.
    """
    first: dict[tuple[str, str, str], AttemptExample] = {}
    for e in examples:
        if e.skill_verdict is None or earlier[e.attempt_id] or e.latency_s is None:
            continue
        key = (e.run_id, e.subtask, e.model)
        seen = first.get(key)
        if seen is None or (e.batch, e.latency_s) < (seen.batch, seen.latency_s or 0.0):
            first[key] = e
    return list(first.values())


def _split_runs(examples: Sequence[AttemptExample], fraction: float, seed: int) -> set[str]:
    """The held-out runs: a seeded random `fraction` of them (none below `MIN_HOLDOUT_RUNS`)."""
    runs = sorted({e.run_id for e in examples})
    if len(runs) < MIN_HOLDOUT_RUNS or fraction <= 0:
        return set()
    order = np.random.default_rng(seed).permutation(len(runs))
    count = max(1, round(fraction * len(runs)))
    return {runs[i] for i in order[:count]}


# --- fitting -----------------------------------------------------------------------------------


def _fit(
    workflow: str,
    layout: _Params,
    examples: Sequence[AttemptExample],
    matrix: NDArray[np.float64],
    rows: Mapping[str, int],
    earlier: Mapping[str, int],
    rng: np.random.Generator,
) -> _Params:
    """Pooled base per cell, then success, tokens and latency on the features."""
    pooled = pool_examples(examples)
    subtasks = sorted({e.subtask for e in examples})
    models = sorted({e.model for e in examples})
    base: dict[tuple[str, str], PooledCell] = {}
    for subtask in subtasks:
        for model in models:
            cell = pooled.cell(workflow, subtask, model)
            if cell is not None:
                base[(subtask, model)] = cell
    # A model with too few verdicts has no success rate to learn: no answer (the run's priors apply).
    verdicts_of = Counter(e.model for e in examples if e.skill_verdict is not None)
    base = {key: cell for key, cell in base.items() if verdicts_of[key[1]] >= MIN_MODEL_VERDICTS}
    # The pooled fallback is a fresh input's where fresh attempts exist (see `_earlier_failures`).
    fresh = pool_examples(_fresh(examples, earlier))
    model_verdicts: defaultdict[str, int] = defaultdict(int)
    for (_, model), cell in base.items():
        model_verdicts[model] += cell.verdicts
    evidence: dict[tuple[str, str], float] = {}
    for (subtask, model), cell in base.items():
        # The prior weighs no more than the verdicts its model's rate rests on.
        prior = min(cell.strength, model_verdicts[model] + MARGIN_STRENGTH)
        evidence[(subtask, model)] = prior
        fresh_cell = fresh.cell(workflow, subtask, model)
        if fresh_cell is not None and fresh_cell.verdicts:
            base[(subtask, model)] = replace(cell, success_prob=fresh_cell.success_prob)
            evidence[(subtask, model)] = prior + fresh_cell.verdicts
    by_cell: defaultdict[tuple[str, str], list[AttemptExample]] = defaultdict(list)
    for e in examples:
        by_cell[(e.subtask, e.model)].append(e)
    penalty = _choose_success_penalty(examples, base, matrix, rows, earlier, rng)
    success = _fit_success(examples, base, matrix, rows, penalty)
    cells = []
    for (subtask, model), pooled_cell in sorted(base.items()):
        own = by_cell.get((subtask, model), [])
        judged = [e for e in own if e.success is not None]
        timed = [e for e in own if e.latency_observed and e.latency_s is not None]
        cells.append(
            _Cell(
                subtask=subtask,
                model=model,
                pooled_success=pooled_cell.success_prob,
                evidence=evidence[(subtask, model)],
                success_weights=success.weights.get((subtask, model)) if success else None,
                output_tokens=_fit_quantity(
                    pooled_cell.output_tokens,
                    matrix[[rows[e.attempt_id] for e in judged]],
                    [float(max(1, e.output_tokens)) for e in judged],
                    [e.truncated for e in judged],
                ),
                latency_s=_fit_quantity(
                    pooled_cell.latency_s,
                    matrix[[rows[e.attempt_id] for e in timed]],
                    [max(1e-3, e.latency_s or 0.0) for e in timed],
                    [e.censored for e in timed],
                ),
                input_tokens=pooled_cell.input_tokens,
            )
        )
    return replace(
        layout,
        penalty=penalty,
        shared=success.shared if success else {},
        loadings=success.loadings if success else {},
        cells=tuple(cells),
    )


def _fit_success(
    examples: Sequence[AttemptExample],
    base: Mapping[tuple[str, str], PooledCell],
    matrix: NDArray[np.float64],
    rows: Mapping[str, int],
    penalty: float,
) -> SuccessFit | None:
    """The success model (`storage._input_effect`) on every skill verdict, answering for every cell
    of `base` (`None`: no verdicts)."""
    judged = [e for e in examples if e.skill_verdict is not None and (e.subtask, e.model) in base]
    if not judged:
        return None
    return fit_success(
        [(e.subtask, e.model) for e in judged],
        [e.run_id for e in judged],
        matrix[[rows[e.attempt_id] for e in judged]],
        np.array([1.0 if e.skill_verdict else 0.0 for e in judged]),
        penalty,
        sorted(base),
    )


def _choose_success_penalty(
    examples: Sequence[AttemptExample],
    base: Mapping[tuple[str, str], PooledCell],
    matrix: NDArray[np.float64],
    rows: Mapping[str, int],
    earlier: Mapping[str, int],
    rng: np.random.Generator,
) -> float:
    """The penalty of `PENALTIES` with the lowest log loss on the fresh attempts of a split of the
    runs (else the default; the default too without features)."""
    runs = sorted({e.run_id for e in examples})
    if matrix.shape[1] == 0 or len(runs) < 2 * MIN_HOLDOUT_RUNS:
        return DEFAULT_PENALTY
    valid = {runs[i] for i in rng.permutation(len(runs))[: max(1, len(runs) // 4)]}
    fit_on = [e for e in examples if e.run_id not in valid]
    judged = [e for e in _fresh(examples, earlier) if e.run_id in valid and (e.subtask, e.model) in base]
    if len(judged) < MIN_SELECTION_VERDICTS:
        return DEFAULT_PENALTY
    keys = [(e.subtask, e.model) for e in judged]
    z = matrix[[rows[e.attempt_id] for e in judged]]
    outcome = np.array([1.0 if e.skill_verdict else 0.0 for e in judged])
    pooled = {key: cell.success_prob for key, cell in base.items()}
    losses = []
    for penalty in PENALTIES:
        found = _fit_success(fit_on, base, matrix, rows, penalty)
        if found is None:
            return DEFAULT_PENALTY
        logits = _fresh_logits(keys, z, pooled, found.shared, found.weights, found.loadings)
        p = 1 / (1 + np.exp(-logits))
        losses.append(-float(np.sum(np.log(np.clip(np.where(outcome == 1, p, 1 - p), 1e-12, None)))))
    return PENALTIES[int(np.argmin(losses))]


def _fresh_logits(
    keys: Sequence[tuple[str, str]],
    z: NDArray[np.float64],
    pooled: Mapping[tuple[str, str], float],
    shared: Mapping[str, tuple[float, ...]],
    weights: Mapping[tuple[str, str], tuple[float, ...]],
    loadings: Mapping[str, float],
) -> NDArray[np.float64]:
    """The uncalibrated log-odds of requests on fresh inputs: `_success_logits` averaged over the
    input's hidden difficulty."""
    conditional = _success_logits(keys, z, pooled, shared, weights)
    return marginal_logits(conditional, loadings_of(loadings, [m for _, m in keys]))


def _success_logits(
    keys: Sequence[tuple[str, str]],
    z: NDArray[np.float64],
    pooled: Mapping[tuple[str, str], float],
    shared: Mapping[str, tuple[float, ...]],
    weights: Mapping[tuple[str, str], tuple[float, ...]],
) -> NDArray[np.float64]:
    """The uncalibrated log-odds of requests (`keys[i]` = (subtask, model), `z[i]` its features) on an
    input of average difficulty: `b_sm + v_sm · z + w_s · z` (`storage._input_effect`), or the
    pooled cell's log-odds for a cell the success model has no weights for."""
    logits = np.empty(len(keys))
    width = z.shape[1]
    for key in set(keys):
        mine = np.array([k == key for k in keys])
        own = weights.get(key)
        if own is None:
            logits[mine] = _logit(pooled[key])
            continue
        common = shared.get(key[0])
        logits[mine] = own[0] + (z[mine] @ np.array(own[1:]) if width else 0.0)
        if common is not None and width:
            logits[mine] += z[mine] @ np.array(common)
    return logits


def _logistic(
    design: NDArray[np.float64], offset: NDArray[np.float64], outcome: NDArray[np.float64], penalty: float
) -> NDArray[np.float64]:
    """L2-penalized logistic regression with a fixed offset, by Newton's method (`outcome` in [0, 1])."""
    theta = np.zeros(design.shape[1])
    ridge = penalty * np.eye(design.shape[1])
    for _ in range(_NEWTON_ROUNDS):
        p = 1 / (1 + np.exp(-np.clip(offset + design @ theta, -30, 30)))
        gradient = design.T @ (p - outcome) + penalty * theta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + ridge
        step = np.linalg.solve(hessian, gradient)
        theta -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return theta


def _fit_quantity(
    pooled: LogNormal | None, z: NDArray[np.float64], values: Sequence[float], censored: Sequence[bool]
) -> _Quantity | None:
    """A cell's log value: the pooled lognormal, moved by the features when the cell has data."""
    if pooled is None:
        return None
    sigma0 = math.sqrt(math.log1p((pooled.std / pooled.mean) ** 2))
    base = math.log(pooled.mean) - sigma0**2 / 2
    sigma0 = max(_SIGMA_FLOOR, sigma0)
    if not values or z.shape[1] == 0:
        return _Quantity(base=base, sigma=sigma0, weights=None)
    design = np.hstack([np.ones((len(values), 1)), z])
    target = np.log(np.array(values)) - base
    flags = np.array(censored, dtype=bool)
    best: tuple[float, NDArray[np.float64], float] | None = None
    for penalty in PENALTIES:
        theta, sigma, press = _censored_ridge(design, target, flags, sigma0, penalty)
        if best is None or press < best[0]:
            best = (press, theta, sigma)
    assert best is not None
    return _Quantity(base=base, sigma=best[2], weights=tuple(float(x) for x in best[1]))


def _censored_ridge(
    design: NDArray[np.float64],
    target: NDArray[np.float64],
    censored: NDArray[np.bool_],
    sigma0: float,
    penalty: float,
) -> tuple[NDArray[np.float64], float, float]:
    """Ridge regression of `target` with right-censored rows by EM (Tobit): weights, spread, PRESS.

    Each round replaces a censored value by its conditional mean above its bound under the
    current fit. The spread uses leave-one-out residuals of the uncensored rows (overfitting
    cannot make it look small) and `SPREAD_PRIOR_WEIGHT` pseudo-rows at the pooled spread.
    """
    n = len(target)
    inverse = np.linalg.inv(design.T @ design + penalty * np.eye(design.shape[1]))
    leverage = np.sum((design @ inverse) * design, axis=1)
    theta = np.zeros(design.shape[1])
    sigma = sigma0
    filled = target.copy()
    second = np.zeros(n)
    for _ in range(_EM_ROUNDS if censored.any() else 1):
        fit = design @ theta
        if censored.any():
            alpha = (target[censored] - fit[censored]) / sigma
            hazard = _hazard(alpha)
            filled[censored] = fit[censored] + sigma * hazard
            second[censored] = sigma**2 * (1 + alpha * hazard - hazard**2)
        new_theta = inverse @ (design.T @ filled)
        residual = filled - design @ new_theta
        loo = residual / np.maximum(1e-6, 1 - leverage)
        squares = np.where(censored, residual**2 + second, loo**2)
        new_sigma = max(
            _SIGMA_FLOOR,
            math.sqrt((float(squares.sum()) + SPREAD_PRIOR_WEIGHT * sigma0**2) / (n + SPREAD_PRIOR_WEIGHT)),
        )
        done = float(np.max(np.abs(new_theta - theta))) < 1e-9 and abs(new_sigma - sigma) < 1e-9
        theta, sigma = new_theta, new_sigma
        if done:
            break
    residual = filled - design @ theta
    loo = residual / np.maximum(1e-6, 1 - leverage)
    observed = ~censored
    press = float(np.mean(loo[observed] ** 2)) if observed.any() else 0.0
    return theta, sigma, press


# --- held-out calibration and metrics ------------------------------------------------------------


def _holdout(
    fitted: _Params,
    test: Sequence[AttemptExample],
    matrix: NDArray[np.float64],
    rows: Mapping[str, int],
    earlier: Mapping[str, int],
    runs: int,
    rng: np.random.Generator,
) -> tuple[tuple[float, float] | None, FitMetrics]:
    """The calibration from the held-out runs, and the metrics of the calibrated model on them.

    The metrics are cross-fitted: the held-out runs are halved, each half scored with the
    calibration fitted on the other, so the calibration is never judged on its own data.
    Without feature columns there is no calibration: the pooled estimates are the answer.
    """
    cells = {(c.subtask, c.model): c for c in fitted.cells}
    judged = [e for e in _fresh(test, earlier) if (e.subtask, e.model) in cells]
    logits = _fresh_logits(
        [(e.subtask, e.model) for e in judged],
        matrix[[rows[e.attempt_id] for e in judged]],
        {key: c.pooled_success for key, c in cells.items()},
        fitted.shared,
        {key: c.success_weights for key, c in cells.items() if c.success_weights is not None},
        fitted.loadings,
    )
    outcome = np.array([1.0 if e.skill_verdict else 0.0 for e in judged])
    calibrate = matrix.shape[1] > 0 and len(judged) >= MIN_CALIBRATION_VERDICTS
    calibration = _platt(logits, outcome) if calibrate else None
    probability = 1 / (1 + np.exp(-logits))
    if calibration is not None:
        test_runs = sorted({e.run_id for e in judged})
        half = {test_runs[i] for i in rng.permutation(len(test_runs))[: len(test_runs) // 2]}
        first = np.array([e.run_id in half for e in judged])
        for part in (first, ~first):
            other = _platt(logits[~part], outcome[~part]) if (~part).any() else calibration
            probability[part] = 1 / (1 + np.exp(-(other[0] * logits[part] + other[1])))
    return calibration, FitMetrics(
        auroc=_auroc(probability, outcome),
        brier=float(np.mean((probability - outcome) ** 2)) if len(judged) else None,
        ece=_ece(probability, outcome),
        output_tokens_mae=_mae(
            [
                (cell.output_tokens.log_median(matrix[rows[e.attempt_id]]), float(max(1, e.output_tokens)))
                for e in judged
                if not e.truncated and (cell := cells[(e.subtask, e.model)]).output_tokens is not None
            ]
        ),
        output_tokens_p90_coverage=_coverage(
            [
                (cell.output_tokens.score(matrix[rows[e.attempt_id]], max(1, e.output_tokens)), e.truncated)
                for e in judged
                if (cell := cells[(e.subtask, e.model)]).output_tokens is not None
            ]
        ),
        latency_p90_coverage=_coverage(
            [
                (cell.latency_s.score(matrix[rows[e.attempt_id]], e.latency_s), e.censored)
                for e in test
                if e.latency_observed
                and e.latency_s is not None
                and (e.subtask, e.model) in cells
                and (cell := cells[(e.subtask, e.model)]).latency_s is not None
            ]
        ),
        n_holdout=len(judged),
        n_holdout_runs=runs,
    )


def _platt(logits: NDArray[np.float64], outcome: NDArray[np.float64]) -> tuple[float, float]:
    """Platt scaling: sigmoid(a · logit + b), fitted to Platt's smoothed targets, shrunk toward the
    identity (a = 1, b = 0) by `CALIBRATION_PRIOR`.

    A pass counts as (P + 1) / (P + 2) and a failure as 1 / (F + 2), with P passes and F
    failures, so held-out verdicts that all agree do not push the calibration to 0 or 1. The
    model's own probabilities are meant for fresh inputs already (`storage._input_effect`);
    a few hundred held-out verdicts move them only as far as they show a miscalibration
    beyond their own noise.
    """
    passes = float(outcome.sum())
    failures = len(outcome) - passes
    target = np.where(outcome == 1, (passes + 1) / (passes + 2), 1 / (failures + 2))
    design = np.column_stack([logits, np.ones(len(logits))])
    theta = _logistic(design, logits, target, CALIBRATION_PRIOR)
    return 1.0 + float(theta[0]), float(theta[1])


def _auroc(probability: NDArray[np.float64], outcome: NDArray[np.float64]) -> float | None:
    """The Mann-Whitney statistic (ties count a half); `None` without both outcomes."""
    positives = int(outcome.sum())
    negatives = len(outcome) - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(probability, kind="mergesort")
    ranks = np.empty(len(probability))
    sorted_p = probability[order]
    start = 0
    while start < len(sorted_p):
        end = start
        while end + 1 < len(sorted_p) and sorted_p[end + 1] == sorted_p[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return float((ranks[outcome == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def _ece(probability: NDArray[np.float64], outcome: NDArray[np.float64]) -> float | None:
    if not len(probability):
        return None
    bins = np.minimum((probability * _ECE_BINS).astype(int), _ECE_BINS - 1)
    total = 0.0
    for b in range(_ECE_BINS):
        inside = bins == b
        if inside.any():
            total += float(inside.sum()) * abs(
                float(probability[inside].mean()) - float(outcome[inside].mean())
            )
    return total / len(probability)


def _mae(pairs: Sequence[tuple[float, float]]) -> float | None:
    """Mean |exp(predicted log median) − observed|."""
    return float(np.mean([abs(math.exp(p) - y) for p, y in pairs])) if pairs else None


def _coverage(scores: Sequence[tuple[float, bool]]) -> float | None:
    """The share of values at or below their predicted 90th percentile, censoring accounted for.

    `scores` are (standard normal score of the value under its prediction, censored). A
    censored value is only a lower bound, and the slow ones are the ones cut short: dropping
    them would overstate the coverage. So the share is the Kaplan-Meier estimate of
    P(score <= z_0.9): censored scores leave the risk set without an event. Where censoring
    cuts every value short below the 90th percentile, that tail is unseen and the estimate
    is a lower bound.
    """
    if not scores:
        return None
    ordered = sorted(scores, key=lambda s: (s[0], s[1]))
    at_risk, survival = len(ordered), 1.0
    for score, censored in ordered:
        if score > _Z90:
            break
        if not censored:
            survival *= 1 - 1 / at_risk
        at_risk -= 1
    return 1 - survival


# --- small helpers -----------------------------------------------------------------------------


def _affine(weights: Sequence[float], z: NDArray[np.float64]) -> float:
    """w0 + w · z."""
    return float(weights[0] + (np.array(weights[1:]) @ z if len(z) else 0.0))


def _hazard(alpha: NDArray[np.float64]) -> NDArray[np.float64]:
    """φ(α) / (1 − Φ(α)) elementwise (α itself far in the tail)."""
    tail = np.array([0.5 * math.erfc(a / math.sqrt(2)) for a in alpha])
    density = np.exp(-0.5 * alpha**2) / math.sqrt(2 * math.pi)
    return np.where(tail > 1e-300, density / np.maximum(tail, 1e-300), alpha)


def _logit(p: float) -> float:
    p = min(1 - _LOGIT_CLIP, max(_LOGIT_CLIP, p))
    return math.log(p / (1 - p))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-max(-700.0, min(700.0, x))))


def _embedder_name(embedder: Embedder) -> str:
    name = getattr(embedder, "name", None)
    return name if isinstance(name, str) else type(embedder).__name__


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _from_iso(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _floats(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(x) for x in values)


def _quantity(body: Mapping[str, Any] | None) -> _Quantity | None:
    if body is None:
        return None
    return _Quantity(base=body["base"], sigma=body["sigma"], weights=_floats(body["weights"]))
