"""Where a recorded run stopped, so that `arun(..., resume=point)` continues it.

A run is not replayed: the planner reacts to timing, so running it again would take
other decisions and pay again. It is rebuilt from its own journal, the calling tree:
completed subtasks keep their recorded outputs and are not run again, every recorded
call stays spent exactly once (calls that were in flight when its process died are
settled at their reservation, `lost_in_crash`), and it continues against the same
absolute deadline and the same budget, with ids and decision numbers after the
recorded ones. `storage.resume.resume_point` reads a point from the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from orchestrator.records import RunRecord, SubtaskRecord

__all__ = ["ResumePoint"]


@dataclass(frozen=True, kw_only=True)
class ResumePoint:
    """A recorded run's state, from which it continues."""

    run: RunRecord
    """The run as recorded: id, workflow, policy, budget, deadline, seed, inputs, start."""
    completed: Mapping[str, SubtaskRecord]
    """Completed subtasks with their outputs (whole, as recorded: JSON values)."""
    attempts: Mapping[str, int] = field(default_factory=dict)
    """Attempts already started per subtask (they count against `max_attempts`)."""
    batches: Mapping[str, int] = field(default_factory=dict)
    """Batches already started per subtask (new ones are numbered after them)."""
    spent_nano: int = 0
    """What the recorded calls cost, lost ones at their reservation: the run's spend so far."""
    next_id: int = 0
    """The first attempt and span number not used yet (`RUN.aN`, `RUN.sN`)."""
    next_decision: int = 0
    """The first decision index not used yet."""
    lost_calls: int = 0
    """Calls that were in flight when the run stopped, now `lost_in_crash`."""
    resumed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the point was taken; the run's clock continues from `resumed_at - run.started_at`."""

    @property
    def elapsed_s(self) -> float:
        """Run time already gone: the deadline stays where it was."""
        return max(0.0, (self.resumed_at - self.run.started_at).total_seconds())
