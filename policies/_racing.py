"""Scoring MCPP's (action, continuation) pairs by rollouts: all of them M times, or by racing.

`Evaluator.full` gives every pair the same M rollouts (the reference's way).
`Evaluator.race` screens the continuations on the pure Seq-(m, k) policies, starts
every candidate on the best two, widens the leading actions to every continuation
after the first round, then halves by rounds of fresh rollout ids shared by all
survivors (common random numbers); see `policies.mcpp`.

Both respect a `Clock`: a kernel call is made only when its predicted time fits what
is left of the decision's time budget, and the kernel itself stops when its work
exceeds what the time left allows (one rollout can cost far more than predicted).
Racing then stops adding rounds and the last survivors are eligible; when not even
the screen and first round fit, there is no answer (`None`) and MCPP falls back to a
heuristic. Predictions are rollouts x measured work per rollout x measured seconds
per unit of work (the policy carries the last one from one decision to the next).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from policies.problem import RolloutProblem
from policies.rollout import RolloutPlan, RolloutStart, run_rollouts

__all__ = ["Choices", "Clock", "Evaluator"]

I64 = NDArray[np.int64]


class _Config(Protocol):
    @property
    def rollouts(self) -> int: ...
    @property
    def racing_continuations(self) -> int: ...
    @property
    def racing_candidates(self) -> int: ...
    @property
    def racing_rounds(self) -> tuple[int, ...]: ...
    @property
    def racing_keep(self) -> float: ...
    @property
    def racing_widen(self) -> int: ...


@dataclass(frozen=True)
class Choices:
    """Candidate actions as (C, N) arrays: model, samples and max_tokens per subtask."""

    model: I64
    k: I64
    mt: I64


@dataclass
class Clock:
    """The time a decision may still spend on rollouts, and how fast rollouts go."""

    stop_at: float | None
    """`time.perf_counter()` value by which the rollouts must be done; `None`: no limit."""
    seconds_per_work: float
    """Measured seconds per unit of kernel work (`RolloutResult.work`)."""
    work_per_rollout: float
    """Measured work of one rollout of this decision's problem."""

    def left(self) -> float:
        """Seconds left (inf without a limit)."""
        return math.inf if self.stop_at is None else self.stop_at - time.perf_counter()

    def fits(self, rollouts: int) -> bool:
        """Whether `rollouts` more rollouts are predicted to end in time."""
        return rollouts * self.work_per_rollout * self.seconds_per_work <= self.left()

    def work_limit(self) -> int | None:
        """The work a kernel call may do before it must stop (`None`: no limit)."""
        if self.stop_at is None:
            return None
        return max(0, int(self.left() / max(self.seconds_per_work, 1e-12)))

    def record(self, work: int, rollouts: int, seconds: float) -> None:
        """Update the measures with a call that did `work` for `rollouts` rollouts in `seconds`."""
        if work > 0:
            self.seconds_per_work = 0.5 * self.seconds_per_work + 0.5 * seconds / work
        if rollouts > 0:
            self.work_per_rollout = work / rollouts


@dataclass(kw_only=True)
class Evaluator:
    """Rollout scores of every (action, continuation) pair of one decision."""

    prob: RolloutProblem
    start: RolloutStart
    cand: Choices
    conts: tuple[I64, I64]
    seed: int
    cfg: _Config
    clock: Clock = field(
        default_factory=lambda: Clock(stop_at=None, seconds_per_work=0.0, work_per_rollout=0.0)
    )
    used: int = 0
    completion: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.n_pairs = len(self.cand.model) * len(self.conts[0])
        self.score = np.zeros(self.n_pairs)
        self.wins = np.zeros(self.n_pairs)
        self.count = np.zeros(self.n_pairs)
        self.completion = np.zeros(self.n_pairs)

    def run(self, pairs: I64, ids: I64) -> bool:
        """Add `len(ids)` rollouts (the same ids for every pair) to each pair; False if time ran out.

        Out of time, the kernel stops where it is: the rollouts it played count, in
        pair order (so the first pairs may have more than the last ones).
        """
        q = len(self.conts[0])
        pr = np.repeat(pairs, len(ids))
        plan = RolloutPlan(
            rollout_id=np.tile(ids, len(pairs)),
            first_model=self.cand.model,
            first_k=self.cand.k,
            first_mt=self.cand.mt,
            cont_model=self.conts[0],
            cont_k=self.conts[1],
            first=pr // q,
            cont=pr % q,
        )
        t = time.perf_counter()
        res = run_rollouts(self.prob, self.start, plan, seed=self.seed, work_limit=self.clock.work_limit())
        self.clock.record(res.work, res.played, time.perf_counter() - t)
        played = res.played
        pr = pr[:played]
        done = res.completed[:played].astype(np.float64)
        # ties broken towards progress and thrift; completion dominates
        proxy = done + 0.01 * res.done_fraction[:played] * (1 - done) - 1e-6 * res.spent[:played]
        self.score += np.bincount(pr, weights=proxy, minlength=self.n_pairs)
        self.wins += np.bincount(pr, weights=done, minlength=self.n_pairs)
        self.count += np.bincount(pr, minlength=self.n_pairs)
        self.used += played
        self.completion = np.where(self.count > 0, self.wins / np.maximum(self.count, 1), 0.0)
        return played == len(plan.rollout_id)

    def full(self) -> NDArray[np.bool_] | None:
        """Every pair, M rollouts each (blocks of 8 under a time budget); evaluated pairs are eligible."""
        pairs = np.arange(self.n_pairs, dtype=np.int64)
        if self.clock.stop_at is None:
            self.run(pairs, np.arange(self.cfg.rollouts, dtype=np.int64))
            return np.ones(self.n_pairs, dtype=np.bool_)
        for lo in range(0, self.cfg.rollouts, 8):
            ids = np.arange(lo, min(lo + 8, self.cfg.rollouts), dtype=np.int64)
            if not self.clock.fits(len(pairs) * len(ids)) or not self.run(pairs, ids):
                break
        return self.count > 0 if (self.count > 0).all() else None

    def race(self, n_uniform: int, rng: np.random.Generator) -> NDArray[np.bool_] | None:
        """Screen continuations, then successive halving; the last survivors are eligible."""
        cfg = self.cfg
        q = len(self.conts[0])
        n_cand = len(self.cand.model)
        next_id = 0
        # 1. screen continuations on the pure Seq policies (uniform action (m, k) + Seq-(m, k))
        screen_n = cfg.racing_rounds[0] * 2
        ids = np.arange(next_id, next_id + screen_n, dtype=np.int64)
        next_id += screen_n
        diag = []
        for c in range(min(n_uniform, n_cand)):
            m, k = self.cand.model[c], self.cand.k[c]
            for qq in range(q):
                if np.array_equal(np.where(k > 0, self.conts[0][qq], m), m) and np.all(
                    (k == 0) | (k == self.conts[1][qq])
                ):
                    diag.append(c * q + qq)
                    break
        first_round = min(n_cand, cfg.racing_candidates) * min(q, cfg.racing_continuations)
        if not self.clock.fits(len(diag) * screen_n + first_round * cfg.racing_rounds[0]):
            return None
        if diag and not self.run(np.array(diag, dtype=np.int64), ids):
            return None
        if diag:
            cont_score = np.full(q, -1.0)
            for p in diag:
                cont_score[p % q] = max(cont_score[p % q], self.score[p] / self.count[p])
            order = np.argsort(-cont_score, kind="stable")
            top = order[: cfg.racing_continuations]
        else:
            top = np.arange(min(q, cfg.racing_continuations))
        # 2. candidates: uniform ones first, then a seeded sample of the rest
        pool = np.arange(n_cand)
        if n_cand > cfg.racing_candidates:
            rest = rng.choice(
                np.arange(n_uniform, n_cand), size=max(0, cfg.racing_candidates - n_uniform), replace=False
            )
            pool = np.concatenate([np.arange(n_uniform), np.sort(rest)])
        alive = (pool[:, None] * q + top[None, :]).ravel().astype(np.int64)
        # 3. successive halving on fresh, shared rollout ids
        for r, block in enumerate(cfg.racing_rounds):
            ids = np.arange(next_id, next_id + block, dtype=np.int64)
            next_id += block
            if r > 0 and not self.clock.fits(len(alive) * block):
                break  # out of time: the survivors so far are eligible
            if not self.run(alive, ids):
                if r == 0:
                    return None  # not even the first round
                break
            if r == 0 and cfg.racing_widen > 0:
                alive = self._widen(alive, q, ids)
            if r == len(cfg.racing_rounds) - 1 or len(alive) <= 1:
                break
            mean = self.score[alive] / self.count[alive]
            keep = max(1, math.ceil(len(alive) * cfg.racing_keep))
            alive = alive[np.argsort(-mean, kind="stable")[:keep]]
        final = np.zeros(self.n_pairs, dtype=np.bool_)
        final[alive] = True
        return final

    def _widen(self, alive: I64, q: int, ids: I64) -> I64:
        """Give the best `racing_widen` actions every continuation, caught up on the same `ids`."""
        ranked = (alive // q)[np.argsort(-(self.score[alive] / self.count[alive]), kind="stable")]
        _, first = np.unique(ranked, return_index=True)  # each action at its best pair's rank
        best = ranked[np.sort(first)][: self.cfg.racing_widen]
        wide = (best[:, None] * q + np.arange(q)[None, :]).ravel()
        new = wide[self.count[wide] == 0]
        if len(new) and (not self.clock.fits(len(new) * len(ids)) or not self.run(new, ids)):
            return alive  # out of time: no widening
        return np.union1d(alive, wide).astype(np.int64)
