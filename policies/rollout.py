"""Monte Carlo rollouts of the executor's semantics: the planner's simulator.

A rollout plays one whole execution from a decision's state: the candidate action
first, then a continuation policy Seq-(m, k), until the DAG completes or a
constraint ends it. The rules are the executor's (`orchestrator/executor.py`),
sample by sample, in compiled code (`policies._kernel`, numba, compiled on first
use and cached on disk):

- a decision happens whenever a subtask is ready, after every event (a sample
  ending), like the executor; every ready subtask gets (model, k, max_tokens);
  samples start in topological order, each holding `input x in_price +
  max_tokens x out_price`; a sample whose hold does not fit in `budget - spent -
  held` is not started (nor the subtask's later samples; later subtasks still try);
- a sample draws (success, output tokens, latency) from the (subtask, model) table
  and is truncated by the shared max_tokens rule (`orchestrator.estimates.truncate`);
- a failed sample settles its cost and releases its own hold when it ends; the
  first passing sample completes the subtask; running siblings are cancelled and
  settled pro rata (`floor(tokens x elapsed / latency)`); if all fail, the subtask
  is ready again when the last one ends;
- at the deadline everything running is cancelled pro rata: `deadline_exceeded` (a
  subproblem may give a subtask an earlier deadline of its own: `RolloutStart.subtask_deadline`);
  a decision that starts nothing with nothing running ends the rollout
  `budget_exhausted` (holds refused) or `failed` (all deferred).

What the planner cannot know is redrawn: samples in flight at the decision are
drawn from the rows of their table whose (truncated) latency exceeds the time
they have already run (exact conditioning on "still running"; if no row is that
long, the longest row ends at once). Parametric (lognormal) estimates are a fixed
256-draw table.

Random numbers are a hash of (seed, rollout id, subtask, sample number), so a
rollout id sees the same luck whatever plan it follows: common random numbers
across candidate actions and continuations, with no stored random tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from orchestrator.plan import PlanState
from policies.problem import RolloutProblem, compile_problem

__all__ = [
    "BUDGET_EXHAUSTED",
    "COMPLETED",
    "DEADLINE_EXCEEDED",
    "FAILED",
    "MAX_SAMPLES_PER_SUBTASK",
    "RolloutPlan",
    "RolloutProblem",
    "RolloutResult",
    "RolloutStart",
    "compile_problem",
    "run_rollouts",
    "start_from_state",
    "uniform_hash",
    "warm_up",
]

RUNNING, COMPLETED, BUDGET_EXHAUSTED, DEADLINE_EXCEEDED, FAILED = 0, 1, 2, 3, 4
MAX_SAMPLES_PER_SUBTASK = 1024
"""A rollout that draws more samples than this per subtask ends `failed`.

A plan that needs so many is no plan (a subtask that never passes, retried on a large
budget and a far deadline, would otherwise make one rollout draw millions of samples);
the cap bounds every decision's work. No rollout of the pool benchmarks comes near it."""
_WAIT, _READY, _BUSY, _DONE = 0, 1, 2, 3
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


def _mix(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def uniform_hash(seed: int, a: I64, b: I64, c: I64) -> F64:
    """Uniform [0, 1) numbers that depend only on (seed, a, b, c) (splitmix64; broadcasts)."""
    x = _mix(np.asarray(a, dtype=np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    x = _mix(x ^ (np.asarray(b, dtype=np.uint64) * _GOLD))
    x = _mix(x ^ (np.asarray(c, dtype=np.uint64) * _M1))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@dataclass(frozen=True, kw_only=True)
class RolloutStart:
    """Where the rollouts start: the decision's state, relative to now."""

    status: NDArray[np.int8]
    """(N,) 0 waiting for parents, 1 ready, 2 running, 3 complete."""
    attempts: I64
    """(N,) samples started so far per subtask (for the random streams)."""
    waiting_on: I64
    """(N,) parents not complete yet."""
    in_flight: tuple[tuple[int, int, int, float, int], ...]
    """Running batches: (subtask, model, running samples, elapsed_s, max_tokens)."""
    flight_rows: I64
    """Table rows each running batch may still draw (latency after truncation > elapsed), concatenated."""
    flight_row_start: I64
    """(F,) where each running batch's rows start in `flight_rows`."""
    flight_row_count: I64
    """(F,) how many rows each running batch may draw."""
    budget: float
    """The run's budget, USD."""
    spent: float
    """Settled spend, USD."""
    deadline: float
    """Time left (inf: none)."""
    subtask_deadline: F64 | None = None
    """(N,) the latest time each subtask may complete (<= `deadline`), for a subproblem whose
    subtasks must leave time for work after them; `None`: `deadline` for all."""


def _still_running_rows(prob: RolloutProblem, i: int, m: int, max_tokens: int, elapsed: float) -> I64:
    rows = np.arange(prob.offset[i, m], prob.offset[i, m] + prob.size[i, m], dtype=np.int64)
    tok = prob.t_tokens[rows]
    lat = prob.t_latency[rows] * np.where(tok > max_tokens, max_tokens / np.maximum(tok, 1), 1.0)
    longer = rows[lat > elapsed]
    return longer if longer.size else rows[np.argmax(lat)][None]


def start_from_state(prob: RolloutProblem, state: PlanState) -> RolloutStart:
    """The rollout start matching a `PlanState` (subtasks outside `prob` are left out)."""
    status = np.zeros(prob.n, dtype=np.int8)
    for i, s in enumerate(prob.subtasks):
        if s in state.completed:
            status[i] = _DONE
    busy = []
    rows: list[I64] = []
    for f in state.in_flight:
        if f.subtask not in prob:
            continue
        i, m = prob.index(f.subtask), prob.models.index(f.model)
        status[i] = _BUSY
        busy.append((i, m, f.samples, f.elapsed_s, f.max_tokens))
        rows.append(_still_running_rows(prob, i, m, f.max_tokens, f.elapsed_s))
    for s in state.ready:
        if s in prob:
            status[prob.index(s)] = _READY
    done = np.zeros(prob.n, dtype=np.int64)  # complete parents of each subtask
    for p in np.flatnonzero(status == _DONE):
        np.add.at(done, prob.child_idx[prob.child_ptr[p] : prob.child_ptr[p + 1]], 1)
    counts = np.array([len(r) for r in rows], dtype=np.int64)
    return RolloutStart(
        status=status,
        attempts=np.array([state.attempts.get(s, 0) for s in prob.subtasks], dtype=np.int64),
        waiting_on=prob.parent_count - done,
        in_flight=tuple(busy),
        flight_rows=np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64),
        flight_row_start=np.cumsum(counts) - counts,
        flight_row_count=counts,
        budget=state.budget_usd,
        spent=state.spent_usd,
        deadline=np.inf if state.remaining_time_s is None else max(0.0, state.remaining_time_s),
    )


@dataclass(frozen=True, kw_only=True)
class RolloutPlan:
    """What each rollout does: a first action (a row of `first_*`), then a continuation Seq-(m, k).

    Rollout `r` plays first action `first[r]` then continuation `cont[r]` on random stream
    `rollout_id[r]`. Without `first` / `cont` (`None`), rollout `r` uses row `r` of each.
    """

    rollout_id: I64
    """(R,) common-random-number stream of each rollout."""
    first_model: I64
    """(C, N) model of each first action per subtask (only ready subtasks are read)."""
    first_k: I64
    """(C, N) samples of the first action (0 defers)."""
    first_mt: I64
    """(C, N) max_tokens of the first action."""
    cont_model: I64
    """(Q,) continuation model (subtasks that cannot use it use their first listed model)."""
    cont_k: I64
    """(Q,) continuation samples per ready subtask."""
    first: I64 | None = None
    """(R,) first action of each rollout (row of `first_*`); `None`: `arange(R)`."""
    cont: I64 | None = None
    """(R,) continuation of each rollout; `None`: `arange(R)`."""


@dataclass(frozen=True, kw_only=True)
class RolloutResult:
    """How each rollout ended."""

    outcome: NDArray[np.int8]
    """(R,) COMPLETED, BUDGET_EXHAUSTED, DEADLINE_EXCEEDED or FAILED."""
    spent: F64
    """(R,) settled spend at the end, USD."""
    makespan: F64
    """(R,) time from the start until the end."""
    done_fraction: F64
    """(R,) fraction of subtasks complete at the end."""
    played: int
    """Rollouts played: all of them, or the first `played` when a work limit stopped the call."""
    work: int
    """Work done (samples drawn plus the subtask count per event), the unit of `work_limit`."""

    @property
    def completed(self) -> B:
        """Whether each rollout completed."""
        out: B = self.outcome == COMPLETED
        return out


def run_rollouts(
    prob: RolloutProblem, start: RolloutStart, plan: RolloutPlan, *, seed: int, work_limit: int | None = None
) -> RolloutResult:
    """Play every rollout of `plan` to its end under the executor's rules (compiled; see the module doc).

    A rollout that draws more than `MAX_SAMPLES_PER_SUBTASK` samples per subtask of the
    problem ends `failed`. With `work_limit`, the call stops once its work exceeds it;
    only the first `played` rollouts of the result are meaningful.
    """
    from policies import _kernel  # numba: imported and compiled on first use only

    r_all = len(plan.rollout_id)
    arange = np.arange(r_all, dtype=np.int64)
    first = arange if plan.first is None else np.ascontiguousarray(plan.first, dtype=np.int64)
    cont = arange if plan.cont is None else np.ascontiguousarray(plan.cont, dtype=np.int64)
    kmax = max(
        1,
        int(plan.first_k.max(initial=0)),
        int(plan.cont_k.max(initial=0)),
        max((f[2] for f in start.in_flight), default=0),
    )
    outcome = np.zeros(r_all, dtype=np.int8)
    spent, span, done = np.zeros(r_all), np.zeros(r_all), np.zeros(r_all)
    work = np.zeros(2, dtype=np.int64)
    flight = np.array([f[:3] for f in start.in_flight], dtype=np.int64).reshape(-1, 3)
    _kernel.run_many(
        prob.child_ptr,
        prob.child_idx,
        prob.allowed,
        prob.fallback,
        prob.offset,
        prob.size,
        prob.t_success,
        prob.t_tokens,
        prob.t_latency,
        prob.t_rows,
        prob.in_cost,
        prob.out_price,
        prob.default_mt,
        start.status,
        start.attempts,
        start.waiting_on,
        np.ascontiguousarray(flight[:, 0]),
        np.ascontiguousarray(flight[:, 1]),
        np.ascontiguousarray(flight[:, 2]),
        np.array([f[3] for f in start.in_flight], dtype=np.float64),
        np.array([f[4] for f in start.in_flight], dtype=np.int64),
        start.flight_rows,
        start.flight_row_start,
        start.flight_row_count,
        float(start.budget),
        float(start.spent),
        np.full(prob.n, float(start.deadline))
        if start.subtask_deadline is None
        else np.ascontiguousarray(np.minimum(start.subtask_deadline, start.deadline), dtype=np.float64),
        np.ascontiguousarray(plan.first_model, dtype=np.int64),
        np.ascontiguousarray(plan.first_k, dtype=np.int64),
        np.ascontiguousarray(plan.first_mt, dtype=np.int64),
        np.ascontiguousarray(plan.cont_model, dtype=np.int64),
        np.ascontiguousarray(plan.cont_k, dtype=np.int64),
        first,
        cont,
        np.ascontiguousarray(plan.rollout_id, dtype=np.int64),
        np.uint64(seed & 0xFFFFFFFFFFFFFFFF),
        kmax,
        MAX_SAMPLES_PER_SUBTASK * prob.n,
        -1 if work_limit is None else max(0, work_limit),
        work,
        outcome,
        spent,
        span,
        done,
    )
    return RolloutResult(
        outcome=outcome,
        spent=spent,
        makespan=span,
        done_fraction=done,
        played=int(work[1]),
        work=int(work[0]),
    )


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the rollout kernel now, so no decision pays for it."""
    from policies import _kernel

    _kernel.warm_up()
