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
the continuations are first screened on the pure Seq policies, then pairs are
raced by successive halving, every round on the same fresh rollout ids for all
survivors (common random numbers), so that a pair is dropped only against
rivals that saw the same luck.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from orchestrator.plan import Allocation, Assignment, PlanState
from policies.rollout import (
    RolloutPlan,
    RolloutProblem,
    RolloutStart,
    compile_problem,
    run_rollouts,
    start_from_state,
)

__all__ = ["MCPP", "MCPPConfig"]

I64 = NDArray[np.int64]


@dataclass(frozen=True, kw_only=True)
class MCPPConfig:
    """Knobs of MCPP (defaults: the reference's where it has one)."""

    k_levels: tuple[int, ...] = (1, 4, 16, 64)
    """Sample counts an action or continuation may use."""
    rollouts: int = 64
    """M: rollouts per (action, continuation) pair (the most any pair gets when racing)."""
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
    racing_continuations: int = 4
    """With racing: continuations kept after screening the pure Seq-(m, k) policies."""
    racing_rounds: tuple[int, ...] = (4, 8, 16, 36)
    """With racing: new rollouts per survivor in each round (sums to at most `rollouts`)."""
    racing_keep: float = 0.25
    """With racing: fraction of pairs surviving each round."""
    allow_defer: bool = True
    """Whether an action may defer a ready subtask (k = 0) while something else runs."""
    choose_max_tokens: bool = True
    """Whether an action may use a tighter max_tokens than the default (smaller holds)."""
    seed: int = 0
    """Seed of candidate sampling and of the rollouts' random numbers."""
    chunk_rollouts: int = 8192
    """Most rollouts simulated in one call (memory bound)."""


@dataclass(frozen=True)
class _Choices:
    model: I64
    k: I64
    mt: I64


@dataclass(kw_only=True)
class MCPP:
    """The MCPP policy (see the module docstring)."""

    config: MCPPConfig = field(default_factory=MCPPConfig)
    """Settings."""
    name: str = "mcpp"
    """Policy name."""
    _cache: tuple[int, RolloutProblem] | None = field(default=None, init=False, repr=False)

    def _problem(self, state: PlanState) -> RolloutProblem:
        key = id(state.estimates) ^ (id(state.dag) << 1)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, compile_problem(state))
        return self._cache[1]

    def decide(self, state: PlanState) -> Allocation:
        """Score candidate actions by Monte Carlo rollouts; answer with the best one."""
        if not state.ready:
            return Allocation(assignments={}, info={"candidates": 0, "rollouts": 0})
        cfg = self.config
        prob = self._problem(state)
        start = start_from_state(prob, state)
        seed = hash((cfg.seed, state.decision_index, round(state.elapsed_s, 6))) & 0x7FFFFFFF
        rng = np.random.default_rng(seed)
        ready = np.array([prob.index(s) for s in state.ready], dtype=np.int64)
        cand, n_uniform = _candidates(prob, start, ready, cfg, rng, bool(state.in_flight))
        n_raw = len(cand.model)
        cand, n_uniform = _merge(prob, start, ready, cand, n_uniform)
        conts = _continuations(prob, cfg)
        evaluator = _Evaluator(prob=prob, start=start, cand=cand, conts=conts, seed=seed, cfg=cfg)
        eligible = evaluator.race(n_uniform, rng) if cfg.racing else evaluator.full()
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
        hopeless = bool(evaluator.completion[best_pair] == 0.0)
        if hopeless:
            # no rollout completes: keep the cheapest way forward open rather than a "progress" gamble
            assignments = {s: _cheapest(prob, int(i)) for s, i in zip(state.ready, ready, strict=True)}
        else:
            assignments = {
                s: Assignment(
                    model=prob.models[int(cand.model[c_best, i])],
                    samples=int(cand.k[c_best, i]),
                    max_tokens=int(cand.mt[c_best, i]),
                )
                for s, i in zip(state.ready, ready, strict=True)
                if cand.k[c_best, i] > 0
            }
        info: dict[str, Any] = {
            "candidates": n_raw,
            "candidates_merged": len(cand.model),
            "continuations": len(conts[0]),
            "rollouts": evaluator.used,
            "est_success": round(float(evaluator.completion[best_pair]), 4),
            "est_success_runner_up": round(runner, 4) if math.isfinite(runner) else None,
            "continuation": f"{prob.models[int(conts[0][q_best])]}:{int(conts[1][q_best])}",
            "rollouts_chosen": int(counts[best_pair]),
            "fallback_cheapest": hopeless,
        }
        return Allocation(assignments=assignments, info=info)


def _cheapest(prob: RolloutProblem, i: int) -> Assignment:
    """One sample on the subtask's cheapest model (by expected attempt cost), default cap."""
    m = int(np.argmin(np.where(prob.allowed[i], prob.mean_cost[i], np.inf)))
    return Assignment(model=prob.models[m], samples=1, max_tokens=int(prob.default_mt[i, m]))


def _subtask_choices(
    prob: RolloutProblem, i: int, cfg: MCPPConfig, defer: bool
) -> list[tuple[int, int, int]]:
    out: list[tuple[int, int, int]] = (
        [(int(prob.fallback[i]), 0, int(prob.default_mt[i, prob.fallback[i]]))] if defer else []
    )
    for m in np.flatnonzero(prob.allowed[i]):
        caps = [int(prob.default_mt[i, m])]
        if cfg.choose_max_tokens:
            tight = _tight_cap(prob, i, int(m))
            if tight < caps[0]:
                caps.append(tight)
        for k in cfg.k_levels:
            out.extend((int(m), k, cap) for cap in caps)
    return out


def _tight_cap(prob: RolloutProblem, i: int, m: int) -> int:
    rows = prob.t_tokens[prob.offset[i, m] : prob.offset[i, m] + prob.size[i, m]]
    return max(16, int(np.quantile(rows, 0.9, method="higher")))


def _candidates(
    prob: RolloutProblem,
    start: RolloutStart,
    ready: I64,
    cfg: MCPPConfig,
    rng: np.random.Generator,
    in_flight: bool,
) -> tuple[_Choices, int]:
    """Candidate actions as (C, N) arrays; the first `n_uniform` rows are the uniform ones."""
    n = prob.n
    rows: list[list[tuple[int, int, int]]] = []
    for m in range(len(prob.models)):
        for k in cfg.k_levels:
            row = []
            for i in ready:
                mm = m if prob.allowed[i, m] else int(prob.fallback[i])
                row.append((mm, k, int(prob.default_mt[i, mm])))
            rows.append(row)
    n_uniform = len(rows)
    defer = cfg.allow_defer and (in_flight or len(ready) > 1)
    choices = [_subtask_choices(prob, int(i), cfg, defer) for i in ready]
    product = math.prod(len(c) for c in choices)
    extra: list[list[tuple[int, int, int]]] = []
    if len(ready) <= cfg.enumerate_max_ready and product <= cfg.enumerate_max_product:
        extra = [list(combo) for combo in _product(choices)]
    else:
        picked = sorted(rng.choice(len(ready), size=min(cfg.partial_enumeration, len(ready)), replace=False))
        budget = cfg.max_candidates - n_uniform
        sub = [choices[p] for p in picked]
        sub_product = math.prod(len(c) for c in sub)
        shared = rows  # the rest get one shared (m, k): a uniform row's entry
        total = sub_product * len(shared) if len(ready) > len(picked) else sub_product
        take = (
            rng.choice(total, size=min(budget, total), replace=False) if total > budget else np.arange(total)
        )
        for flat in sorted(int(x) for x in take):
            base_row, combo_index = divmod(flat, sub_product) if len(ready) > len(picked) else (0, flat)
            row = list(shared[base_row])
            for p, choice in zip(picked, _nth_combo(sub, combo_index), strict=True):
                row[p] = choice
            extra.append(row)
    all_rows = rows + extra
    if len(ready) and not in_flight:
        all_rows = [r for r in all_rows if any(c[1] > 0 for c in r)]
    model = np.zeros((len(all_rows), n), dtype=np.int64)
    samples = np.zeros((len(all_rows), n), dtype=np.int64)
    caps = np.ones((len(all_rows), n), dtype=np.int64)
    for c, row in enumerate(all_rows):
        for i, (mm, kk, cap) in zip(ready, row, strict=True):
            model[c, i], samples[c, i], caps[c, i] = mm, kk, cap
    return _Choices(model, samples, caps), n_uniform


def _product(choices: list[list[tuple[int, int, int]]]) -> list[tuple[tuple[int, int, int], ...]]:
    out: list[tuple[tuple[int, int, int], ...]] = [()]
    for options in choices:
        out = [(*prefix, o) for prefix in out for o in options]
    return out


def _nth_combo(choices: list[list[tuple[int, int, int]]], index: int) -> list[tuple[int, int, int]]:
    out = []
    for options in reversed(choices):
        index, r = divmod(index, len(options))
        out.append(options[r])
    return out[::-1]


def _merge(
    prob: RolloutProblem, start: RolloutStart, ready: I64, cand: _Choices, n_uniform: int
) -> tuple[_Choices, int]:
    """Merge candidates the budget makes identical (samples that cannot be held are never started)."""
    left = (
        start.budget
        - start.spent
        - sum(k * prob.hold(i, m, mt) for i, m, k, _, mt in start.in_flight)
        + 1e-12
    )
    k_eff = cand.k.copy()
    remaining = np.full(len(cand.k), left)
    for i in ready:
        hold = np.maximum(
            prob.in_cost[i, cand.model[:, i]] + cand.mt[:, i] * prob.out_price[cand.model[:, i]], 1e-15
        )
        fit = np.minimum(cand.k[:, i], np.floor(np.maximum(remaining, 0) / hold).astype(np.int64))
        k_eff[:, i] = fit
        remaining -= fit * hold
    key = np.concatenate(
        [np.where(k_eff > 0, cand.model, -1), k_eff, np.where(k_eff > 0, cand.mt, 0)], axis=1
    )
    starts_any = (k_eff[:, ready] > 0).any(axis=1) if len(start.in_flight) == 0 else np.ones(len(k_eff), bool)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.zeros(len(key), dtype=np.bool_)
    keep[first] = True
    if (keep & starts_any).any():
        keep &= starts_any
    idx = np.flatnonzero(keep)
    n_uni = int((idx < n_uniform).sum())
    order = np.concatenate([idx[idx < n_uniform], idx[idx >= n_uniform]])
    # keep the requested k: samples the ledger refuses then end the run as `budget_exhausted`, honestly
    return _Choices(cand.model[order], cand.k[order], cand.mt[order]), n_uni


def _continuations(prob: RolloutProblem, cfg: MCPPConfig) -> tuple[I64, I64]:
    models = np.repeat(np.arange(len(prob.models), dtype=np.int64), len(cfg.k_levels))
    ks = np.tile(np.array(cfg.k_levels, dtype=np.int64), len(prob.models))
    return models, ks


@dataclass(kw_only=True)
class _Evaluator:
    prob: RolloutProblem
    start: RolloutStart
    cand: _Choices
    conts: tuple[I64, I64]
    seed: int
    cfg: MCPPConfig
    used: int = 0
    completion: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        self.n_pairs = len(self.cand.model) * len(self.conts[0])
        self.score = np.zeros(self.n_pairs)
        self.wins = np.zeros(self.n_pairs)
        self.count = np.zeros(self.n_pairs)
        self.completion = np.zeros(self.n_pairs)

    def run(self, pairs: I64, ids: I64) -> None:
        """Add `len(ids)` rollouts (the same ids for every pair) to each pair."""
        q = len(self.conts[0])
        for lo in range(0, len(pairs), max(1, self.cfg.chunk_rollouts // len(ids))):
            chunk = pairs[lo : lo + max(1, self.cfg.chunk_rollouts // len(ids))]
            pr = np.repeat(chunk, len(ids))
            c, qq = pr // q, pr % q
            plan = RolloutPlan(
                rollout_id=np.tile(ids, len(chunk)),
                first_model=self.cand.model[c],
                first_k=self.cand.k[c],
                first_mt=self.cand.mt[c],
                cont_model=self.conts[0][qq],
                cont_k=self.conts[1][qq],
            )
            res = run_rollouts(self.prob, self.start, plan, seed=self.seed)
            done = res.completed.astype(np.float64)
            # ties broken towards progress and thrift; completion dominates
            proxy = done + 0.01 * res.done_fraction * (1 - done) - 1e-6 * res.spent
            np.add.at(self.score, pr, proxy)
            np.add.at(self.wins, pr, done)
            np.add.at(self.count, pr, 1.0)
            self.used += len(pr)
        self.completion = np.where(self.count > 0, self.wins / np.maximum(self.count, 1), 0.0)

    def full(self) -> NDArray[np.bool_]:
        """Every pair, M rollouts each; all pairs are eligible."""
        self.run(np.arange(self.n_pairs, dtype=np.int64), np.arange(self.cfg.rollouts, dtype=np.int64))
        return np.ones(self.n_pairs, dtype=np.bool_)

    def race(self, n_uniform: int, rng: np.random.Generator) -> NDArray[np.bool_]:
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
        if diag:
            self.run(np.array(diag, dtype=np.int64), ids)
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
            self.run(alive, ids)
            if r == len(cfg.racing_rounds) - 1 or len(alive) <= 1:
                break
            mean = self.score[alive] / self.count[alive]
            keep = max(1, math.ceil(len(alive) * cfg.racing_keep))
            alive = alive[np.argsort(-mean, kind="stable")[:keep]]
        final = np.zeros(self.n_pairs, dtype=np.bool_)
        final[alive] = True
        return final
