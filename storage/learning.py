"""Estimates learned from recorded runs: the calling trees train the planner's beliefs.

For each (subtask, model) of a workflow, every finished attempt recorded in
the database is one joint sample: whether it passed its check, the output
tokens its model calls produced, and its wall time. With at least
`min_samples` of them, the planner uses these empirical samples instead of
the workflow's priors (`AttemptEstimate.from_samples`, which resamples them
jointly). Cancelled attempts are left out: a sibling won before they ended,
so their outcome says nothing. Errors count as failures.
"""

from __future__ import annotations

from collections import defaultdict

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from orchestrator.estimates import AttemptEstimate, EmpiricalSample
from storage.models import Attempt, Call, Run
from storage.queries import _session

__all__ = ["learn_estimates"]

_FINISHED = ("passed", "failed", "error")


def learn_estimates(
    target: str | URL | Engine,
    workflow: str,
    *,
    min_samples: int = 8,
    max_samples: int = 500,
    include_simulated: bool = False,
) -> dict[tuple[str, str], AttemptEstimate]:
    """Empirical estimates per (subtask, model) from the recorded runs of `workflow`.

    Args:
        target: database URL or engine.
        workflow: workflow name whose runs to learn from.
        min_samples: fewer finished attempts than this and the pair is left to its prior.
        max_samples: use at most the newest this many attempts per pair.
        include_simulated: also learn from simulated runs (off by default: their outcomes
            were drawn from the priors, so learning from them only echoes the priors).
    """
    with _session(target) as session:
        runs = sa.select(Run.run_id).where(Run.workflow == workflow)
        if not include_simulated:
            runs = runs.where(Run.simulated.is_(False))
        tokens = (
            sa.select(
                Call.attempt_id,
                sa.func.sum(Call.output_tokens).label("out"),
                sa.func.avg(Call.input_tokens).label("inp"),
            )
            .where(Call.kind == "llm", Call.run_id.in_(runs))
            .group_by(Call.attempt_id)
            .subquery()
        )
        rows = session.execute(
            sa.select(
                Attempt.subtask,
                Attempt.model,
                Attempt.status,
                Attempt.started_s,
                Attempt.ended_s,
                tokens.c.out,
                tokens.c.inp,
            )
            .join(tokens, tokens.c.attempt_id == Attempt.attempt_id)
            .where(Attempt.run_id.in_(runs), Attempt.status.in_(_FINISHED), Attempt.ended_s.is_not(None))
            .order_by(Attempt.run_id.desc(), Attempt.started_s.desc())
        ).all()
    samples: defaultdict[tuple[str, str], list[EmpiricalSample]] = defaultdict(list)
    inputs: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
    for subtask, model, status, started, ended, out, inp in rows:
        key = (subtask, model)
        if len(samples[key]) >= max_samples:
            continue
        samples[key].append(
            EmpiricalSample(
                success=status == "passed",
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
