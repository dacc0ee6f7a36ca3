"""Choose a vLLM replica for each request: prefix affinity balanced against load.

Strategies (`Strategy`):

* ``prefix_home``: capacity-aware partition (`PrefixHomes`). A prompt whose
  first message (an agent's system prompt) spans at least `RouterConfig.home_min_blocks`
  blocks belongs to a *group*; each group gets one home replica, chosen when it is first
  seen to balance the replicas' homed footprint (relative to their KV capacity) and
  recent request heat. Requests go to their group's home unless its load exceeds the
  least loaded replica's by `RouterConfig.home_spill_load`; then, and for prompts
  without a group, the ``prefix_load`` score decides. Each long prefix is thus cached
  once in the pool instead of drifting onto every replica, which is what matters when
  the pool's total cache is about the working set.
* ``prefix_load`` (default): each healthy replica with a free slot gets the score
  ``prefix_weight * matched_fraction - load_weight * load / load_scale``, where
  ``matched_fraction`` is the share of the prompt's blocks the replica probably holds
  (`PrefixIndex`) and ``load`` is our own in-flight count plus the replica's queue
  (``vllm:num_requests_waiting``). Affinity wins while the preferred replica is not
  much busier than the others and gives way smoothly as its load grows. On top, a
  share bound (`RouterConfig.balance_slack`): a replica that has recently taken more
  than ``1 + balance_slack`` times the mean share of requests (plus a few requests of
  grace) is passed over while another is within the bound, and a new prefix is placed
  where the recent share is lowest. Instantaneous load cannot balance agents of unequal
  popularity (at a few requests in flight affinity never yields); the bound caps the
  long-run imbalance at about ``1 + balance_slack`` at the price of recomputing a hot
  prefix on a second replica.
* ``prefix_only``: highest match, load ignored (baseline).
* ``least_loaded``: lowest load, prefixes ignored (baseline).
* ``round_robin``: the next healthy replica in turn (baseline).

Equal scores are broken with a seeded `random.Random`, never toward replica 0.

A request holds a `Lease` for its whole life (`PoolRouter.lease`): the in-flight
counter goes up *before* the request is sent, so concurrent decisions see each other,
and down when the lease ends, whatever happened. The chosen chain is recorded in the
replica's index at once for the same reason.

Warm-up (`PoolRouter.plan_warm` / `pin`): the executor knows which prompts come next;
the client sends a prompt-only request to the replica the router would choose, when
that replica is idle enough, and pins the prefix there so later requests keep
landing on it even after the approximate index forgets it.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal, get_args

from orchestrator.catalog import PoolSpec
from orchestrator.errors import ConfigError, ReplicaUnavailable
from orchestrator.model_client import ChatMessage
from orchestrator.pool.homes import PrefixHomes
from orchestrator.pool.prefix_index import BlockHasher, PrefixIndex, render_prompt

__all__ = [
    "STRATEGIES",
    "Lease",
    "PoolRouter",
    "ReplicaStats",
    "RouteDecision",
    "RouterConfig",
    "Strategy",
]

Strategy = Literal["prefix_load", "prefix_home", "round_robin", "least_loaded", "prefix_only"]
"""How the router picks a replica."""

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
"""All strategies, default first."""


@dataclass(frozen=True, kw_only=True)
class RouterConfig:
    """Tuning of `PoolRouter`; the defaults suit a few replicas of one model."""

    strategy: Strategy = "prefix_load"
    """Routing strategy."""
    prefix_weight: float = 1.0
    """Weight of the matched prompt fraction (0..1) in the ``prefix_load`` score."""
    load_weight: float = 1.0
    """Weight of the load term in the ``prefix_load`` score."""
    load_scale: float = 8.0
    """Requests of extra load that cancel a full prefix match at equal weights.

    Recomputing a long shared prefix costs about as much as a whole request, so affinity
    should only give way when the preferred replica is several requests busier (the
    benchmark in `docs/vllm_pool.md` compares 4 and 8).
    """
    chars_per_token: float = 4.0
    """Characters per token of the served model's tokenizer, for block hashing."""
    default_kv_capacity_tokens: int = 65_536
    """Index capacity per replica until the pool spec or the replica's metrics give one."""
    balance_slack: float | None = 0.1
    """``prefix_load``: bound on each replica's share of recent requests, or `None` for none.

    A replica whose recent request count (decayed, see `balance_half_life_requests`) would
    exceed ``(1 + balance_slack) * mean + balance_grace_requests`` with this request is
    passed over while another replica is within its bound (consistent hashing with
    bounded loads, applied to the long-run request share). Instantaneous load alone
    cannot balance a pool whose prefixes have unequal popularity: affinity keeps every
    request of a popular agent on the replica that first saw it.
    """
    balance_grace_requests: float = 4.0
    """``prefix_load``: requests a replica may be ahead of the bound before it is passed over,
    so that the first requests of a run are not scattered."""
    balance_free_match: float = 0.0
    """``prefix_load``: a request passed over by the share bound goes to the best-scoring
    replica within the bound that holds at least this share of what the best replica
    holds of the prompt; without one, to the replica with the lowest recent share.

    0 (default): simply the best-scoring replica within the bound. 0.9 (send partial
    matches to the replica with the most room) was measured worse on the pool benchmark
    (`docs/vllm_pool.md`)."""
    balance_half_life_requests: float = 256.0
    """``prefix_load``: routed requests after which a request counts half in the shares."""
    warm_max_load: int = 0
    """A replica has spare capacity for warm-up when its load is at most this."""
    max_pinned_prefixes: int = 256
    """Warmed prefixes whose affinity is kept stable (LRU beyond that)."""
    home_min_blocks: int = 4
    """``prefix_home``: a prompt whose first message spans fewer full blocks has no group."""
    home_spill_load: int = 4
    """``prefix_home``: a request leaves its group's home when the home's load (in flight +
    waiting) exceeds the least loaded replica's by at least this many requests.

    A spill recomputes the group's prefix on another replica and evicts something there,
    so it should only buy a large queueing difference.
    """
    home_half_life_requests: float = 64.0
    """``prefix_home``: requests after which a group's heat (load share) counts half."""
    max_home_groups: int = 1024
    """``prefix_home``: groups whose home is remembered (LRU beyond that)."""
    seed: int = 0
    """Seed of the tie-breaking random generator."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"router strategy `{self.strategy}` is unknown; use one of"
                f" {', '.join(f'`{s}`' for s in STRATEGIES)}"
            )
        if self.load_scale <= 0 or self.prefix_weight < 0 or self.load_weight < 0:
            raise ConfigError(
                "router weights must be non-negative and `load_scale` positive; got"
                f" prefix_weight={self.prefix_weight}, load_weight={self.load_weight},"
                f" load_scale={self.load_scale}"
            )
        if self.home_min_blocks < 1 or self.home_spill_load < 1 or self.max_home_groups < 1:
            raise ConfigError(
                "`home_min_blocks`, `home_spill_load` and `max_home_groups` must be at least 1; got"
                f" {self.home_min_blocks}, {self.home_spill_load}, {self.max_home_groups}"
            )
        if self.balance_slack is not None and self.balance_slack < 0:
            raise ConfigError(f"`balance_slack` must be at least 0 or None, got {self.balance_slack}")
        if not 0.0 <= self.balance_free_match <= 1.0:
            raise ConfigError(f"`balance_free_match` must be in [0, 1], got {self.balance_free_match}")
        if self.balance_grace_requests < 0 or self.balance_half_life_requests <= 0:
            raise ConfigError(
                "`balance_grace_requests` must be at least 0 and `balance_half_life_requests` positive;"
                f" got {self.balance_grace_requests}, {self.balance_half_life_requests}"
            )
        if self.home_half_life_requests <= 0:
            raise ConfigError(
                f"`home_half_life_requests` must be positive, got {self.home_half_life_requests}"
            )


@dataclass(frozen=True, kw_only=True)
class RouteDecision:
    """Where one request goes and why."""

    replica: str
    """Base URL of the chosen replica."""
    matched_blocks: int
    """Prompt blocks the replica probably holds."""
    total_blocks: int
    """Full blocks in the prompt."""
    score: float
    """The winning score (strategy-specific scale)."""
    load: int
    """The replica's load when chosen (in flight + waiting)."""
    home: str | None = None
    """``prefix_home``: the home of the prompt's group (differs from `replica` on a spill)."""
    rebalanced: bool = False
    """``prefix_load``: a better-scoring replica was passed over for its share bound."""


@dataclass(frozen=True, kw_only=True)
class ReplicaStats:
    """A snapshot of one replica as the router sees it."""

    replica: str
    """Base URL."""
    healthy: bool
    """Whether requests may go there."""
    in_flight: int
    """Requests this router has sent and not yet finished."""
    waiting: int
    """`vllm:num_requests_waiting` at the last health check."""
    running: int
    """`vllm:num_requests_running` at the last health check."""
    kv_capacity_tokens: int | None
    """KV cache capacity, when known."""
    indexed_blocks: int
    """Blocks in the router's index for this replica."""
    requests: int
    """Requests routed here (including failed ones)."""
    failures: int
    """Requests that failed here."""
    prompt_tokens: int
    """Prompt tokens of finished requests."""
    cached_tokens: int
    """Of those, tokens served from the prefix cache."""
    homed_groups: int = 0
    """``prefix_home``: prefix groups whose home this replica is."""
    homed_blocks: int = 0
    """``prefix_home``: their blocks, each group counted once."""
    spilled_in: int = 0
    """``prefix_home``: requests routed here although their group's home is elsewhere."""
    recent_requests: float = 0.0
    """Requests routed here, decayed (``balance_half_life_requests``): its long-run share."""
    rebalanced_in: int = 0
    """``prefix_load``: requests routed here because a better-matching replica was over its
    share bound (`RouterConfig.balance_slack`)."""
    down_since: float | None = None
    """When the replica was taken out (`time.time()`), or `None` while it is healthy."""
    down_reason: str | None = None
    """Why it was taken out (the failed check or call), or `None` while it is healthy."""


@dataclass(kw_only=True)
class _Replica:
    url: str
    healthy: bool = True
    in_flight: int = 0
    waiting: int = 0
    running: int = 0
    kv_capacity_tokens: int | None = None
    requests: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    spilled_in: int = 0
    recent_requests: float = 0.0
    rebalanced_in: int = 0
    down_since: float | None = None
    down_reason: str | None = None

    @property
    def load(self) -> int:
        return self.in_flight + self.waiting


@dataclass(kw_only=True)
class Lease:
    """One request's hold on a replica; see `PoolRouter.lease`."""

    decision: RouteDecision
    """The routing decision."""
    chain: tuple[int, ...] = field(repr=False)
    """Block hashes of the prompt."""
    prompt_tokens: int | None = None
    """Prompt tokens, once recorded."""
    cached_tokens: int | None = None
    """Cached prompt tokens, once recorded."""
    failed: bool = False
    """Whether the request failed."""

    @property
    def replica(self) -> str:
        """Base URL of the leased replica."""
        return self.decision.replica


class PoolRouter:
    """Routes requests of one pool; state lives in this object, one per pool per process.

    Args:
        pool: the pool spec (replicas, block size, KV capacity, in-flight limit).
        config: strategy and weights.
    """

    def __init__(self, pool: PoolSpec, config: RouterConfig | None = None) -> None:
        self.pool = pool
        self.config = config or RouterConfig()
        self.hasher = BlockHasher(
            block_size_tokens=pool.block_size_tokens, chars_per_token=self.config.chars_per_token
        )
        self._replicas = {url: _Replica(url=url) for url in pool.replicas}
        capacity = pool.kv_capacity_tokens or self.config.default_kv_capacity_tokens
        self._index = PrefixIndex(pool.replicas, capacity_blocks=max(1, capacity // pool.block_size_tokens))
        if pool.kv_capacity_tokens is not None:
            for replica in self._replicas.values():
                replica.kv_capacity_tokens = pool.kv_capacity_tokens
        self._rng = random.Random(self.config.seed)
        self._homes = PrefixHomes(
            half_life_requests=self.config.home_half_life_requests,
            max_groups=self.config.max_home_groups,
            rng=self._rng,
        )
        self._rr_next = 0
        self._share_decay = 0.5 ** (1.0 / self.config.balance_half_life_requests)
        self._pinned: OrderedDict[int, tuple[str, int]] = OrderedDict()
        self._waiters: set[asyncio.Future[None]] = set()

    @property
    def replicas(self) -> tuple[str, ...]:
        """Base URLs of all replicas, healthy or not."""
        return self.pool.replicas

    @property
    def index(self) -> PrefixIndex:
        """The per-replica prefix index (read it; the router writes it)."""
        return self._index

    @property
    def homes(self) -> PrefixHomes:
        """The home replicas of prefix groups (``prefix_home``; read it, the router writes it)."""
        return self._homes

    # -- health and load, written by the health checker and the client -----------------

    def mark_down(self, replica: str, reason: str | None = None) -> None:
        """Take `replica` out: no request goes there until `mark_up`; its index is cleared.

        Args:
            replica: base URL.
            reason: why (shown in `ReplicaStats.down_reason` and outage errors); kept
                until `mark_up`, so a replica already down keeps its first reason.
        """
        state = self._replicas[replica]
        if state.healthy or state.down_reason is None:
            state.down_reason = reason
        if state.healthy:
            state.healthy = False
            state.down_since = time.time()
            self._index.clear(replica)
            for key in [k for k, (r, _) in self._pinned.items() if r == replica]:
                del self._pinned[key]
            self._homes.forget_replica(replica)
        self._notify()

    def mark_up(self, replica: str) -> None:
        """Put `replica` back into rotation.

        Its recent-request count restarts at the mean of the other healthy replicas', so
        the share bound neither floods it nor keeps it idle.
        """
        state = self._replicas[replica]
        if not state.healthy:
            others = [r.recent_requests for r in self._replicas.values() if r.healthy]
            state.recent_requests = sum(others) / len(others) if others else 0.0
        state.healthy = True
        state.down_since = None
        state.down_reason = None
        self._notify()

    def is_healthy(self, replica: str) -> bool:
        """Whether `replica` takes requests."""
        return self._replicas[replica].healthy

    def any_healthy(self) -> bool:
        """Whether at least one replica takes requests."""
        return any(r.healthy for r in self._replicas.values())

    async def wait_for_healthy(self, timeout_s: float | None) -> bool:
        """Wait until a replica is healthy (at once if one is); `False` after `timeout_s`.

        Wakes as soon as anyone (`HealthChecker`, a probe) calls `mark_up`; this does not
        probe by itself.
        """
        try:
            async with asyncio.timeout(timeout_s):
                while not self.any_healthy():
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.add(waiter)
                    try:
                        await waiter
                    finally:
                        self._waiters.discard(waiter)
        except TimeoutError:
            return self.any_healthy()
        return True

    def describe_replicas(self) -> str:
        """Each replica's state for an error message: healthy, or down since when and why."""
        now = time.time()
        parts = []
        for url, state in self._replicas.items():
            if state.healthy:
                parts.append(f"`{url}` healthy ({state.in_flight} in flight)")
                continue
            since = ""
            if state.down_since is not None:
                clock = time.strftime("%H:%M:%S", time.gmtime(state.down_since))
                since = f" since {clock} UTC ({now - state.down_since:.1f} s ago)"
            parts.append(f"`{url}` down{since}: {state.down_reason or 'reason not recorded'}")
        return "; ".join(parts)

    def update_load(self, replica: str, *, waiting: int, running: int) -> None:
        """Record the replica's queue as reported by its metrics."""
        state = self._replicas[replica]
        state.waiting = max(0, waiting)
        state.running = max(0, running)

    def set_kv_capacity(self, replica: str, tokens: int) -> None:
        """Bound `replica`'s index by its KV capacity (unless the pool spec fixes one)."""
        if self.pool.kv_capacity_tokens is not None or tokens <= 0:
            return
        self._replicas[replica].kv_capacity_tokens = tokens
        self._index.resize(replica, max(1, tokens // self.pool.block_size_tokens))

    def stats(self) -> dict[str, ReplicaStats]:
        """Snapshot of every replica."""
        sizes = self._index.sizes()
        homed = self._homes.homed_blocks()
        return {
            url: ReplicaStats(
                replica=url,
                healthy=r.healthy,
                in_flight=r.in_flight,
                waiting=r.waiting,
                running=r.running,
                kv_capacity_tokens=r.kv_capacity_tokens,
                indexed_blocks=sizes[url],
                requests=r.requests,
                failures=r.failures,
                prompt_tokens=r.prompt_tokens,
                cached_tokens=r.cached_tokens,
                homed_groups=self._homes.groups_on(url),
                homed_blocks=homed.get(url, 0),
                spilled_in=r.spilled_in,
                recent_requests=r.recent_requests,
                rebalanced_in=r.rebalanced_in,
                down_since=r.down_since,
                down_reason=r.down_reason,
            )
            for url, r in self._replicas.items()
        }

    # -- routing ------------------------------------------------------------------------

    def choose(self, messages: Sequence[ChatMessage]) -> RouteDecision:
        """Pick a replica for `messages` without taking it (see `lease`).

        Raises:
            ReplicaUnavailable: no replica is healthy, or all healthy ones are full.
        """
        return self._choose(self.hasher.hash_messages(messages), group=self._group_blocks(messages))

    def _group_blocks(self, messages: Sequence[ChatMessage]) -> int:
        """Full blocks inside the first message: the prompt's group prefix (0: none)."""
        if self.config.strategy != "prefix_home" or not messages:
            return 0
        first = len(render_prompt(messages[:1]).encode("utf-8", "surrogatepass"))
        blocks = first // self.hasher.block_chars
        return blocks if blocks >= self.config.home_min_blocks else 0

    def _eligible(self) -> list[_Replica]:
        healthy = [r for r in self._replicas.values() if r.healthy]
        if not healthy:
            raise ReplicaUnavailable(
                f"no healthy replica in pool `{self.pool.name}` ({self.describe_replicas()});"
                " wait for the health checker to bring one back or fix the replicas"
            )
        limit = self.pool.max_in_flight_per_replica
        free = [r for r in healthy if limit is None or r.in_flight < limit]
        if not free:
            raise ReplicaUnavailable(
                f"all healthy replicas of pool `{self.pool.name}` hold"
                f" {limit} requests (`max_in_flight_per_replica`)"
            )
        return free

    def _pinned_match(self, chain: Sequence[int]) -> tuple[str, int] | None:
        best: tuple[str, int] | None = None
        for block in chain:
            hit = self._pinned.get(block)
            if hit is not None:
                best = hit
        return best

    def _choose(self, chain: tuple[int, ...], *, only: str | None = None, group: int = 0) -> RouteDecision:
        candidates = self._eligible()
        if only is not None:
            candidates = [r for r in candidates if r.url == only]
            if not candidates:
                raise ReplicaUnavailable(f"replica `{only}` of pool `{self.pool.name}` is down or full")
        total = len(chain)
        strategy = self.config.strategy
        if strategy == "round_robin" and only is None:
            return self._round_robin(candidates, chain)
        home: str | None = None
        if strategy == "prefix_home" and only is None and 0 < group <= total:
            home = self._home_for(candidates, chain, group)
            target = next((r for r in candidates if r.url == home), None)
            least = min(r.load for r in candidates)
            if target is not None and target.load - least < self.config.home_spill_load:
                matched = self._index.match(target.url, chain)
                pinned = self._pinned_match(chain)
                if pinned is not None and pinned[0] == target.url:
                    matched = max(matched, pinned[1])
                return RouteDecision(
                    replica=target.url,
                    matched_blocks=matched,
                    total_blocks=total,
                    score=matched / total,
                    load=target.load,
                    home=home,
                )
            # Spill: the home is down, full or much busier; the rest compete on prefix_load.
            candidates = [r for r in candidates if r.url != home] or candidates
        pinned = self._pinned_match(chain) if strategy != "least_loaded" else None
        scored: list[tuple[float, _Replica, int]] = []
        for replica in candidates:
            matched = 0
            if strategy != "least_loaded":
                matched = self._index.match(replica.url, chain)
                if pinned is not None and pinned[0] == replica.url:
                    matched = max(matched, pinned[1])
            fraction = matched / total if total else 0.0
            if strategy == "prefix_only":
                score = fraction
            elif strategy == "least_loaded":
                score = -float(replica.load)
            else:
                score = (
                    self.config.prefix_weight * fraction
                    - self.config.load_weight * replica.load / self.config.load_scale
                )
            scored.append((score, replica, matched))
        best_score = max(s for s, _, _ in scored)
        rebalanced = False
        balancing = strategy == "prefix_load" and self.config.balance_slack is not None
        if balancing and only is None:
            within = self._within_share_bound(candidates)
            kept = [entry for entry in scored if entry[1].url in within]
            if kept and len(kept) < len(scored):
                scored = self._rebalance_targets(scored, kept)
                top = max(s for s, _, _ in scored)
                rebalanced = not math.isclose(top, best_score, abs_tol=1e-9)
                best_score = top
        tied = [(s, r, m) for s, r, m in scored if math.isclose(s, best_score, abs_tol=1e-9)]
        if len(tied) > 1 and balancing:
            # A new prefix: place it where the long-run share is lowest.
            fewest = min(r.recent_requests for _, r, _ in tied)
            tied = [t for t in tied if math.isclose(t[1].recent_requests, fewest, abs_tol=1e-6)]
        score, replica, matched = tied[0] if len(tied) == 1 else self._rng.choice(tied)
        return RouteDecision(
            replica=replica.url,
            matched_blocks=matched,
            total_blocks=total,
            score=score,
            load=replica.load,
            home=home,
            rebalanced=rebalanced,
        )

    def _rebalance_targets(
        self, scored: list[tuple[float, _Replica, int]], kept: list[tuple[float, _Replica, int]]
    ) -> list[tuple[float, _Replica, int]]:
        """Where a request goes when better-scoring replicas are over their share bound.

        The candidates within the bound that hold at least `balance_free_match` of what
        the best replica holds of the prompt (with the default 0: all of them, so the best
        score within the bound decides); without one, the replica with the most room
        (lowest recent share).
        """
        best_match = max(m for _, _, m in scored)
        free = [e for e in kept if e[2] >= self.config.balance_free_match * best_match]
        if free:
            return free
        lowest = min(r.recent_requests for _, r, _ in kept)
        return [e for e in kept if math.isclose(e[1].recent_requests, lowest, abs_tol=1e-6)]

    def _within_share_bound(self, candidates: list[_Replica]) -> set[str]:
        """Candidates whose recent-request count stays within the share bound with one more."""
        assert self.config.balance_slack is not None
        healthy = [r for r in self._replicas.values() if r.healthy]
        mean = (sum(r.recent_requests for r in healthy) + 1.0) / len(healthy)
        bound = (1.0 + self.config.balance_slack) * mean + self.config.balance_grace_requests
        return {r.url for r in candidates if r.recent_requests + 1.0 <= bound}

    def _home_for(self, candidates: list[_Replica], chain: tuple[int, ...], group: int) -> str:
        """The home of `chain`'s group: its recorded one if healthy, else the best placement."""
        home = self._homes.home(chain[group - 1])
        if home is not None and self._replicas[home].healthy:
            return home
        head = chain[:group]
        return self._homes.best(
            group,
            [r.url for r in candidates],
            capacity_blocks={r.url: self._index.cache(r.url).capacity_blocks for r in candidates},
            held_blocks={r.url: self._index.match(r.url, head) for r in candidates},
        )

    def _round_robin(self, candidates: list[_Replica], chain: Sequence[int]) -> RouteDecision:
        eligible = {r.url for r in candidates}
        order = self.pool.replicas
        for step in range(len(order)):
            url = order[(self._rr_next + step) % len(order)]
            if url in eligible:
                self._rr_next = (self._rr_next + step + 1) % len(order)
                replica = self._replicas[url]
                return RouteDecision(
                    replica=url,
                    matched_blocks=self._index.match(url, chain),
                    total_blocks=len(chain),
                    score=0.0,
                    load=replica.load,
                )
        raise AssertionError("unreachable: candidates is a non-empty subset of the pool")

    @asynccontextmanager
    async def lease(
        self,
        messages: Sequence[ChatMessage],
        *,
        replica: str | None = None,
        wait_for_slot: bool = True,
    ) -> AsyncIterator[Lease]:
        """Hold a replica for one request.

        The in-flight counter is raised and the prompt's chain indexed before the body
        runs; the counter drops when the body exits, however it exits.

        Args:
            messages: the prompt.
            replica: force this replica (warm-up); default: choose one.
            wait_for_slot: when every healthy replica is at `max_in_flight_per_replica`,
                wait for a slot instead of raising `ReplicaUnavailable`.

        Raises:
            ReplicaUnavailable: no healthy replica (raised at once, even when waiting).
        """
        chain = self.hasher.hash_messages(messages)
        decision = await self._acquire(chain, replica, wait_for_slot, self._group_blocks(messages))
        state = self._replicas[decision.replica]
        lease = Lease(decision=decision, chain=chain)
        try:
            yield lease
        except BaseException:
            lease.failed = True
            raise
        finally:
            state.in_flight -= 1
            if lease.failed:
                state.failures += 1
            self._notify()

    async def _acquire(
        self, chain: tuple[int, ...], replica: str | None, wait_for_slot: bool, group: int
    ) -> RouteDecision:
        while True:
            try:
                decision = self._choose(chain, only=replica, group=group)
                break
            except ReplicaUnavailable:
                if not wait_for_slot or not any(r.healthy for r in self._replicas.values()):
                    raise
                if replica is not None and not self._replicas[replica].healthy:
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        state = self._replicas[decision.replica]
        state.in_flight += 1
        state.requests += 1
        for other in self._replicas.values():
            other.recent_requests *= self._share_decay
        state.recent_requests += 1.0
        if decision.rebalanced:
            state.rebalanced_in += 1
        if chain:
            self._index.insert(decision.replica, chain)
        if decision.home is not None:
            key = chain[group - 1]
            if self._homes.home(key) != decision.home:
                self._homes.assign(key, decision.home, group)
            self._homes.record(key)
            if decision.replica != decision.home:
                state.spilled_in += 1
        return decision

    def record(self, lease: Lease, *, prompt_tokens: int, cached_tokens: int) -> None:
        """Account a finished request's usage to its replica."""
        lease.prompt_tokens = prompt_tokens
        lease.cached_tokens = cached_tokens
        state = self._replicas[lease.replica]
        state.prompt_tokens += prompt_tokens
        state.cached_tokens += cached_tokens

    def _notify(self) -> None:
        # Synchronous on purpose: release paths must neither block nor be cancellable.
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    # -- warm-up ------------------------------------------------------------------------

    def plan_warm(self, messages: Sequence[ChatMessage]) -> RouteDecision | None:
        """Where to warm `messages`' prefix, or `None` when it is not worth it now.

        `None` when the replica the router would choose is busier than
        `RouterConfig.warm_max_load`, already holds the whole prefix, or no replica is
        available.
        """
        chain = self.hasher.hash_messages(messages)
        if not chain:
            return None
        try:
            decision = self._choose(chain, group=self._group_blocks(messages))
        except ReplicaUnavailable:
            return None
        if decision.load > self.config.warm_max_load:
            return None
        if decision.matched_blocks >= decision.total_blocks:
            self.pin(messages, decision.replica)
            return None
        return decision

    def pin(self, messages: Sequence[ChatMessage], replica: str) -> None:
        """Keep `messages`' prefix affine to `replica` (bounded LRU of pinned prefixes)."""
        chain = self.hasher.hash_messages(messages)
        if not chain:
            return
        group = self._group_blocks(messages)
        if 0 < group <= len(chain):  # prefix_home: the warmed replica becomes the group's home
            self._homes.assign(chain[group - 1], replica, group)
        key = chain[-1]
        self._pinned[key] = (replica, len(chain))
        self._pinned.move_to_end(key)
        while len(self._pinned) > self.config.max_pinned_prefixes:
            self._pinned.popitem(last=False)

    @property
    def pinned_prefixes(self) -> int:
        """Number of pinned (warmed) prefixes."""
        return len(self._pinned)
