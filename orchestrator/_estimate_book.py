"""Estimates for every (subtask, model) of a run: the subtask's priors, else a default from the catalog."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.catalog import NO_MODEL, Catalog, ModelSpec
from orchestrator.estimates import AttemptEstimate, LogNormal
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


@dataclass(frozen=True)
class EstimateBook:
    """Beliefs per (subtask, model) for one run."""

    table: Mapping[tuple[str, str], AttemptEstimate]
    """Every (subtask, model) the workflow allows."""

    @classmethod
    def build(
        cls,
        workflow: Workflow,
        catalog: Catalog,
        learned: Mapping[tuple[str, str], AttemptEstimate] | None = None,
    ) -> EstimateBook:
        """Learned estimates first, then the subtask's priors, then catalog defaults."""
        table: dict[tuple[str, str], AttemptEstimate] = {}
        for sub in workflow.subtasks.values():
            for model in sub.models:
                key = (sub.name, model)
                if learned is not None and key in learned:
                    table[key] = learned[key]
                elif model in sub.estimates:
                    table[key] = sub.estimates[model]
                else:
                    table[key] = _default_estimate(catalog.get(model))
        return cls(table)

    def get(self, subtask: str, model: str) -> AttemptEstimate:
        """The estimate of (subtask, model)."""
        return self.table[(subtask, model)]
