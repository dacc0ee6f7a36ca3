"""A workflow's estimates compiled into arrays for the rollouts, kept current during a run.

`CompiledDag` compiles each (subtask, model) estimate once: its sample table (the
estimate's joint samples, or a fixed 256-draw table of a parametric one), its default
max_tokens under the subtask's ceiling (`policies.feasibility.default_cap`), the tighter
choice (90th percentile of output tokens), and its prices. Estimates may change during
a run (the executor replaces an entry when it learns a subtask's real prompt size, or
updates a success probability): `refresh` finds the entries whose estimate object is
not the one compiled, in one C-speed pass over the mapping, and compiles only those;
prices and ceilings are compared by value. So a decision costs O(changed entries) of
compiling, not O(DAG).

`problem(nodes)` gathers a `RolloutProblem` over any set of subtasks (in topological
order): the whole DAG (`compile_problem`, cached until something changes) or the part
of it one decision plans in detail (`policies._horizon`).

Each subtask also has a *cheap plan*, the summary of a subtask that is not planned in
detail: one sample at a time of the model with the least expected cost per success
(at its default cap, truncation counted), retried until it passes. Its expected spend
is `cost / p`; its time is one attempt's mean latency, `lat`, as if the attempt that
passes were the first: optimistic for a subtask that is retried, but the planner
widens batches under time pressure, and a summary that assumes sequential retries
made every rollout of a long DAG miss its deadline (docs/planners.md). `bottom[i]` is
the longest chain of such latencies from `i` (included) to the end of the DAG.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from orchestrator.estimates import AttemptDraws, AttemptEstimate, default_max_tokens, truncate
from orchestrator.plan import ModelPrice, PlanState
from policies.feasibility import under_ceiling

__all__ = ["CompiledDag", "RolloutProblem", "compile_problem"]

_TABLE = 256
_P_FLOOR = 1e-3  # cost per success of a model that never passes: large, not infinite

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


@dataclass(frozen=True, kw_only=True, eq=False)
class RolloutProblem:
    """Subtasks and their estimates as flat arrays: what the rollout kernel reads."""

    subtasks: tuple[str, ...]
    """Subtask names, topological order (index `i`)."""
    models: tuple[str, ...]
    """Every model any subtask of the workflow may use (index `m`)."""
    parent_count: I64
    """(N,) number of parents among these subtasks."""
    child_ptr: I64
    """(N + 1,) children of `i` are `child_idx[child_ptr[i]:child_ptr[i + 1]]`."""
    child_idx: I64
    """Concatenated children lists."""
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
    t_rows: I64
    """`arange` over the sample table (the kernel draws row `t_rows[offset + floor(u x size)]`)."""
    in_cost: F64
    """(N, M) USD of one attempt's input tokens."""
    out_price: F64
    """(M,) USD per output token."""
    default_mt: I64
    """(N, M) the default max_tokens: `default_max_tokens` of the estimate, under the subtask's ceiling."""
    tight_mt: I64
    """(N, M) the tighter max_tokens choice: the 90th percentile of output tokens (at least 16),
    never above `default_mt`."""
    success_prob: F64
    """(N, M) estimated success probability."""
    mean_cost: F64
    """(N, M) expected USD of one untruncated attempt."""
    mean_latency: F64
    """(N, M) mean latency."""
    _positions: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_positions", {s: i for i, s in enumerate(self.subtasks)})

    @property
    def n(self) -> int:
        """Number of subtasks."""
        return len(self.subtasks)

    def index(self, subtask: str) -> int:
        """Index of a subtask."""
        return self._positions[subtask]

    def __contains__(self, subtask: object) -> bool:
        return subtask in self._positions

    def hold(self, i: int, m: int, max_tokens: int) -> float:
        """USD one sample of (i, m) holds with this cap."""
        return float(self.in_cost[i, m] + max_tokens * self.out_price[m])

    def rows(self, i: int, m: int) -> slice:
        """The rows of (i, m) in the sample table."""
        return slice(int(self.offset[i, m]), int(self.offset[i, m] + self.size[i, m]))


@dataclass(frozen=True, eq=False)
class _Entry:
    """One compiled (subtask, model) estimate; keeps the estimate alive so its `id` stays its own."""

    estimate: AttemptEstimate
    success: B
    tokens: I64
    latency: F64
    default_mt: int
    p90: int


def _compile_entry(est: AttemptEstimate) -> _Entry:
    if est.samples:
        succ = np.array([s.success for s in est.samples], dtype=np.bool_)
        tok = np.array([max(0, s.output_tokens) for s in est.samples], dtype=np.int64)
        lat = np.array([s.latency_s for s in est.samples], dtype=np.float64)
    else:
        d = est.draw(np.random.default_rng(20240611), _TABLE)
        succ, tok, lat = d.success, d.output_tokens, d.latency_s
    return _Entry(
        estimate=est,
        success=succ,
        tokens=tok,
        latency=np.maximum(lat, 1e-6),
        default_mt=default_max_tokens(est),
        p90=max(16, _quantile_90(tok)),
    )


def _quantile_90(values: I64) -> int:
    """`np.quantile(values, 0.9, method="higher")`, by a partition (a test checks they agree)."""
    at = int(np.ceil(0.9 * (len(values) - 1)))
    return int(np.partition(values, at)[at])


class CompiledDag:
    """Every estimate of one workflow, compiled; see the module docstring."""

    def __init__(self, state: PlanState) -> None:
        dag = state.dag
        self.dag = dag
        """The workflow shape this was compiled for (a new `DagView` needs a new `CompiledDag`)."""
        self.subtasks = dag.subtasks
        self.models = tuple(dict.fromkeys(m for s in dag.subtasks for m in dag.models[s]))
        self.position = {s: i for i, s in enumerate(self.subtasks)}
        n, k = len(self.subtasks), len(self.models)
        self.parents: list[list[int]] = [[self.position[p] for p in dag.parents[s]] for s in self.subtasks]
        self.children: list[list[int]] = [[] for _ in self.subtasks]
        for i, ps in enumerate(self.parents):
            for p in ps:
                self.children[p].append(i)
        self.model_ids: list[list[int]] = [
            [self.models.index(m) for m in dag.models[s]] for s in self.subtasks
        ]
        self.allowed = np.zeros((n, k), dtype=np.bool_)
        for i, ms in enumerate(self.model_ids):
            self.allowed[i, ms] = True
        self.fallback = np.array([ms[0] for ms in self.model_ids], dtype=np.int64)
        self._keys = [(s, m) for s in self.subtasks for m in dag.models[s]]
        self._slot = [(i, m) for i, ms in enumerate(self.model_ids) for m in ms]
        self._first = list(np.cumsum([0] + [len(ms) for ms in self.model_ids[:-1]], dtype=np.int64).tolist())
        self._entries: list[_Entry] = []
        self._map_keys: list[tuple[str, str]] = []
        self._map_slot = np.zeros(0, dtype=np.int64)
        self._map_ids = np.zeros(0, dtype=np.uint64)
        self._prices: dict[str, ModelPrice] = {}
        self._ceilings: dict[str, int] = {}
        self._whole: RolloutProblem | None = None
        # (N, M) per entry, and per subtask; filled by `_recompute`
        self.in_cost = np.zeros((n, k))
        self.out_price = np.zeros(k)
        self.default_mt = np.ones((n, k), dtype=np.int64)
        self.tight_mt = np.ones((n, k), dtype=np.int64)
        self.success_prob = np.zeros((n, k))
        self.mean_cost = np.full((n, k), np.inf)
        self.mean_latency = np.full((n, k), np.inf)
        self.cheap_model = np.zeros(n, dtype=np.int64)
        """(N,) model of each subtask's cheap plan."""
        self.cheap_cost = np.zeros(n)
        """(N,) expected USD of the cheap plan until the subtask passes."""
        self.cheap_latency = np.zeros(n)
        """(N,) time the summary gives the subtask: its cheap model's mean latency (truncation counted)."""
        self.bottom = np.zeros(n)
        """(N,) longest chain of `cheap_latency` from the subtask (included) to the end of the DAG."""
        self._entries = [_compile_entry(state.estimates[key]) for key in self._keys]
        self.compiled = len(self._entries)
        """How many entries were compiled so far (a measure of the work `refresh` did)."""
        self._prices = dict(state.prices)
        self._ceilings = dict(state.max_tokens_ceiling)
        self._recompute(range(n))
        self._index_mapping(state.estimates)

    # ---- keeping current -------------------------------------------------------------

    def refresh(self, state: PlanState) -> int:
        """Compile again what changed in `state` (estimates, prices, ceilings); return how many subtasks."""
        if state.dag is not self.dag:
            raise ValueError("a CompiledDag serves one workflow; build a new one for a new `DagView`")
        changed: set[int] = set()
        estimates = state.estimates
        keys = list(estimates)
        if keys != self._map_keys:
            self._index_mapping(estimates)
            stale = [j for j, key in enumerate(self._keys) if estimates[key] is not self._entries[j].estimate]
        else:
            ids = np.fromiter(map(id, estimates.values()), dtype=np.uint64, count=len(keys))
            moved = np.flatnonzero(ids != self._map_ids)
            self._map_ids = ids
            stale = [int(self._map_slot[p]) for p in moved if self._map_slot[p] >= 0]
        for j in stale:
            self._entries[j] = _compile_entry(estimates[self._keys[j]])
            changed.add(self._slot[j][0])
        self.compiled += len(stale)
        if state.prices != self._prices:
            self._prices = dict(state.prices)
            changed.update(range(len(self.subtasks)))
        if state.max_tokens_ceiling != self._ceilings:
            new = dict(state.max_tokens_ceiling)
            for s in set(new) ^ set(self._ceilings) | {s for s in new if self._ceilings.get(s) != new[s]}:
                if s in self.position:
                    changed.add(self.position[s])
            self._ceilings = new
        if changed:
            self._recompute(sorted(changed))
            self._whole = None
        return len(changed)

    def _index_mapping(self, estimates: Mapping[tuple[str, str], AttemptEstimate]) -> None:
        slot_of = {key: j for j, key in enumerate(self._keys)}
        self._map_keys = list(estimates)
        self._map_slot = np.array([slot_of.get(key, -1) for key in self._map_keys], dtype=np.int64)
        self._map_ids = np.fromiter(map(id, estimates.values()), dtype=np.uint64, count=len(self._map_keys))

    def _recompute(self, nodes: range | list[int]) -> None:
        """Per-entry arrays and cheap plans of `nodes`, then the bottom levels they affect."""
        self.out_price = np.array([self._prices[m].output_usd_per_token for m in self.models])
        for i in nodes:
            s = self.subtasks[i]
            ceiling = self._ceilings.get(s)
            best = (np.inf, 0, 0.0)
            j = self._first[i]
            for m in self.model_ids[i]:
                e = self._entries[j]
                j += 1
                est = e.estimate
                self.in_cost[i, m] = est.input_tokens * self._prices[self.models[m]].input_usd_per_token
                cap = under_ceiling(e.default_mt, ceiling)
                self.default_mt[i, m] = cap
                self.tight_mt[i, m] = min(e.p90, cap)
                self.success_prob[i, m] = float(e.success.mean())
                self.mean_cost[i, m] = self.in_cost[i, m] + float(e.tokens.mean()) * self.out_price[m]
                self.mean_latency[i, m] = float(e.latency.mean())
                cut = truncate(
                    AttemptDraws(success=e.success, output_tokens=e.tokens, latency_s=e.latency), cap
                )
                p = max(float(cut.success.mean()), _P_FLOOR)
                per_success = (self.in_cost[i, m] + float(cut.output_tokens.mean()) * self.out_price[m]) / p
                if per_success < best[0]:
                    best = (per_success, m, float(cut.latency_s.mean()))
            self.cheap_cost[i], self.cheap_model[i], self.cheap_latency[i] = best
        self._update_bottom(set(nodes))

    def _update_bottom(self, changed: set[int]) -> None:
        # children have larger indices: settle nodes from the last, push parents when a value moves
        heap = [-i for i in changed]
        heapq.heapify(heap)
        queued = set(changed)
        while heap:
            i = -heapq.heappop(heap)
            value = self.cheap_latency[i] + max((self.bottom[c] for c in self.children[i]), default=0.0)
            if value != self.bottom[i] or i in changed:
                self.bottom[i] = value
                for p in self.parents[i]:
                    if p not in queued:
                        queued.add(p)
                        heapq.heappush(heap, -p)

    # ---- gathering problems ----------------------------------------------------------

    def whole(self) -> RolloutProblem:
        """The problem over every subtask (cached until `refresh` changes something)."""
        if self._whole is None:
            self._whole = self.problem(np.arange(len(self.subtasks), dtype=np.int64))
        return self._whole

    def problem(self, nodes: I64) -> RolloutProblem:
        """The problem over `nodes` (increasing indices): their estimates and the edges among them."""
        n_all = len(self.subtasks)
        local = np.full(n_all, -1, dtype=np.int64)
        local[nodes] = np.arange(len(nodes))
        k = len(self.models)
        offset = np.zeros((len(nodes), k), dtype=np.int64)
        size = np.zeros((len(nodes), k), dtype=np.int64)
        succ: list[B] = []
        tok: list[I64] = []
        lat: list[F64] = []
        pos = 0
        for a, i in enumerate(nodes.tolist()):
            j = self._first[i]
            for m in self.model_ids[i]:
                e = self._entries[j]
                j += 1
                offset[a, m], size[a, m] = pos, len(e.success)
                pos += len(e.success)
                succ.append(e.success)
                tok.append(e.tokens)
                lat.append(e.latency)
        kids = [[int(local[c]) for c in self.children[i] if local[c] >= 0] for i in nodes.tolist()]
        parent_count = np.array(
            [sum(1 for p in self.parents[i] if local[p] >= 0) for i in nodes.tolist()], dtype=np.int64
        )
        return RolloutProblem(
            subtasks=tuple(self.subtasks[i] for i in nodes.tolist()),
            models=self.models,
            parent_count=parent_count,
            child_ptr=np.cumsum([0] + [len(c) for c in kids], dtype=np.int64),
            child_idx=np.array([c for cs in kids for c in cs], dtype=np.int64),
            allowed=self.allowed[nodes],
            fallback=self.fallback[nodes],
            offset=offset,
            size=size,
            t_success=np.concatenate(succ),
            t_tokens=np.concatenate(tok),
            t_latency=np.concatenate(lat),
            t_rows=np.arange(pos, dtype=np.int64),
            in_cost=self.in_cost[nodes],
            out_price=self.out_price.copy(),
            default_mt=self.default_mt[nodes],
            tight_mt=self.tight_mt[nodes],
            success_prob=self.success_prob[nodes],
            mean_cost=self.mean_cost[nodes],
            mean_latency=self.mean_latency[nodes],
        )


def compile_problem(state: PlanState) -> RolloutProblem:
    """Flatten the estimates and prices of `state` into arrays, over the whole DAG."""
    return CompiledDag(state).whole()
