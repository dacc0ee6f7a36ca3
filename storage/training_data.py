"""Training data from the calling trees: one typed example per recorded attempt.

Every attempt recorded in the database becomes an `AttemptExample`: who made it
(workflow, subtask, model, the litellm model its calls went to), what was known
about the request when it was decided (the run inputs' sizes, the parents'
outputs' sizes, the prompt's token count, the fields the subtask's templates
declare, optionally an embedding of the rendered prompt), and how it went
(outcome, output tokens, latency, time to first token, cost).

The rules that make the examples fit to learn from (docs/learning.md):

- **Cancelled attempts are right-censored, not dropped.** A sibling that won
  cancelled them: their latency is a lower bound (`censored=True`, `latency_s` is
  the time they had run). Dropping them keeps only the attempts that were fast
  enough to end, so latency would be learned biased low.
- **Errors are not failures.** An attempt that ended in an error rather than a
  verdict (a provider or pool failure, a refused reservation, the deadline, a
  crashing agent or check) is `provider_error`: it says nothing about how good the
  model is on this input, and `success` is `None`.
- **Lost attempts count for nothing.** An attempt with a call still `in_flight` or
  `lost_in_crash`, or with no recorded end, is `lost`: neither its verdict nor its
  latency is known.
- **Simulated and real runs never mix** unless asked: real runs only by default,
  `include_simulated` for both, `only_simulated` for the simulated ones alone.

Reads are batched: one query picks the runs (newest first, by workflow and time
window, up to a limit), then four queries per batch of runs (runs, subtasks,
attempts, calls), never one per attempt.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session

from orchestrator._run_views import redacted_inputs
from orchestrator.errors import ConfigError
from orchestrator.records import AttemptStatus, CallKind, CallStatus, SubtaskStatus
from orchestrator.workflow import Workflow
from storage.models import Attempt, Call, Run, SubtaskExecution
from storage.queries import _session

__all__ = [
    "AttemptExample",
    "AttemptOutcome",
    "Embedder",
    "extract_examples",
    "iter_examples",
]

BATCH_RUNS = 200
"""Runs read per batch of queries."""
_IDS_PER_QUERY = 1000
"""Ids per `IN (...)` list (SQLite caps the parameters of one statement)."""


class AttemptOutcome(StrEnum):
    """How an attempt ended, as training data sees it."""

    PASSED = "passed"
    """Passed its check (the winner, or a sibling that passed after the winner)."""
    FAILED_CHECK = "failed_check"
    """Ended with its check's verdict: failed."""
    PROVIDER_ERROR = "provider_error"
    """Ended in an error rather than a verdict (provider, pool, reservation, deadline, a crashing
    agent or check): says nothing about the model's ability."""
    CANCELLED = "cancelled"
    """Cancelled before its verdict (a sibling won, the run stopped): a censored latency."""
    LOST = "lost"
    """A call still in flight or lost in a crash, or no recorded end: nothing is known."""


_OUTCOMES: Mapping[str, AttemptOutcome] = {
    AttemptStatus.PASSED.value: AttemptOutcome.PASSED,
    AttemptStatus.PASSED_LATE.value: AttemptOutcome.PASSED,
    AttemptStatus.FAILED.value: AttemptOutcome.FAILED_CHECK,
    AttemptStatus.ERROR.value: AttemptOutcome.PROVIDER_ERROR,
    AttemptStatus.CANCELLED.value: AttemptOutcome.CANCELLED,
}
_UNFINISHED_CALLS = frozenset({CallStatus.IN_FLIGHT.value, CallStatus.LOST_IN_CRASH.value})


class Embedder(Protocol):
    """Turns rendered prompts into vectors (a sentence-embedding model, an embeddings API).

    Synchronous and batched: extraction is an offline read, and one call per batch of
    runs keeps a remote embedder's round trips few.
    """

    def embed(self, texts: Sequence[str]) -> Sequence[Sequence[float]]:
        """One vector per text, in order."""
        ...


@dataclass(frozen=True, kw_only=True)
class AttemptExample:
    """One recorded attempt as a training example: request features, then outcome."""

    workflow: str
    """Workflow name."""
    subtask: str
    """Subtask name."""
    model: str
    """Catalog model name."""
    litellm_model: str | None
    """The model string its first model call went to (`None`: no model call was made)."""
    run_id: str
    """Run."""
    attempt_id: str
    """Attempt."""
    batch: int
    """Batch of the subtask (0 first, then one per all-failed batch)."""
    sample: int
    """Index within the batch."""
    run_started_at: datetime
    """Wall-clock start of the run (UTC)."""
    simulated: bool
    """The run used the simulated backend."""
    input_chars: Mapping[str, int] = field(default_factory=dict)
    """Size in characters of each run input (also known when content recording was off)."""
    parent_output_chars: Mapping[str, int | None] = field(default_factory=dict)
    """Size in characters of each parent's output (`None`: not recorded, content recording off).

    The parents are the subtask's `after` when the workflow is given to the extraction;
    otherwise every subtask of the run that had completed when the attempt started (what
    the attempt could have read)."""
    declared_fields: tuple[str, ...] | None = None
    """Template fields the subtask's agent reads, sorted (`None`: the workflow was not given)."""
    prompt_tokens: int | None = None
    """Prompt tokens of its first model call (`None`: no model call)."""
    max_tokens: int = 0
    """Per-call output cap the planner chose."""
    embedding: tuple[float, ...] | None = None
    """Embedding of its first call's prompt (`None`: no embedder, or the prompt was not recorded)."""
    outcome: AttemptOutcome
    """How it ended."""
    winner: bool = False
    """Its output was the one taken (the first sample of its batch to pass)."""
    censored: bool = False
    """Right-censored latency: cancelled before its end, `latency_s` is a lower bound."""
    output_tokens: int = 0
    """Output tokens of its model calls."""
    truncated: bool = False
    """A model call stopped at `max_tokens` (finish reason `length`)."""
    latency_s: float | None = None
    """Start to end (to the cancellation when `censored`; `None` when `lost`)."""
    ttft_s: float | None = None
    """Time to first token of its first model call."""
    cost_usd: Decimal = Decimal(0)
    """Settled cost of its calls."""
    error: str | None = None
    """What ended it, for `provider_error` (the recorded detail)."""

    @property
    def success(self) -> bool | None:
        """The check's verdict, or `None` when the attempt got none (errors, cancelled, lost)."""
        if self.outcome is AttemptOutcome.PASSED:
            return True
        if self.outcome is AttemptOutcome.FAILED_CHECK:
            return False
        return None

    @property
    def skill_verdict(self) -> bool | None:
        """What it says of the model's skill on this input: its verdict, except that a failure
        that stopped at its `max_tokens` says nothing (the cap failed it, and the planner models
        the cap by truncating its draws of output tokens), as errors and cancellations say nothing.

        The estimators learn success from this, as the in-run updates do
        (`orchestrator.belief_updates`).
        """
        if self.truncated and self.outcome is AttemptOutcome.FAILED_CHECK:
            return None
        return self.success

    @property
    def latency_observed(self) -> bool:
        """Whether it is a latency observation: ended with a verdict, or censored by a cancellation."""
        return self.latency_s is not None and self.outcome in (
            AttemptOutcome.PASSED,
            AttemptOutcome.FAILED_CHECK,
            AttemptOutcome.CANCELLED,
        )


def extract_examples(
    target: str | URL | Engine,
    *,
    workflow: str | Workflow | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    max_runs: int | None = None,
    include_simulated: bool = False,
    only_simulated: bool = False,
    embedder: Embedder | None = None,
) -> list[AttemptExample]:
    """Every recorded attempt of the chosen runs as a training example (see `iter_examples`)."""
    return list(
        iter_examples(
            target,
            workflow=workflow,
            since=since,
            until=until,
            max_runs=max_runs,
            include_simulated=include_simulated,
            only_simulated=only_simulated,
            embedder=embedder,
        )
    )


def iter_examples(
    target: str | URL | Engine,
    *,
    workflow: str | Workflow | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    max_runs: int | None = None,
    include_simulated: bool = False,
    only_simulated: bool = False,
    embedder: Embedder | None = None,
    batch_runs: int = BATCH_RUNS,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[AttemptExample]:
    """The recorded attempts of the chosen runs, newest run first, each run's in start order.

    Args:
        target: database URL or engine.
        workflow: only this workflow's runs; given as a `Workflow`, its DAG also names each
            subtask's parents and declared template fields.
        since: only runs started at or after this time (UTC when naive).
        until: only runs started before this time (UTC when naive).
        max_runs: at most the newest this many runs; `None` for all.
        include_simulated: simulated runs as well as real ones.
        only_simulated: simulated runs only.
        embedder: embeds each attempt's first prompt (when it was recorded).
        batch_runs: runs read per batch of queries.
        progress: called after each batch with (runs read, runs chosen).

    Raises:
        ConfigError: contradictory or invalid arguments.
        StorageError: the database cannot be read.
    """
    if include_simulated and only_simulated:
        raise ConfigError("`include_simulated` and `only_simulated` contradict each other; choose one")
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"`max_runs` must be at least 1 (or None for all), got {max_runs}")
    if batch_runs < 1:
        raise ConfigError(f"`batch_runs` must be at least 1, got {batch_runs}")
    since, until = _utc(since), _utc(until)
    name = workflow.name if isinstance(workflow, Workflow) else workflow
    shape = _Shape.of(workflow) if isinstance(workflow, Workflow) else None
    with _session(target) as session:
        chosen = sa.select(Run.run_id)
        if name is not None:
            chosen = chosen.where(Run.workflow == name)
        if only_simulated:
            chosen = chosen.where(Run.simulated.is_(True))
        elif not include_simulated:
            chosen = chosen.where(Run.simulated.is_(False))
        if since is not None:
            chosen = chosen.where(Run.started_at >= since)
        if until is not None:
            chosen = chosen.where(Run.started_at < until)
        chosen = chosen.order_by(Run.started_at.desc(), Run.run_id)
        if max_runs is not None:
            chosen = chosen.limit(max_runs)
        run_ids = list(session.scalars(chosen))
        for start in range(0, len(run_ids), batch_runs):
            batch = run_ids[start : start + batch_runs]
            yield from _batch_examples(session, batch, shape, embedder)
            if progress is not None:
                progress(start + len(batch), len(run_ids))


@dataclass(frozen=True)
class _Shape:
    """What the workflow's definition says about each subtask."""

    parents: Mapping[str, tuple[str, ...]]
    fields: Mapping[str, tuple[str, ...]]

    @classmethod
    def of(cls, workflow: Workflow) -> _Shape:
        subtasks = workflow.subtasks.values()
        return cls(
            parents={s.name: tuple(s.after) for s in subtasks},
            fields={s.name: tuple(sorted(s.agent.template_variables())) for s in subtasks},
        )


@dataclass
class _CallSums:
    """One attempt's calls, folded in start order."""

    first_started: float = math.inf
    litellm_model: str | None = None
    prompt_tokens: int | None = None
    ttft_s: float | None = None
    first_call_id: str | None = None
    output_tokens: int = 0
    cost: Decimal = Decimal(0)
    truncated: bool = False
    unfinished: bool = False


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _chars(value: Any) -> int | None:
    """A recorded value's size: its text's length, or its JSON's (the rule of redacted inputs)."""
    if value is None:
        return None
    if isinstance(value, Mapping) and value.get("redacted") is True and isinstance(value.get("chars"), int):
        chars: int = value["chars"]
        return chars
    sized: int = redacted_inputs({"v": value})["v"]["chars"]
    return sized


def _batch_examples(
    session: Session, run_ids: list[str], shape: _Shape | None, embedder: Embedder | None
) -> list[AttemptExample]:
    runs = {
        row.run_id: row
        for row in session.execute(
            sa.select(Run.run_id, Run.workflow, Run.started_at, Run.simulated, Run.inputs).where(
                Run.run_id.in_(run_ids)
            )
        )
    }
    done: defaultdict[str, list[tuple[str, float, int | None]]] = defaultdict(list)
    for row in session.execute(
        sa.select(
            SubtaskExecution.run_id,
            SubtaskExecution.subtask,
            SubtaskExecution.ended_s,
            SubtaskExecution.output,
        ).where(
            SubtaskExecution.run_id.in_(run_ids),
            SubtaskExecution.status == SubtaskStatus.COMPLETED.value,
        )
    ):
        ended = math.inf if row.ended_s is None else float(row.ended_s)
        done[row.run_id].append((row.subtask, ended, _chars(row.output)))
    attempts = session.execute(
        sa.select(
            Attempt.attempt_id,
            Attempt.run_id,
            Attempt.subtask,
            Attempt.model,
            Attempt.batch,
            Attempt.sample,
            Attempt.max_tokens,
            Attempt.started_s,
            Attempt.ended_s,
            Attempt.status,
            Attempt.check_detail,
        )
        .where(Attempt.run_id.in_(run_ids), Attempt.status != AttemptStatus.NOT_STARTED.value)
        .order_by(Attempt.run_id, Attempt.started_s, Attempt.attempt_id)
    ).all()
    sums: defaultdict[str, _CallSums] = defaultdict(_CallSums)
    for call in session.execute(
        sa.select(
            Call.call_id,
            Call.attempt_id,
            Call.kind,
            Call.litellm_model,
            Call.input_tokens,
            Call.output_tokens,
            Call.cost_usd,
            Call.started_s,
            Call.ttft_s,
            Call.status,
            Call.finish_reason,
        ).where(Call.run_id.in_(run_ids), Call.attempt_id.is_not(None))
    ):
        folded = sums[call.attempt_id]
        folded.cost += Decimal(call.cost_usd)
        if call.kind != CallKind.LLM.value:
            continue
        folded.output_tokens += int(call.output_tokens)
        folded.truncated |= call.finish_reason == "length"
        folded.unfinished |= call.status in _UNFINISHED_CALLS
        if float(call.started_s) < folded.first_started:
            folded.first_started = float(call.started_s)
            folded.first_call_id = call.call_id
            folded.litellm_model = call.litellm_model
            folded.prompt_tokens = int(call.input_tokens)
            folded.ttft_s = None if call.ttft_s is None else float(call.ttft_s)
    embeddings = _embed(session, sums, embedder) if embedder is not None else {}
    order = {run_id: i for i, run_id in enumerate(run_ids)}
    examples = []
    for row in sorted(attempts, key=lambda a: order[a.run_id]):
        run = runs[row.run_id]
        folded = sums[row.attempt_id]
        outcome = _OUTCOMES.get(row.status, AttemptOutcome.LOST)
        if folded.unfinished or row.ended_s is None:
            outcome = AttemptOutcome.LOST
        started = float(row.started_s)
        if shape is not None and row.subtask in shape.parents:
            outputs = {name: chars for name, _, chars in done[row.run_id]}
            parents = {p: outputs.get(p) for p in shape.parents[row.subtask]}
            declared: tuple[str, ...] | None = shape.fields[row.subtask]
        else:
            parents = {name: chars for name, ended, chars in done[row.run_id] if ended <= started}
            declared = None
        examples.append(
            AttemptExample(
                workflow=run.workflow,
                subtask=row.subtask,
                model=row.model,
                litellm_model=folded.litellm_model,
                run_id=row.run_id,
                attempt_id=row.attempt_id,
                batch=int(row.batch),
                sample=int(row.sample),
                run_started_at=run.started_at,
                simulated=bool(run.simulated),
                input_chars={str(k): _chars(v) or 0 for k, v in (run.inputs or {}).items()},
                parent_output_chars=dict(sorted(parents.items())),
                declared_fields=declared,
                prompt_tokens=folded.prompt_tokens,
                max_tokens=int(row.max_tokens),
                embedding=embeddings.get(row.attempt_id),
                outcome=outcome,
                winner=row.status == AttemptStatus.PASSED.value and outcome is AttemptOutcome.PASSED,
                censored=outcome is AttemptOutcome.CANCELLED,
                output_tokens=folded.output_tokens,
                truncated=folded.truncated,
                latency_s=None if outcome is AttemptOutcome.LOST else max(0.0, float(row.ended_s) - started),
                ttft_s=folded.ttft_s,
                cost_usd=folded.cost,
                error=row.check_detail if outcome is AttemptOutcome.PROVIDER_ERROR else None,
            )
        )
    return examples


def _embed(
    session: Session, sums: Mapping[str, _CallSums], embedder: Embedder
) -> dict[str, tuple[float, ...]]:
    """Embeddings of the first prompt of each attempt whose prompt was recorded (one embedder call)."""
    first = {s.first_call_id: attempt_id for attempt_id, s in sums.items() if s.first_call_id is not None}
    if not first:
        return {}
    ids = list(first)
    prompts: list[tuple[str, str]] = []
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        prompts += [
            (first[row.call_id], row.prompt)
            for row in session.execute(
                sa.select(Call.call_id, Call.prompt).where(Call.call_id.in_(chunk), Call.prompt.is_not(None))
            )
        ]
    if not prompts:
        return {}
    vectors = embedder.embed([prompt for _, prompt in prompts])
    if len(vectors) != len(prompts):
        raise ConfigError(
            f"the embedder returned {len(vectors)} vectors for {len(prompts)} prompts; it must return"
            " one per text, in order"
        )
    return {
        attempt_id: tuple(float(x) for x in vector)
        for (attempt_id, _), vector in zip(prompts, vectors, strict=True)
    }
