"""Monte Carlo Portfolio Planning (MCPP): choose the action whose best continuation completes most often.

The method of ../shared/MCPP.md on the executor's semantics (`policies.rollout`):

1. candidate actions: every uniform (m, k); a full per-subtask enumeration when
   few subtasks are ready and the product of choices is small; otherwise a
   random enumeration of 3 ready subtasks with one shared (m, k) for the rest;
   capped, uniforms kept. With `allow_defer`, k = 0 is a choice; with
   `choose_max_tokens`, a tighter cap (the 90th percentile of output tokens) is.
   Actions that the budget turns into the same effective launch are merged.
2. continuations: Seq-(m, k) for every model and level.
3. score of a pair = fraction of rollouts that complete; value of an action = its
   best continuation; execute the best pair's action.

`racing=False` (`mcpp_full`) gives every pair the same M rollouts, like the
reference. `racing=True` (`mcpp`) spends rollouts where they decide something:
the continuations are first screened on the pure Seq policies and every candidate
starts with the best two; after the first round the eight leading actions also get
every other continuation (caught up on the same rollout ids), because a mixed
action's best continuation is often not a pure-Seq leader; then pairs are raced by
successive halving (8, 16, 40 and, for the finalists, 64 more rollouts), every
round on the same fresh rollout ids for all survivors (common random numbers), so
that a pair is dropped only against rivals that saw the same luck.

What it answers is exactly the launch its rollouts played: the chosen action's samples
lowered to what the budget left can hold (`policies.feasibility.samples_that_fit`,
subtasks in order; a subtask none of whose samples fit is deferred, as simulated), caps
never above a subtask's ceiling (its rollouts cap calls there too), and the answer goes
through `policies.feasibility.repair` like every policy's.

Big DAGs: a decision plays at most `horizon` subtasks in its rollouts, the frontier
and the next levels, and summarises the rest (`policies._horizon`); a DAG within the
horizon is planned whole, exactly as before. The estimates are compiled once per run
and again only where an entry changed (`policies.problem.CompiledDag`).

Time: with `state.time_budget_s` set, racing adds a round only when its predicted time
fits what is left (`policies._racing.Clock`) and answers with the best pair so far; when
not even the first round fits, the answer is every ready subtask's cheap plan (one
sample of its model with the least expected cost per success), repaired.

The rollouts run in a compiled kernel that releases the GIL; a process's first decision
compiles it (or loads it from the disk cache) unless `policies.rollout.warm_up()` ran
before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from orchestrator.errors import ConfigError
from orchestrator.plan import Allocation, Assignment, PlanState
from policies._horizon import decision_view
from policies._racing import Choices, Clock, Evaluator
from policies.feasibility import MAX_SAMPLES, repair, samples_that_fit
from policies.problem import CompiledDag, RolloutProblem, compile_problem
from policies.rollout import RolloutStart, start_from_state

__all__ = ["MCPP", "MCPPConfig", "action_values"]

I64 = NDArray[np.int64]

_FIRST_GUESS_S_PER_WORK = 1e-8
"""Seconds per unit of kernel work assumed before any call was measured (a slow machine: ~5e-9 measured)."""
_ANSWER_SHARE = 0.1
"""Share of a decision's time budget kept for building the answer after the last rollouts."""


@dataclass(frozen=True, kw_only=True)
class MCPPConfig:
    """Knobs of MCPP (defaults: the reference's where it has one)."""

    k_levels: tuple[int, ...] = (1, 4, 16, 64)
    """Sample counts an action or continuation may use."""
    rollouts: int = 64
    """M: rollouts per (action, continuation) pair without racing (the reference's M)."""
    max_candidates: int = 2048
    """Cap on candidate actions (uniform ones are always kept)."""
    enumerate_max_ready: int = 3
    """Enumerate every per-subtask choice when at most this many subtasks are ready ..."""
    enumerate_max_product: int = 64
    """... and the product of their choice counts is at most this."""
    partial_enumeration: int = 3
    """Otherwise enumerate this many random ready subtasks (the rest share one (m, k))."""
    racing: bool = True
    """Successive halving over pairs with common random numbers instead of M for every pair."""
    racing_candidates: int = 96
    """With racing: candidates kept after merging (uniform ones first, then a seeded sample)."""
    racing_continuations: int = 2
    """With racing: continuations every candidate starts with (the best on the pure Seq-(m, k) screen)."""
    racing_rounds: tuple[int, ...] = (8, 16, 40, 64)
    """With racing: new rollouts per survivor in each round.

    The first three sum to M = 64; the last round gives the few finalists 64 more, so
    that the final choice among near-equal pairs is less a matter of luck."""
    racing_keep: float = 0.34
    """With racing: fraction of pairs surviving each round."""
    racing_widen: int = 8
    """With racing: after the first round, the best this-many actions also get every continuation."""
    allow_defer: bool = False
    """Whether an action may defer a ready subtask (k = 0) while something else runs.

    Off by default: on pool_dev it made no measurable difference (0.587 with, 0.584 without,
    6 trials; `benchmarks/results/mcpp_ablation.json`)."""
    choose_max_tokens: bool = True
    """Whether an action may use a tighter max_tokens than the default (smaller holds).

    On by default: 0.587 with, 0.573 without on pool_dev (6 trials)."""
    horizon: int | None = 24
    """Most subtasks a decision plays in its rollouts (`policies._horizon`).

    A DAG of at most this many subtasks is planned whole, exactly as without a horizon;
    a larger one plans the frontier and the next levels, the rest summarised by their
    cheap plans. `None` always plans the whole DAG (per-decision work grows with it)."""
    seed: int = 0
    """Seed of candidate sampling and of the rollouts' random numbers."""

    def __post_init__(self) -> None:
        if not self.k_levels or not all(1 <= k <= MAX_SAMPLES for k in self.k_levels):
            raise ConfigError(
                f"MCPPConfig.k_levels must be between 1 and {MAX_SAMPLES} samples, got {self.k_levels}"
            )
        if self.horizon is not None and self.horizon < 1:
            raise ConfigError(f"MCPPConfig.horizon must be >= 1 or None, got {self.horizon}")


@dataclass(kw_only=True)
class MCPP:
    """The MCPP policy (see the module docstring)."""

    offload: ClassVar[bool] = True
    """Its decisions search: the executor runs them on a worker thread with a time budget."""

    config: MCPPConfig = field(default_factory=MCPPConfig)
    """Settings."""
    name: str = "mcpp"
    """Policy name."""
    _book: CompiledDag | None = field(default=None, init=False, repr=False)
    _seconds_per_work: float = field(default=_FIRST_GUESS_S_PER_WORK, init=False, repr=False)

    def _compiled(self, state: PlanState) -> CompiledDag:
        if self._book is None or self._book.dag is not state.dag:
            self._book = CompiledDag(state)
        else:
            self._book.refresh(state)
        return self._book

    def decide(self, state: PlanState) -> Allocation:
        """Score candidate actions by Monte Carlo rollouts; answer with the best one that fits."""
        if not state.ready:
            return Allocation(assignments={}, info={"candidates": 0, "rollouts": 0})
        t0 = time.perf_counter()
        cfg = self.config
        book = self._compiled(state)
        view = decision_view(book, state, cfg.horizon)
        shape = {"planned": view.problem.n, "tail": view.tail, "budget_share": round(view.budget_share, 4)}
        if not view.ready:  # the horizon is full of running batches
            return _cheap_answer(state, book, {**shape, "fallback": "horizon_full"})
        budget = state.time_budget_s
        stop_at = None if budget is None else t0 + budget * (1 - _ANSWER_SHARE)
        if stop_at is not None and time.perf_counter() >= stop_at:  # spent on compiling already
            return _cheap_answer(state, book, {**shape, "fallback": "time_budget"})
        prob, start = view.problem, view.start
        seed = hash((cfg.seed, state.decision_index, round(state.elapsed_s, 6))) & 0x7FFFFFFF
        rng = np.random.default_rng(seed)
        ready = np.array([prob.index(s) for s in view.ready], dtype=np.int64)
        cand, n_uniform = _candidates(prob, prob.tight_mt, ready, cfg, rng, bool(state.in_flight))
        n_raw = len(cand.model)
        cand, n_uniform = _merge(prob, start, ready, cand, n_uniform)
        conts = _continuations(prob, cfg)
        # a rollout's work: about one scan of the subtasks per event, a few events per subtask
        clock = Clock(
            stop_at=stop_at, seconds_per_work=self._seconds_per_work, work_per_rollout=2.0 * prob.n**2 + 16
        )
        evaluator = Evaluator(prob=prob, start=start, cand=cand, conts=conts, seed=seed, cfg=cfg, clock=clock)
        eligible = evaluator.race(n_uniform, rng) if cfg.racing else evaluator.full()
        self._seconds_per_work = clock.seconds_per_work
        if eligible is None:  # not even the first round fits in the time budget
            return _cheap_answer(state, book, {**shape, "fallback": "time_budget", "candidates": n_raw})
        counts = evaluator.count
        mean = np.where(eligible & (counts > 0), evaluator.score / np.maximum(counts, 1), -np.inf)
        best_pair = int(np.argmax(mean))
        c_best, q_best = divmod(best_pair, len(conts[0]))
        # runner-up: the best other action among the final survivors (else among all evaluated pairs)
        per_action = eligible.reshape(len(cand.model), -1).any(axis=1)
        pool = eligible if int(per_action.sum()) > 1 else counts > 0
        by_action = np.where(pool, evaluator.completion, -np.inf).reshape(len(cand.model), -1).max(axis=1)
        by_action[c_best] = -np.inf
        runner = float(by_action.max()) if len(by_action) > 1 else float("nan")
        runner_up: dict[str, str] | None = None
        if math.isfinite(runner):
            c_runner = int(np.argmax(by_action))
            runner_up = {
                s: f"{prob.models[int(cand.model[c_runner, i])]}x{int(cand.k[c_runner, i])}"
                for s, i in zip(view.ready, ready, strict=True)
                if int(cand.k[c_runner, i]) > 0
            }
        hopeless = bool(evaluator.completion[best_pair] == 0.0)
        if hopeless:
            # no rollout completes: keep the cheapest way forward open rather than a "progress" gamble
            planned = {s: _cheapest(prob, int(i)) for s, i in zip(view.ready, ready, strict=True)}
        else:
            # exactly the launch the rollouts played: samples beyond what fits are never asked for
            row = slice(c_best, c_best + 1)
            launch = _launched(prob, start, ready, Choices(cand.model[row], cand.k[row], cand.mt[row]))[0]
            planned = {
                s: Assignment(
                    model=prob.models[int(cand.model[c_best, i])],
                    samples=int(launch[i]),
                    max_tokens=int(cand.mt[c_best, i]),
                )
                for s, i in zip(view.ready, ready, strict=True)
                if launch[i] > 0
            }
        info: dict[str, Any] = {
            "candidates": n_raw,
            "candidates_merged": len(cand.model),
            "continuations": len(conts[0]),
            "rollouts": evaluator.used,
            "est_success": round(float(evaluator.completion[best_pair]), 4),
            "est_success_runner_up": round(runner, 4) if math.isfinite(runner) else None,
            "runner_up": runner_up,
            "continuation": f"{prob.models[int(conts[0][q_best])]}:{int(conts[1][q_best])}",
            "rollouts_chosen": int(counts[best_pair]),
            "fallback_cheapest": hopeless,
        }
        if not view.whole:
            info.update(shape)
        if budget is not None:
            info["time_budget_s"] = budget
        overflow = _cheap_plan(state, book, view.overflow)
        return Allocation(assignments=repair(state, {**planned, **overflow}), info=info)


def action_values(
    state: PlanState, actions: Sequence[Allocation], *, rollouts: int = 1000, seed: int = 1
) -> list[float]:
    """Estimated completion probability of each action under its best continuation.

    Every action is paired with every Seq-(m, k) continuation of the default config and
    each pair gets `rollouts` rollouts on the same ids (common random numbers); an
    action's value is its best pair's completion rate. Used to judge decisions on
    identical states (`benchmarks/bench_mcpp_racing.py`); the whole DAG is played; a
    `max_tokens` of `None` means `policies.feasibility.default_cap`.
    """
    prob = compile_problem(state)
    start = start_from_state(prob, state)
    shape = (len(actions), prob.n)
    model, k, mt = np.zeros(shape, np.int64), np.zeros(shape, np.int64), np.ones(shape, np.int64)
    for c, action in enumerate(actions):
        for subtask, a in action.assignments.items():
            i, m = prob.index(subtask), prob.models.index(a.model)
            model[c, i], k[c, i] = m, a.samples
            mt[c, i] = int(prob.default_mt[i, m]) if a.max_tokens is None else a.max_tokens
    cfg = MCPPConfig(rollouts=rollouts, racing=False)
    conts = _continuations(prob, cfg)
    evaluator = Evaluator(prob=prob, start=start, cand=Choices(model, k, mt), conts=conts, seed=seed, cfg=cfg)
    evaluator.full()
    return [float(v) for v in evaluator.completion.reshape(len(actions), -1).max(axis=1)]


def _cheapest(prob: RolloutProblem, i: int) -> Assignment:
    """One sample on the subtask's cheapest model (by expected attempt cost), default cap."""
    m = int(np.argmin(np.where(prob.allowed[i], prob.mean_cost[i], np.inf)))
    return Assignment(model=prob.models[m], samples=1, max_tokens=int(prob.default_mt[i, m]))


def _cheap_plan(state: PlanState, book: CompiledDag, subtasks: Sequence[str]) -> dict[str, Assignment]:
    """One sample of each subtask's cheap-plan model (`policies.problem`), at its default cap."""
    out = {}
    for s in subtasks:
        i = book.position[s]
        m = int(book.cheap_model[i])
        out[s] = Assignment(model=book.models[m], samples=1, max_tokens=int(book.default_mt[i, m]))
    return out


def _cheap_answer(state: PlanState, book: CompiledDag, info: dict[str, Any]) -> Allocation:
    """The heuristic answer when there is no time to plan: every ready subtask's cheap plan, repaired."""
    return Allocation(
        assignments=repair(state, _cheap_plan(state, book, state.ready)), info={"rollouts": 0, **info}
    )


def _subtask_choices(prob: RolloutProblem, tight: I64, i: int, cfg: MCPPConfig, defer: bool) -> I64:
    """(choices, 3) rows of (model, k, max_tokens) for subtask `i`; the defer choice first."""
    out: list[tuple[int, int, int]] = (
        [(int(prob.fallback[i]), 0, int(prob.default_mt[i, prob.fallback[i]]))] if defer else []
    )
    for m in np.flatnonzero(prob.allowed[i]):
        caps = [int(prob.default_mt[i, m])]
        if cfg.choose_max_tokens and tight[i, m] < caps[0]:
            caps.append(int(tight[i, m]))
        for k in cfg.k_levels:
            out.extend((int(m), k, cap) for cap in caps)
    return np.array(out, dtype=np.int64).reshape(-1, 3)


def _candidates(
    prob: RolloutProblem,
    tight: I64,
    ready: I64,
    cfg: MCPPConfig,
    rng: np.random.Generator,
    in_flight: bool,
) -> tuple[Choices, int]:
    """Candidate actions as (C, N) arrays; the first `n_uniform` rows are the uniform ones."""
    n, n_ready = prob.n, len(ready)
    levels = np.array(cfg.k_levels, dtype=np.int64)
    # uniform rows (U, R, 3): every ready subtask gets (m, k) (its first model when it cannot use m)
    um = np.repeat(np.arange(len(prob.models), dtype=np.int64), len(levels))
    mm = np.where(prob.allowed[ready[None, :], um[:, None]], um[:, None], prob.fallback[ready][None, :])
    uk = np.broadcast_to(np.tile(levels, len(prob.models))[:, None], mm.shape)
    uniform = np.stack([mm, uk, prob.default_mt[ready[None, :], mm]], axis=2)
    n_uniform = len(uniform)
    defer = cfg.allow_defer and (in_flight or n_ready > 1)
    choices = [_subtask_choices(prob, tight, int(i), cfg, defer) for i in ready]
    product = math.prod(len(c) for c in choices)
    if n_ready <= cfg.enumerate_max_ready and product <= cfg.enumerate_max_product:
        picked, base, combo = np.arange(n_ready), np.zeros(product, np.int64), np.arange(product)
    else:
        picked = np.sort(rng.choice(n_ready, size=min(cfg.partial_enumeration, n_ready), replace=False))
        budget = cfg.max_candidates - n_uniform
        sub_product = math.prod(len(choices[p]) for p in picked)
        shared = n_ready > len(picked)  # the rest get one shared (m, k): a uniform row's entry
        total = sub_product * n_uniform if shared else sub_product
        take = (
            rng.choice(total, size=min(budget, total), replace=False) if total > budget else np.arange(total)
        )
        flat = np.sort(take.astype(np.int64))
        base, combo = (flat // sub_product, flat % sub_product) if shared else (np.zeros_like(flat), flat)
    extra = uniform[base].copy()
    for p in picked[::-1]:  # mixed radix, the last picked subtask least significant
        combo, digit = np.divmod(combo, len(choices[p]))
        extra[:, p] = choices[p][digit]
    rows = np.concatenate([uniform, extra])
    if n_ready and not in_flight:
        rows = rows[(rows[:, :, 1] > 0).any(axis=1)]
    model = np.zeros((len(rows), n), dtype=np.int64)
    samples = np.zeros((len(rows), n), dtype=np.int64)
    caps = np.ones((len(rows), n), dtype=np.int64)
    model[:, ready], samples[:, ready], caps[:, ready] = rows[:, :, 0], rows[:, :, 1], rows[:, :, 2]
    return Choices(model, samples, caps), n_uniform


def _launched(prob: RolloutProblem, start: RolloutStart, ready: I64, cand: Choices) -> I64:
    """(C, N) samples of each candidate that fit (`policies.feasibility.samples_that_fit`, in index order)."""
    left = start.budget - start.spent - sum(k * prob.hold(i, m, mt) for i, m, k, _, mt in start.in_flight)
    k_eff = cand.k.copy()
    remaining = np.full(len(cand.k), left)
    for i in ready:
        hold = prob.in_cost[i, cand.model[:, i]] + cand.mt[:, i] * prob.out_price[cand.model[:, i]]
        fit = samples_that_fit(remaining, hold, cand.k[:, i])
        k_eff[:, i] = fit
        remaining -= fit * hold
    return k_eff


def _merge(
    prob: RolloutProblem, start: RolloutStart, ready: I64, cand: Choices, n_uniform: int
) -> tuple[Choices, int]:
    """Merge candidates the budget makes identical (samples that cannot be held are never started)."""
    k_eff = _launched(prob, start, ready, cand)
    # one int64 per ready subtask: (model + 1, k, max_tokens) of what actually launches, 0 for nothing
    k_r, m_r, mt_r = k_eff[:, ready], cand.model[:, ready], cand.mt[:, ready]
    code = np.ascontiguousarray(np.where(k_r > 0, ((m_r + 1) << 48) | (k_r << 32) | mt_r, 0))
    rows = code.view(np.dtype((np.void, code.dtype.itemsize * code.shape[1]))).ravel()
    starts_any = (k_r > 0).any(axis=1) if len(start.in_flight) == 0 else np.ones(len(k_eff), bool)
    _, first = np.unique(rows, return_index=True)
    keep = np.zeros(len(code), dtype=np.bool_)
    keep[first] = True
    if (keep & starts_any).any():
        keep &= starts_any
    idx = np.flatnonzero(keep)
    n_uni = int((idx < n_uniform).sum())
    order = np.concatenate([idx[idx < n_uniform], idx[idx >= n_uniform]])
    # rollouts play the requested k (the kernel starts what fits); the answer asks only `_launched`
    return Choices(cand.model[order], cand.k[order], cand.mt[order]), n_uni


def _continuations(prob: RolloutProblem, cfg: MCPPConfig) -> tuple[I64, I64]:
    models = np.repeat(np.arange(len(prob.models), dtype=np.int64), len(cfg.k_levels))
    ks = np.tile(np.array(cfg.k_levels, dtype=np.int64), len(prob.models))
    return models, ks
