"""Vectorised Monte Carlo rollouts of the executor's semantics, many at once.

The arrays run over rollouts (`R`) and subtasks (`N`); each loop iteration
moves every live rollout to its own next batch end, so rollouts that follow
different plans share the same NumPy calls. The rules are the executor's
(`orchestrator/executor.py`):

- at each decision every ready subtask gets (model, k, max_tokens); samples
  start in topological order, each holding `input x in_price + max_tokens x
  out_price`; a sample whose hold does not fit in `budget - spent - held` is not
  started (and the subtask's later samples neither; later subtasks still try);
- a sample draws (success, output tokens, latency) and is truncated by the
  shared max_tokens rule (`orchestrator.estimates.truncate`, re-stated here
  element-wise and tested against it);
- the first passing sample completes the subtask at its end; running siblings
  are cancelled and settled pro rata (`floor(tokens x elapsed / latency)`);
  if all fail, the subtask is ready again when the last one ends;
- at the deadline everything running is cancelled pro rata: `deadline_exceeded`;
  a decision that starts nothing with nothing running ends the rollout
  `budget_exhausted` (holds refused) or `failed` (all deferred).

Deliberate simplifications (documented in docs/planners.md):

- a batch keeps its whole hold until the batch ends; the executor releases a
  failed sample's hold when that sample ends. Identical for k = 1; with k > 1
  it only matters when the budget is nearly spent;
- decisions happen at batch ends; the executor also re-asks the policy when a
  single sample of a larger batch fails while another subtask is ready (only
  possible after a deferral or a refused hold);
- in-flight batches are redrawn conditioned on still running: a drawn latency
  must exceed the elapsed time (up to 8 tries; then the batch is given a tenth
  of its drawn latency as remaining time);
- parametric (lognormal) estimates are replaced by a fixed 256-draw table.

Random numbers are a hash of (seed, rollout id, subtask, sample number), so a
rollout id sees the same luck whatever plan it follows: common random numbers
across candidate actions and continuations, with no stored random tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from orchestrator.estimates import AttemptEstimate, default_max_tokens
from orchestrator.plan import PlanState

__all__ = [
    "BUDGET_EXHAUSTED",
    "COMPLETED",
    "DEADLINE_EXCEEDED",
    "FAILED",
    "RolloutPlan",
    "RolloutProblem",
    "RolloutResult",
    "RolloutStart",
    "compile_problem",
    "run_rollouts",
    "start_from_state",
    "uniform_hash",
]

RUNNING, COMPLETED, BUDGET_EXHAUSTED, DEADLINE_EXCEEDED, FAILED = 0, 1, 2, 3, 4
_WAIT, _READY, _BUSY, _DONE = 0, 1, 2, 3
_EPS = 1e-12
_TABLE = 256
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


@dataclass(frozen=True, kw_only=True, eq=False)
class RolloutProblem:
    """A workflow's estimates compiled into flat arrays (built once per run)."""

    subtasks: tuple[str, ...]
    """Subtask names, topological order (index `i`)."""
    models: tuple[str, ...]
    """Every model any subtask may use (index `m`)."""
    parents: F64
    """(N, N): `parents[p, c] = 1` when `p` is a parent of `c`."""
    n_parents: F64
    """(N,) number of parents."""
    allowed: B
    """(N, M) whether subtask `i` may use model `m`."""
    fallback: I64
    """(N,) first listed model of each subtask (used when a continuation names another)."""
    offset: I64
    """(N, M) start of (i, m)'s rows in the sample table."""
    size: I64
    """(N, M) number of rows of (i, m) (0 when not allowed)."""
    t_success: B
    """Sample table: success."""
    t_tokens: I64
    """Sample table: output tokens."""
    t_latency: F64
    """Sample table: latency (seconds, > 0)."""
    in_cost: F64
    """(N, M) USD of one attempt's input tokens."""
    out_price: F64
    """(M,) USD per output token."""
    default_mt: I64
    """(N, M) `default_max_tokens` of each estimate."""
    success_prob: F64
    """(N, M) estimated success probability."""
    mean_cost: F64
    """(N, M) expected USD of one untruncated attempt."""
    mean_latency: F64
    """(N, M) mean latency."""

    @property
    def n(self) -> int:
        """Number of subtasks."""
        return len(self.subtasks)

    def index(self, subtask: str) -> int:
        """Index of a subtask."""
        return self.subtasks.index(subtask)

    def hold(self, i: int, m: int, max_tokens: int) -> float:
        """USD one sample of (i, m) holds with this cap."""
        return float(self.in_cost[i, m] + max_tokens * self.out_price[m])


def _table(est: AttemptEstimate) -> tuple[B, I64, F64]:
    if est.samples:
        succ = np.array([s.success for s in est.samples], dtype=np.bool_)
        tok = np.array([max(0, s.output_tokens) for s in est.samples], dtype=np.int64)
        lat = np.array([s.latency_s for s in est.samples], dtype=np.float64)
    else:
        d = est.draw(np.random.default_rng(20240611), _TABLE)
        succ, tok, lat = d.success, d.output_tokens, d.latency_s
    return succ, tok, np.maximum(lat, 1e-6)


def compile_problem(state: PlanState) -> RolloutProblem:
    """Flatten the estimates and prices of `state` into arrays."""
    dag = state.dag
    subtasks = dag.subtasks
    models = tuple(dict.fromkeys(m for s in subtasks for m in dag.models[s]))
    n, k = len(subtasks), len(models)
    idx = {s: i for i, s in enumerate(subtasks)}
    parents = np.zeros((n, n))
    for s in subtasks:
        for p in dag.parents[s]:
            parents[idx[p], idx[s]] = 1.0
    allowed = np.zeros((n, k), dtype=np.bool_)
    offset = np.zeros((n, k), dtype=np.int64)
    size = np.zeros((n, k), dtype=np.int64)
    in_cost, default_mt = np.zeros((n, k)), np.ones((n, k), dtype=np.int64)
    p_succ, mean_cost, mean_lat = np.zeros((n, k)), np.full((n, k), np.inf), np.full((n, k), np.inf)
    out_price = np.array([state.prices[m].output_usd_per_token for m in models])
    chunks: list[tuple[B, I64, F64]] = []
    pos = 0
    for i, s in enumerate(subtasks):
        for m_name in dag.models[s]:
            m = models.index(m_name)
            est = state.estimates[(s, m_name)]
            table = _table(est)
            allowed[i, m], offset[i, m], size[i, m] = True, pos, len(table[0])
            pos += len(table[0])
            chunks.append(table)
            in_cost[i, m] = est.input_tokens * state.prices[m_name].input_usd_per_token
            default_mt[i, m] = default_max_tokens(est)
            p_succ[i, m] = float(table[0].mean())
            mean_cost[i, m] = in_cost[i, m] + float(table[1].mean()) * out_price[m]
            mean_lat[i, m] = float(table[2].mean())
    return RolloutProblem(
        subtasks=subtasks,
        models=models,
        parents=parents,
        n_parents=parents.sum(axis=0),
        allowed=allowed,
        fallback=np.array([models.index(dag.models[s][0]) for s in subtasks], dtype=np.int64),
        offset=offset,
        size=size,
        t_success=np.concatenate([c[0] for c in chunks]),
        t_tokens=np.concatenate([c[1] for c in chunks]),
        t_latency=np.concatenate([c[2] for c in chunks]),
        in_cost=in_cost,
        out_price=out_price,
        default_mt=default_mt,
        success_prob=p_succ,
        mean_cost=mean_cost,
        mean_latency=mean_lat,
    )


@dataclass(frozen=True, kw_only=True)
class RolloutStart:
    """Where the rollouts start: the decision's state, relative to now."""

    status: NDArray[np.int8]
    """(N,) 0 waiting for parents, 1 ready, 2 running, 3 complete."""
    attempts: I64
    """(N,) samples started so far per subtask (for the random streams)."""
    in_flight: tuple[tuple[int, int, int, float, int], ...]
    """Running batches: (subtask, model, samples, elapsed_s, max_tokens)."""
    budget: float
    """The run's budget, USD."""
    spent: float
    """Settled spend, USD."""
    deadline: float
    """Time left (inf: none)."""


def start_from_state(prob: RolloutProblem, state: PlanState) -> RolloutStart:
    """The rollout start matching a `PlanState`."""
    status = np.zeros(prob.n, dtype=np.int8)
    for i, s in enumerate(prob.subtasks):
        if s in state.completed:
            status[i] = _DONE
    busy = []
    for f in state.in_flight:
        i = prob.index(f.subtask)
        status[i] = _BUSY
        busy.append((i, prob.models.index(f.model), f.samples, f.elapsed_s, f.max_tokens))
    for s in state.ready:
        status[prob.index(s)] = _READY
    return RolloutStart(
        status=status,
        attempts=np.array([state.attempts.get(s, 0) for s in prob.subtasks], dtype=np.int64),
        in_flight=tuple(busy),
        budget=state.budget_usd,
        spent=state.spent_usd,
        deadline=np.inf if state.remaining_time_s is None else max(0.0, state.remaining_time_s),
    )


@dataclass(frozen=True, kw_only=True)
class RolloutPlan:
    """What each rollout does: a first action, then a continuation Seq-(m, k)."""

    rollout_id: I64
    """(R,) common-random-number stream of each rollout."""
    first_model: I64
    """(R, N) model of the first action per subtask (only ready subtasks are read)."""
    first_k: I64
    """(R, N) samples of the first action (0 defers)."""
    first_mt: I64
    """(R, N) max_tokens of the first action."""
    cont_model: I64
    """(R,) continuation model (subtasks that cannot use it use their first model)."""
    cont_k: I64
    """(R,) continuation samples per ready subtask."""


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

    @property
    def completed(self) -> B:
        """Whether each rollout completed."""
        out: B = self.outcome == COMPLETED
        return out


def _launch(
    prob: RolloutProblem,
    seed: int,
    rid: I64,
    i: I64,
    m: I64,
    n: I64,
    mt: I64,
    start: F64,
    first_sample: I64,
    deadline: float,
    elapsed: F64 | None = None,
) -> tuple[F64, B, F64, F64]:
    """Draw batches; return (end time, success, settled cost at end, settled cost if cut at deadline)."""
    kmax = int(n.max())
    j = np.arange(kmax, dtype=np.int64)
    valid = j[None, :] < n[:, None]
    base = (i * 1_000_003 + 7)[:, None]
    u = uniform_hash(seed, rid[:, None], base, first_sample[:, None] + j[None, :])
    rows = prob.offset[i, m][:, None] + (u * prob.size[i, m][:, None]).astype(np.int64)
    succ, tok, lat = prob.t_success[rows], prob.t_tokens[rows], prob.t_latency[rows]
    cap = mt[:, None]
    if elapsed is not None:  # still running after `elapsed`: redraw short ones
        for attempt in range(1, 9):
            short = lat * np.where(tok > cap, cap / np.maximum(tok, 1), 1.0) <= elapsed[:, None]
            if not short.any():
                break
            u2 = uniform_hash(seed + attempt, rid[:, None], base, first_sample[:, None] + j[None, :])
            rows2 = prob.offset[i, m][:, None] + (u2 * prob.size[i, m][:, None]).astype(np.int64)
            rows = np.where(short, rows2, rows)
            succ, tok, lat = prob.t_success[rows], prob.t_tokens[rows], prob.t_latency[rows]
    over = tok > cap  # the shared truncation rule, element-wise
    lat = lat * np.where(over, cap / np.maximum(tok, 1), 1.0)
    succ = succ & ~over & valid
    tok = np.minimum(tok, cap)
    if elapsed is not None:
        still = lat > elapsed[:, None]
        lat = np.where(still, lat, elapsed[:, None] + 0.1 * lat)
    dur_ok = np.where(succ, lat, np.inf).min(axis=1)
    any_ok = np.isfinite(dur_ok)
    dur = np.where(any_ok, dur_ok, np.where(valid, lat, 0.0).max(axis=1))
    in_c = prob.in_cost[i, m][:, None]
    price = prob.out_price[m][:, None]

    def settled(at: F64) -> F64:
        part = np.floor(tok * np.clip(at[:, None] / lat, 0.0, 1.0))
        cost: F64 = np.where(valid, in_c + np.where(lat <= at[:, None], tok, part) * price, 0.0).sum(axis=1)
        return cost

    until_deadline = deadline - start
    cost_dl = settled(until_deadline) if np.isfinite(deadline) else np.zeros(len(n))
    return start + dur, any_ok, settled(dur), cost_dl


def run_rollouts(prob: RolloutProblem, start: RolloutStart, plan: RolloutPlan, *, seed: int) -> RolloutResult:
    """Play every rollout of `plan` to its end under the executor's rules."""
    r_all = len(plan.rollout_id)
    n = prob.n
    outcome = np.zeros(r_all, dtype=np.int8)
    spent_out, span_out, frac_out = np.zeros(r_all), np.zeros(r_all), np.zeros(r_all)
    live = np.arange(r_all)
    rid = plan.rollout_id
    status = np.tile(start.status, (r_all, 1))
    attempts = np.tile(start.attempts, (r_all, 1))
    t = np.zeros(r_all)
    bend = np.full((r_all, n), np.inf)
    bok = np.zeros((r_all, n), dtype=np.bool_)
    bcost, bcost_dl, bhold = np.zeros((r_all, n)), np.zeros((r_all, n)), np.zeros((r_all, n))
    spent = np.full(r_all, start.spent)
    held = np.zeros(r_all)
    for fi, fm, fk, elapsed, fmt in start.in_flight:
        ones = np.ones(r_all, dtype=np.int64)
        end, ok, cost, cost_dl = _launch(
            prob,
            seed,
            rid,
            fi * ones,
            fm * ones,
            fk * ones,
            fmt * ones,
            np.full(r_all, -elapsed),
            attempts[:, fi] - fk,
            start.deadline,
            np.full(r_all, elapsed),
        )
        bend[:, fi], bok[:, fi], bcost[:, fi], bcost_dl[:, fi] = end, ok, cost, cost_dl
        bhold[:, fi] = fk * prob.hold(fi, fm, fmt)
        held += bhold[:, fi]
    first = True
    cols = np.arange(n)
    while live.size:
        # ---- decide and launch for every live rollout (each is at a decision point) ----
        st = status[live]
        ready = st == _READY
        if first:
            model, k_want, mt = plan.first_model[live], plan.first_k[live], plan.first_mt[live]
        else:
            cm = plan.cont_model[live]
            model = np.where(prob.allowed[cols[None, :], cm[:, None]], cm[:, None], prob.fallback[None, :])
            k_want = np.broadcast_to(plan.cont_k[live][:, None], (live.size, n))
            mt = prob.default_mt[cols[None, :], model]
        k_want = np.where(ready, k_want, 0)
        hold1 = np.maximum(prob.in_cost[cols[None, :], model] + mt * prob.out_price[model], 1e-15)
        avail = start.budget - spent[live] - held[live] + _EPS
        k_go = k_want.copy()
        tight = (k_want * hold1).sum(axis=1) > avail
        if tight.any():
            rows = np.flatnonzero(tight)
            left = avail[rows].copy()
            for c in np.flatnonzero(k_want[rows].any(axis=0)):
                fit = np.minimum(
                    k_want[rows, c], np.floor(np.maximum(left, 0.0) / hold1[rows, c]).astype(np.int64)
                )
                k_go[rows, c] = fit
                left -= fit * hold1[rows, c]
        lr, lc = np.nonzero(k_go)
        if lr.size:
            g = live[lr]
            end, ok, cost, cost_dl = _launch(
                prob,
                seed,
                rid[g],
                lc,
                model[lr, lc],
                k_go[lr, lc],
                mt[lr, lc],
                t[g],
                attempts[g, lc],
                start.deadline,
            )
            bend[g, lc], bok[g, lc], bcost[g, lc], bcost_dl[g, lc] = end, ok, cost, cost_dl
            hold = k_go[lr, lc] * hold1[lr, lc]
            bhold[g, lc] = hold
            np.add.at(held, g, hold)
            attempts[g, lc] += k_go[lr, lc]
            status[g, lc] = _BUSY
        first = False
        busy = (status[live] == _BUSY).any(axis=1)
        if not busy.all():
            stop = live[~busy]
            refused = ((k_want > 0) & (k_go == 0)).any(axis=1)[~busy]
            outcome[stop] = np.where(refused, BUDGET_EXHAUSTED, FAILED)
            spent_out[stop], span_out[stop] = spent[stop], t[stop]
            live = live[busy]
            if not live.size:
                break
        # ---- advance each live rollout to its next batch end ----
        nxt = bend[live].argmin(axis=1)
        when = bend[live, nxt]
        late = when > start.deadline
        if late.any():
            gone = live[late]
            outcome[gone] = DEADLINE_EXCEEDED
            spent_out[gone] = spent[gone] + np.where(status[gone] == _BUSY, bcost_dl[gone], 0.0).sum(axis=1)
            span_out[gone] = start.deadline
            live, nxt, when = live[~late], nxt[~late], when[~late]
        t[live] = when
        spent[live] += bcost[live, nxt]
        held[live] -= bhold[live, nxt]
        bend[live, nxt] = np.inf
        win = bok[live, nxt]
        status[live, nxt] = np.where(win, _DONE, _READY)
        if win.any():
            w = live[win]
            done = (status[w] == _DONE).astype(np.float64)
            opened = (status[w] == _WAIT) & (done @ prob.parents >= prob.n_parents[None, :])
            status[w] = np.where(opened, _READY, status[w])
            finished = (status[w] == _DONE).all(axis=1)
            if finished.any():
                f = w[finished]
                outcome[f] = COMPLETED
                spent_out[f], span_out[f] = spent[f], t[f]
                live = w[~finished] if w.size == live.size else live[~np.isin(live, f)]
    frac_out[:] = (status == _DONE).mean(axis=1)
    return RolloutResult(outcome=outcome, spent=spent_out, makespan=span_out, done_fraction=frac_out)
