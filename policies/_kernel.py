"""The compiled rollout kernel: whole simulated executions, one rollout at a time, sample by sample.

This is the only statement of the executor's rules on the planner side (see the
docstring of `policies.rollout` for the list and `orchestrator/executor.py` for
the source). It is compiled with numba on first use and cached on disk
(`__pycache__`), and `policies.rollout` imports it lazily, so that importing
`policies` neither imports numba nor compiles anything.

Every function takes plain arrays and scalars (numba's calling convention);
`policies.rollout` packs its value objects into them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numpy as np
from numpy.typing import NDArray

from policies.rollout import BUDGET_EXHAUSTED, COMPLETED, DEADLINE_EXCEEDED, FAILED

__all__ = ["run_many", "uniform", "warm_up"]

_F = TypeVar("_F", bound=Callable[..., Any])

_WAIT, _READY, _BUSY, _DONE = 0, 1, 2, 3
_EPS = 1e-12
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S11, _S27, _S30, _S31 = np.uint64(11), np.uint64(27), np.uint64(30), np.uint64(31)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def _jit(f: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(f))


@_jit
def _mix(x: np.uint64) -> np.uint64:
    x = x + _GOLD
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    y: np.uint64 = x ^ (x >> _S31)
    return y


@_jit
def uniform(seed: np.uint64, a: int, b: int, c: int) -> float:
    """Uniform [0, 1) from (seed, a, b, c): the same splitmix64 chain as `policies.rollout.uniform_hash`."""
    x = _mix(np.uint64(a) ^ seed)
    x = _mix(x ^ (np.uint64(b) * _GOLD))
    x = _mix(x ^ (np.uint64(c) * _M1))
    return float(x >> _S11) * _TO_UNIT


@_jit
def _launch(
    i: int,
    m: int,
    k: int,
    mt: int,
    start: float,
    first_sample: int,
    rid: int,
    seed: np.uint64,
    rows: NDArray[np.int64],
    row_start: int,
    row_count: int,
    t_success: NDArray[np.bool_],
    t_tokens: NDArray[np.int64],
    t_latency: NDArray[np.float64],
    s_tok: NDArray[np.int64],
    s_lat: NDArray[np.float64],
    s_end: NDArray[np.float64],
    s_alive: NDArray[np.bool_],
    ev: NDArray[np.int64],
    ev_n: NDArray[np.int64],
    ev_ptr: NDArray[np.int64],
    b_win: NDArray[np.bool_],
) -> float:
    """Draw `k` samples of (i, m) started at `start`; queue their ends; return the batch's first event time.

    Sample `j` reads row `rows[row_start + floor(u * row_count)]`, `u` hashed from (seed,
    rollout, subtask stream `i * 1_000_003 + 7`, first_sample + j). The events of a batch
    are its failed samples that end before the first passing one, in time order, then the
    passing one (later samples are cancelled by it and never end on their own).
    """
    # `uniform(seed, rid, stream, first_sample + j)` with the first two rounds hoisted out of the loop
    h = _mix(_mix(np.uint64(rid) ^ seed) ^ (np.uint64(i * 1_000_003 + 7) * _GOLD))
    win_t = math.inf
    win_j = -1
    for j in range(k):
        u = float(_mix(h ^ (np.uint64(first_sample + j) * _M1)) >> _S11) * _TO_UNIT
        row = rows[row_start + int(u * row_count)]
        tok = t_tokens[row]
        lat = t_latency[row]
        ok = t_success[row]
        if tok > mt:  # the shared max_tokens rule (`orchestrator.estimates.truncate`)
            lat = lat * (mt / tok)
            tok = mt
            ok = False
        end = start + lat
        if end <= 0.0:  # an in-flight sample with no longer row (fallback): ends at once
            end = 1e-9
        s_tok[i, j] = tok
        s_lat[i, j] = lat
        s_end[i, j] = end
        s_alive[i, j] = True
        if ok and end < win_t:
            win_t = end
            win_j = j
    n_ev = 0
    for j in range(k):
        if j == win_j or s_end[i, j] >= win_t:
            continue
        pos = n_ev  # insertion sort by end time (few failures precede a win)
        while pos > 0 and s_end[i, ev[i, pos - 1]] > s_end[i, j]:
            ev[i, pos] = ev[i, pos - 1]
            pos -= 1
        ev[i, pos] = j
        n_ev += 1
    if win_j >= 0:
        ev[i, n_ev] = win_j
        n_ev += 1
    ev_n[i] = n_ev
    ev_ptr[i] = 0
    b_win[i] = win_j >= 0
    return float(s_end[i, ev[i, 0]])


@_jit
def _cancel(
    i: int,
    k: int,
    at: float,
    start: float,
    in_c: float,
    price: float,
    s_tok: NDArray[np.int64],
    s_lat: NDArray[np.float64],
    s_alive: NDArray[np.bool_],
) -> tuple[float, int]:
    """Cancel the running samples of batch `i` at `at`; return (their pro-rata cost, how many)."""
    cost = 0.0
    count = 0
    for j in range(k):
        if s_alive[i, j]:
            frac = (at - start) / s_lat[i, j]
            frac = min(1.0, max(0.0, frac))
            cost += in_c + math.floor(s_tok[i, j] * frac) * price
            s_alive[i, j] = False
            count += 1
    return cost, count


@_jit
def _earliest_open(deadline: NDArray[np.float64], status: NDArray[np.int8], same: bool) -> float:
    """The earliest deadline of a subtask not complete yet (inf when all are)."""
    if same:
        return float(deadline[0]) if deadline.shape[0] else math.inf
    out = math.inf
    for i in range(deadline.shape[0]):
        if status[i] != _DONE and deadline[i] < out:
            out = deadline[i]
    return out


@_jit
def run_many(
    child_ptr: NDArray[np.int64],
    child_idx: NDArray[np.int64],
    allowed: NDArray[np.bool_],
    fallback: NDArray[np.int64],
    offset: NDArray[np.int64],
    size: NDArray[np.int64],
    t_success: NDArray[np.bool_],
    t_tokens: NDArray[np.int64],
    t_latency: NDArray[np.float64],
    t_rows: NDArray[np.int64],
    in_cost: NDArray[np.float64],
    out_price: NDArray[np.float64],
    default_mt: NDArray[np.int64],
    status0: NDArray[np.int8],
    attempts0: NDArray[np.int64],
    waiting0: NDArray[np.int64],
    fl_sub: NDArray[np.int64],
    fl_model: NDArray[np.int64],
    fl_k: NDArray[np.int64],
    fl_elapsed: NDArray[np.float64],
    fl_mt: NDArray[np.int64],
    fl_rows: NDArray[np.int64],
    fl_row_start: NDArray[np.int64],
    fl_row_count: NDArray[np.int64],
    budget: float,
    spent0: float,
    deadline: NDArray[np.float64],
    first_model: NDArray[np.int64],
    first_k: NDArray[np.int64],
    first_mt: NDArray[np.int64],
    cont_model: NDArray[np.int64],
    cont_k: NDArray[np.int64],
    r_first: NDArray[np.int64],
    r_cont: NDArray[np.int64],
    r_id: NDArray[np.int64],
    seed: np.uint64,
    kmax: int,
    max_samples: int,
    work_limit: int,
    out_work: NDArray[np.int64],
    out_outcome: NDArray[np.int8],
    out_spent: NDArray[np.float64],
    out_span: NDArray[np.float64],
    out_done: NDArray[np.float64],
) -> None:
    """Play rollout `r` = (first action `r_first[r]`, continuation `r_cont[r]`, stream `r_id[r]`) to its end.

    Writes outcome, settled spend, makespan and fraction of subtasks complete into the
    `out_*` arrays. Time 0 is the decision; `deadline[i]` is the latest time subtask `i`
    may complete (the time left, inf: none; less for a subtask that must leave time for
    work after it). The rollout ends `deadline_exceeded` once the clock passes the
    deadline of a subtask that has not completed.

    Bounded work: a rollout that has drawn more than `max_samples` samples (0: no cap)
    ends `failed`; and with `work_limit >= 0`, the call stops as soon as its work (samples
    drawn plus `n` per event) exceeds it, leaving the rollout it was playing and the later
    ones unplayed. `out_work` receives (work done, rollouts played).
    """
    n = status0.shape[0]
    same_deadline = True
    for i in range(n):
        if deadline[i] != deadline[0]:
            same_deadline = False
    status = np.empty(n, np.int8)
    attempts = np.empty(n, np.int64)
    waiting = np.empty(n, np.int64)
    b_model = np.zeros(n, np.int64)
    b_k = np.zeros(n, np.int64)
    b_start = np.zeros(n)
    b_hold = np.zeros(n)
    b_running = np.zeros(n, np.int64)
    b_win = np.zeros(n, np.bool_)
    next_t = np.empty(n)
    ev_n = np.zeros(n, np.int64)
    ev_ptr = np.zeros(n, np.int64)
    s_tok = np.zeros((n, kmax), np.int64)
    s_lat = np.ones((n, kmax))
    s_end = np.zeros((n, kmax))
    s_alive = np.zeros((n, kmax), np.bool_)
    ev = np.zeros((n, kmax), np.int64)
    n_flight = fl_sub.shape[0]
    work = 0
    played = 0
    out_of_work = False
    for r in range(r_id.shape[0]):
        c = r_first[r]
        q = r_cont[r]
        rid = r_id[r]
        n_done = 0
        n_run = 0
        n_ready = 0
        for i in range(n):
            status[i] = status0[i]
            attempts[i] = attempts0[i]
            waiting[i] = waiting0[i]
            next_t[i] = math.inf
            if status[i] == _DONE:
                n_done += 1
            elif status[i] == _READY:
                n_ready += 1
        spent = spent0
        held = 0.0
        t = 0.0
        limit = _earliest_open(deadline, status, same_deadline)
        for f in range(n_flight):  # running batches: redrawn conditioned on "still running"
            i = fl_sub[f]
            m = fl_model[f]
            k = fl_k[f]
            b_model[i], b_k[i], b_start[i], b_running[i] = m, k, -fl_elapsed[f], k
            b_hold[i] = in_cost[i, m] + fl_mt[f] * out_price[m]
            held += k * b_hold[i]
            next_t[i] = _launch(
                i, m, k, fl_mt[f], -fl_elapsed[f], attempts[i] - k, rid, seed,
                fl_rows, fl_row_start[f], fl_row_count[f],
                t_success, t_tokens, t_latency, s_tok, s_lat, s_end, s_alive, ev, ev_n, ev_ptr, b_win,
            )  # fmt: skip
            n_run += 1
        drawn = 0
        for f in range(n_flight):
            drawn += fl_k[f]
        first = True
        outcome = COMPLETED
        while True:
            if n_done == n:
                outcome = COMPLETED
                break
            work += n
            if work_limit >= 0 and work > work_limit:
                out_of_work = True
                break
            # ---- a decision whenever a subtask is ready (the executor asks after every event) ----
            asked = n_ready > 0
            refused = False
            for i in range(n):
                if n_ready == 0:
                    break
                if status[i] != _READY:
                    continue
                if first:
                    m, k, mt = first_model[c, i], first_k[c, i], first_mt[c, i]
                else:
                    m = cont_model[q]
                    if not allowed[i, m]:
                        m = fallback[i]
                    k, mt = cont_k[q], default_mt[i, m]
                if k <= 0:
                    continue
                hold = in_cost[i, m] + mt * out_price[m]
                go = k
                avail = budget - spent - held + _EPS
                if go * hold > avail:  # samples hold in order; the first refused stops the subtask
                    go = min(k, int(max(avail, 0.0) / max(hold, 1e-15)))
                    refused = refused or go < k
                if go == 0:
                    continue
                b_model[i], b_k[i], b_start[i], b_running[i], b_hold[i] = m, go, t, go, hold
                held += go * hold
                next_t[i] = _launch(
                    i, m, go, mt, t, attempts[i], rid, seed,
                    t_rows, offset[i, m], size[i, m],
                    t_success, t_tokens, t_latency, s_tok, s_lat, s_end, s_alive, ev, ev_n, ev_ptr, b_win,
                )  # fmt: skip
                attempts[i] += go
                drawn += go
                work += go
                status[i] = _BUSY
                n_run += 1
                n_ready -= 1
            if asked:
                first = False
                if n_run == 0:
                    outcome = BUDGET_EXHAUSTED if refused else FAILED
                    break
            if max_samples > 0 and drawn > max_samples:
                outcome = FAILED  # a plan that needs this many samples is no plan
                break
            # ---- the next sample end, or the deadline ----
            bi = -1
            best = math.inf
            for i in range(n):
                if next_t[i] < best:
                    best = next_t[i]
                    bi = i
            if bi < 0 and limit == math.inf:  # nothing runs or can start: an inconsistent start
                outcome = FAILED
                break
            if best > limit:
                for i in range(n):
                    if status[i] == _BUSY:
                        m = b_model[i]
                        cost, _ = _cancel(
                            i,
                            b_k[i],
                            limit,
                            b_start[i],
                            in_cost[i, m],
                            out_price[m],
                            s_tok,
                            s_lat,
                            s_alive,
                        )
                        spent += cost
                t = limit
                outcome = DEADLINE_EXCEEDED
                break
            t = best
            i = bi
            m = b_model[i]
            j = ev[i, ev_ptr[i]]
            ev_ptr[i] += 1
            s_alive[i, j] = False
            spent += in_cost[i, m] + s_tok[i, j] * out_price[m]
            held -= b_hold[i]  # each sample's hold is released when that sample ends
            b_running[i] -= 1
            if ev_ptr[i] < ev_n[i]:  # a failed sample; its batch runs on
                next_t[i] = s_end[i, ev[i, ev_ptr[i]]]
                continue
            next_t[i] = math.inf
            n_run -= 1
            if b_win[i]:  # the last event of a batch with a passing sample is that sample
                cost, count = _cancel(
                    i, b_k[i], t, b_start[i], in_cost[i, m], out_price[m], s_tok, s_lat, s_alive
                )
                spent += cost
                held -= count * b_hold[i]
                b_running[i] = 0
                status[i] = _DONE
                n_done += 1
                if not same_deadline and deadline[i] <= limit:
                    limit = _earliest_open(deadline, status, same_deadline)
                for e in range(child_ptr[i], child_ptr[i + 1]):
                    ch = child_idx[e]
                    waiting[ch] -= 1
                    if waiting[ch] == 0:
                        status[ch] = _READY
                        n_ready += 1
            else:
                status[i] = _READY
                n_ready += 1
        if out_of_work:
            break
        out_outcome[r] = outcome
        out_span[r] = t
        out_spent[r] = spent
        out_done[r] = n_done / n
        played += 1
    out_work[0] = work
    out_work[1] = played


def warm_up() -> None:
    """Compile `run_many` for the argument types `policies.rollout` passes (or load the disk cache)."""
    i64, f64 = np.int64, np.float64
    one = np.ones(1, dtype=i64)
    none_i, none_f = np.zeros(0, dtype=i64), np.zeros(0, dtype=f64)
    run_many(
        np.zeros(2, dtype=i64), none_i, np.ones((1, 1), dtype=np.bool_), np.zeros(1, dtype=i64),
        np.zeros((1, 1), dtype=i64), np.ones((1, 1), dtype=i64), np.ones(1, dtype=np.bool_),
        np.full(1, 10, dtype=i64), np.ones(1, dtype=f64), np.zeros(1, dtype=i64),
        np.zeros((1, 1), dtype=f64), np.full(1, 1e-6), np.full((1, 1), 16, dtype=i64),
        np.ones(1, dtype=np.int8), np.zeros(1, dtype=i64), np.zeros(1, dtype=i64),
        none_i, none_i, none_i, none_f, none_i, none_i, none_i, none_i,
        1.0, 0.0, np.full(1, math.inf),
        np.zeros((1, 1), dtype=i64), np.ones((1, 1), dtype=i64), np.full((1, 1), 16, dtype=i64),
        np.zeros(1, dtype=i64), one, np.zeros(1, dtype=i64), np.zeros(1, dtype=i64), np.zeros(1, dtype=i64),
        np.uint64(0), 1, 0, -1, np.zeros(2, dtype=i64),
        np.zeros(1, dtype=np.int8), np.zeros(1), np.zeros(1), np.zeros(1),
    )  # fmt: skip
