"""Estimates learned from recorded runs: the calling trees train the planner's beliefs.

For each (subtask, model) of a workflow, every attempt recorded in the database
that ended with a verdict of its check is one joint sample: whether it passed,
the output tokens its model calls produced, and its wall time. With at least
`min_samples` of them, the planner uses these empirical samples instead of the
workflow's priors (`AttemptEstimate.from_samples`, which resamples them jointly).

Only the model's own results count:

- an attempt that passed or failed its check is a sample (one that passed after
  a sibling had already won, `passed_late`, is a success like any other);
- an attempt that ended in an error is left out: a provider or pool outage, a
  refused reservation, the deadline or a crashing agent or check says nothing
  about how good the model is at the subtask;
- cancelled attempts are left out: a sibling won before they ended.

A catalog name is not a model: `small` may be `openai/gpt-4o-mini` in one run, a
local `hosted_vllm/...` model in another and the simulated backend in a third.
Given `models` (catalog name -> litellm model string, as the coming run will call
them), only attempts whose model calls went to that same litellm model count, so
what a local model did never trains the planner about a hosted one, and simulated
and real calls never mix.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from orchestrator.estimates import AttemptEstimate, EmpiricalSample
from orchestrator.records import AttemptStatus, CallKind
from storage.models import Attempt, Call, Run
from storage.queries import _session

__all__ = ["learn_estimates"]

_SUCCESS = (AttemptStatus.PASSED.value, AttemptStatus.PASSED_LATE.value)
_JUDGED = (*_SUCCESS, AttemptStatus.FAILED.value)
"""Attempts that ended with the check's verdict: the only ones that say how good the model is."""


def learn_estimates(
    target: str | URL | Engine,
    workflow: str,
    *,
    models: Mapping[str, str] | None = None,
    min_samples: int = 8,
    max_samples: int = 500,
    max_runs: int = 500,
    include_simulated: bool = False,
) -> dict[tuple[str, str], AttemptEstimate]:
    """Empirical estimates per (subtask, model) from the recorded runs of `workflow`.

    Args:
        target: database URL or engine.
        workflow: workflow name whose runs to learn from.
        models: catalog model name -> the litellm model string the coming run calls it by;
            an attempt counts only when its calls went to that string (models not listed
            are not learned). `None` keys by catalog name alone.
        min_samples: fewer judged attempts than this and the pair is left to its prior.
        max_samples: use at most the newest this many attempts per pair.
        max_runs: read at most the newest this many runs (by start; 500 by default), so that learning costs
            the same after a million recorded calls as after a thousand.
        include_simulated: also learn from simulated runs (off by default: their outcomes
            were drawn from the priors, so learning from them only echoes the priors).
    """
    with _session(target) as session:
        chosen = sa.select(Run.run_id).where(Run.workflow == workflow)
        if not include_simulated:
            chosen = chosen.where(Run.simulated.is_(False))
        # The ids first (index on workflow, started_at), then index lookups by run id.
        order = session.scalars(chosen.order_by(Run.started_at.desc()).limit(max_runs)).all()
        if not order:
            return {}
        rank = {run_id: i for i, run_id in enumerate(order)}
        runs = list(order)
        same_model: sa.ColumnElement[bool] = (
            sa.true()
            if models is None
            else sa.or_(
                sa.false(),
                *(sa.and_(Attempt.model == name, Call.litellm_model == lm) for name, lm in models.items()),
            )
        )
        calls = (
            sa.select(
                Call.attempt_id,
                sa.func.sum(Call.output_tokens).label("out"),
                sa.func.avg(Call.input_tokens).label("inp"),
                sa.func.sum(sa.case((same_model, 1), else_=0)).label("matched"),
            )
            .join(Attempt, Attempt.attempt_id == Call.attempt_id)
            .where(Call.kind == CallKind.LLM.value, Call.run_id.in_(runs))
            .group_by(Call.attempt_id)
            .subquery()
        )
        found = session.execute(
            sa.select(
                Attempt.run_id,
                Attempt.subtask,
                Attempt.model,
                Attempt.status,
                Attempt.started_s,
                Attempt.ended_s,
                calls.c.out,
                calls.c.inp,
            )
            .join(calls, calls.c.attempt_id == Attempt.attempt_id)
            .where(
                Attempt.run_id.in_(runs),
                Attempt.status.in_(_JUDGED),
                Attempt.ended_s.is_not(None),
                calls.c.matched > 0,
            )
        ).all()
    rows = sorted(found, key=lambda row: (rank[row.run_id], -row.started_s))
    samples: defaultdict[tuple[str, str], list[EmpiricalSample]] = defaultdict(list)
    inputs: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    for _, subtask, model, status, started, ended, out, inp in rows:
        key = (subtask, model)
        if len(samples[key]) >= max_samples:
            continue
        samples[key].append(
            EmpiricalSample(
                success=status in _SUCCESS,
                output_tokens=int(out or 0),
                latency_s=max(0.0, float(ended) - float(started)),
            )
        )
        inputs[key].append(float(inp or 0))
    return {
        key: AttemptEstimate.from_samples(found, input_tokens=round(sum(inputs[key]) / len(inputs[key])))
        for key, found in samples.items()
        if len(found) >= min_samples
    }
