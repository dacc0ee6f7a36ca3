"""The planner's beliefs behind one protocol: what is one attempt of a subtask on a model like?

An `Estimator` answers, for a workflow, a subtask, a model and the features of the
request known when the planner decides (`RequestFeatures`), an `AttemptEstimate`, or
`None` when it has no opinion. A run asks it for every (subtask, model) the workflow
allows, before its first decision and again when a subtask's prompt has been counted
(the features then include its token count); where it answers `None`, the subtask's
priors (`estimates=` of `Workflow.subtask`) apply, then the catalog's defaults.

`TableEstimator` is the simplest one: a fixed table per (subtask, model), such as
`storage.learn_estimates` returns. `arun(..., learned_estimates=table)` is
`arun(..., estimator=TableEstimator(table))`.

The interface is synchronous: a run asks it on the event loop, so an estimator that
needs slow work (a database, a trained model) does it before the run and answers
from memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.estimates import AttemptEstimate

__all__ = ["Estimator", "RequestFeatures", "TableEstimator", "describe_beliefs"]


@dataclass(frozen=True, kw_only=True)
class RequestFeatures:
    """What is known about one request when the planner decides on it."""

    input_chars: Mapping[str, int] = field(default_factory=dict)
    """Each run input's size in characters (its text, or its JSON): the sizes a run
    records even when content recording is off."""
    prompt_tokens: int | None = None
    """The rendered prompt's tokens on this model, once the executor counted them
    (`None` before the subtask is ready, or for an agent that cannot preview its prompt)."""
    prompt_text: str | None = None
    """The rendered prompt (`orchestrator.prompt_rendering.prompt_text` of its messages), set
    with `prompt_tokens`: the same text a recorder stores as the call's prompt, for
    estimators that read the request's content (e.g. through an embedding)."""


class Estimator(Protocol):
    """Beliefs about one attempt, per (workflow, subtask, model, request features)."""

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        """The estimate of one attempt of `subtask` on `model`, or `None` for no opinion.

        Args:
            workflow: the workflow's name.
            subtask: the subtask's name.
            model: the catalog model name.
            features: what is known about the request now.
        """
        ...


BELIEFS_MAX_CHARS = 200
"""The longest `describe_beliefs` answer (longer labels are cut with an ellipsis)."""


def describe_beliefs(
    estimator: Estimator | None, *, learned_table: bool = False, in_run: bool = False
) -> str:
    """What a run's estimates come from, in the order they are asked, for its record
    (`RunRecord.beliefs`): the estimator's `label` (its class name if it has none), the learned
    table when there is one, then the declared priors, and whether the run updates them as its
    attempts end; e.g. `trained v3, then priors; updated in run`."""
    sources = []
    if estimator is not None:
        label = getattr(estimator, "label", None)
        sources.append(label if isinstance(label, str) and label else type(estimator).__name__)
    if learned_table:
        sources.append("learned table")
    sources.append("priors")
    text = ", then ".join(sources) + ("; updated in run" if in_run else "")
    return text if len(text) <= BELIEFS_MAX_CHARS else text[: BELIEFS_MAX_CHARS - 1] + "…"


class TableEstimator:
    """A fixed table per (subtask, model), whatever the request's features."""

    def __init__(
        self,
        table: Mapping[tuple[str, str], AttemptEstimate],
        *,
        workflow: str | None = None,
        label: str = "table",
    ) -> None:
        """Args:
        table: estimates per (subtask, model), e.g. from `storage.learn_estimates`.
        workflow: answer only for this workflow's runs (`None`: for any workflow).
        label: what the table is, as a run's record names it (`describe_beliefs`).
        """
        self._table = dict(table)
        self._workflow = workflow
        self.label = label

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        """The table's entry for (subtask, model), if it has one."""
        if self._workflow is not None and workflow != self._workflow:
            return None
        return self._table.get((subtask, model))
