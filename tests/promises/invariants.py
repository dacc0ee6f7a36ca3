"""The promises, checked after every run of the suite.

- Money: recorded spend (the sum of call costs) is the ledger's spend plus any
  recorded overrun, and never above the budget unless that overrun is recorded.
- Time: the run returned by its deadline + 1 s, and no call is recorded as ending
  `ok` after the deadline.
- States: every attempt is final (none `running`); a completed subtask has exactly
  one `passed` attempt, its winner; no other subtask has one.
- Nothing lost: every reply the provider delivered is recorded once (by its id).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

from orchestrator import AttemptRecord, AttemptStatus, CallKind, CallRecord, CallStatus, RunRecord, RunResult
from orchestrator.records import SubtaskRecord, SubtaskStatus
from tests.promises.billing_provider import Entry

DEADLINE_SLACK_S = 1.0
"""How late a run may return after its deadline."""


def check_promises(
    run: RunRecord,
    *,
    subtasks: Sequence[SubtaskRecord],
    attempts: Sequence[AttemptRecord],
    calls: Sequence[CallRecord],
    returned_after_s: float | None = None,
    provider_log: Sequence[Entry] | None = None,
) -> None:
    """Assert every promise of one finished run (see the module docstring)."""
    llm = [c for c in calls if c.kind is CallKind.LLM]
    billed = sum((c.cost_usd for c in calls), Decimal(0))
    assert billed == run.spent_usd + run.overrun_usd, (billed, run.spent_usd, run.overrun_usd)
    assert run.spent_usd <= run.budget_usd
    if run.overrun_usd == 0:
        assert billed <= run.budget_usd
    else:
        assert run.reason is not None and "overrun" in run.reason

    if run.deadline_s is not None:
        assert run.makespan_s is not None
        assert run.makespan_s <= run.deadline_s + DEADLINE_SLACK_S, (run.makespan_s, run.deadline_s)
        if returned_after_s is not None:
            assert returned_after_s <= run.deadline_s + DEADLINE_SLACK_S, (returned_after_s, run.deadline_s)
        late_ok = [c for c in llm if c.status is CallStatus.OK and c.started_s + c.latency_s > run.deadline_s]
        assert late_ok == [], late_ok

    unfinished = [a for a in attempts if a.status in (AttemptStatus.RUNNING, AttemptStatus.NOT_STARTED)]
    assert unfinished == [], unfinished
    passed = Counter(a.subtask for a in attempts if a.status is AttemptStatus.PASSED)
    for sub in subtasks:
        if sub.status is SubtaskStatus.COMPLETED:
            assert passed[sub.subtask] == 1, (sub.subtask, passed[sub.subtask])
            winner = next(
                a for a in attempts if a.subtask == sub.subtask and a.status is AttemptStatus.PASSED
            )
            assert winner.attempt_id == sub.winner_attempt_id
        else:
            assert passed[sub.subtask] == 0, (sub.subtask, sub.status)
        assert sub.status not in (SubtaskStatus.RUNNING, SubtaskStatus.READY, SubtaskStatus.PENDING) or (
            run.outcome.value == "running"
        ), sub

    if provider_log is not None:
        recorded = Counter(c.response_id for c in llm if c.response_id is not None)
        assert all(n == 1 for n in recorded.values()), recorded
        delivered = {e.response_id for e in provider_log if e.delivered}
        missing = delivered - set(recorded)
        assert missing == set(), f"replies the provider delivered but nobody recorded: {missing}"
        by_id = {c.response_id: c for c in llm if c.response_id is not None}
        for entry in provider_log:
            call = by_id.get(entry.response_id)
            if entry.delivered and call is not None and call.status is not CallStatus.ERROR:
                assert call.input_tokens == entry.prompt_tokens, (call, entry)
                assert call.output_tokens == entry.completion_tokens, (call, entry)


def check_result(
    result: RunResult, *, returned_after_s: float | None = None, provider_log: Sequence[Entry] | None = None
) -> None:
    """`check_promises` on what `arun` returned."""
    check_promises(
        result.run,
        subtasks=result.subtasks,
        attempts=result.attempts,
        calls=result.calls,
        returned_after_s=returned_after_s,
        provider_log=provider_log,
    )
