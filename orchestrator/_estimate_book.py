"""Estimates for every (subtask, model) of a run: the estimator's, else the priors, else a default."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from orchestrator._run_views import input_sizes
from orchestrator.catalog import NO_MODEL, Catalog, ModelSpec
from orchestrator.estimates import AttemptEstimate, LogNormal
from orchestrator.estimator import Estimator, RequestFeatures, TableEstimator
from orchestrator.workflow import Workflow

DEFAULT_SUCCESS_PROB = 0.7
"""Success probability assumed when nothing is known (an uninformed prior)."""
DEFAULT_OUTPUT_TOKENS = LogNormal(mean=400.0, std=200.0)
"""Output tokens assumed when nothing is known."""


_NO_MODEL_ESTIMATE = AttemptEstimate(
    success_prob=1.0, output_tokens=LogNormal(mean=1.0), latency_s=LogNormal(mean=0.05), input_tokens=0
)
"""Plain code: passes unless its check says otherwise, costs nothing, takes little time."""


@functools.lru_cache(maxsize=256)
def _default_estimate(spec: ModelSpec) -> AttemptEstimate:
    if spec.name == NO_MODEL:
        return _NO_MODEL_ESTIMATE
    if spec.latency is not None:
        mean = spec.latency.ttft_s + DEFAULT_OUTPUT_TOKENS.mean / spec.latency.tokens_per_s
        latency = LogNormal(mean=mean, std=mean / 2)
    else:
        latency = LogNormal(mean=5.0, std=2.5)
    return AttemptEstimate(
        success_prob=DEFAULT_SUCCESS_PROB, output_tokens=DEFAULT_OUTPUT_TOKENS, latency_s=latency
    )


@dataclass(frozen=True, kw_only=True)
class _Source:
    """Where a run's beliefs come from: the estimator, then the subtask's priors, then defaults."""

    workflow: Workflow
    catalog: Catalog
    estimators: tuple[Estimator, ...]
    features: RequestFeatures

    def ask(self, subtask: str, model: str, features: RequestFeatures) -> AttemptEstimate:
        for estimator in self.estimators:
            found = estimator.estimate(self.workflow.name, subtask, model, features)
            if found is not None:
                return found
        sub = self.workflow.subtasks[subtask]
        if model in sub.estimates:
            return sub.estimates[model]
        return _default_estimate(self.catalog.get(model))


@dataclass(frozen=True)
class EstimateBook:
    """Beliefs per (subtask, model) for one run."""

    table: Mapping[tuple[str, str], AttemptEstimate]
    """Every (subtask, model) the workflow allows."""
    source: _Source | None = field(default=None, compare=False, repr=False)
    """Where the beliefs came from, to ask again when more is known (`None`: a fixed table)."""

    @classmethod
    def build(
        cls,
        workflow: Workflow,
        catalog: Catalog,
        learned: Mapping[tuple[str, str], AttemptEstimate] | None = None,
        *,
        estimator: Estimator | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> EstimateBook:
        """The estimator's answer first, then `learned`, then the subtask's priors, then catalog defaults."""
        chain: tuple[Estimator, ...] = tuple(
            e for e in (estimator, None if learned is None else TableEstimator(learned)) if e is not None
        )
        source = _Source(
            workflow=workflow,
            catalog=catalog,
            estimators=chain,
            features=RequestFeatures(input_chars=input_sizes(inputs or {})),
        )
        table = {
            (sub.name, model): source.ask(sub.name, model, source.features)
            for sub in workflow.subtasks.values()
            for model in sub.models
        }
        return cls(table, source)

    def get(self, subtask: str, model: str) -> AttemptEstimate:
        """The estimate of (subtask, model)."""
        return self.table[(subtask, model)]

    def with_prompt_tokens(
        self, subtask: str, model: str, tokens: int, *, prompt_text: str | None = None
    ) -> AttemptEstimate:
        """The estimate of (subtask, model) once its prompt is known to have `tokens` tokens.

        The estimator is asked again with the count (and the rendered prompt, `prompt_text`)
        among the features; the answer's
        `input_tokens` are the count. Unchanged beliefs are returned as the same object
        (a planner recompiles only estimates that are new objects).
        """
        current = self.table[(subtask, model)]
        if self.source is None or not self.source.estimators:
            found = current
        else:
            features = replace(self.source.features, prompt_tokens=tokens, prompt_text=prompt_text)
            found = self.source.ask(subtask, model, features)
        if found.input_tokens != tokens:
            found = replace(found, input_tokens=tokens)
        return current if found == current else found

    def updated(self, table: Mapping[tuple[str, str], AttemptEstimate]) -> EstimateBook:
        """The same book with new beliefs."""
        return replace(self, table=table)
