"""vLLM pool metrics per replica, read from the routers' own view at scrape time.

The routers (`orchestrator.pool.PoolRouter`, one per pool client) already count what the
pool metrics need; this collector reads `PoolRouter.stats()` when Prometheus scrapes, so
routing pays nothing for being watched. A router is watched while its client is in use
(`PoolCollector.watching`); when it stops being watched its counts are kept, so counters
never go down while the process lives, and its gauges leave with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from orchestrator.pool.router import PoolRouter, ReplicaStats
from web._spec import MetricSpec

__all__ = ["ROUTE_REASONS", "PoolCollector"]

ROUTE_REASONS = ("preferred", "rebalanced", "spilled")
"""Why a request went to its replica: the strategy's first choice, passed over a replica
above its share bound (``prefix_load``), or left its group's busy home (``prefix_home``)."""


@dataclass(kw_only=True)
class _Counts:
    preferred: int = 0
    rebalanced: int = 0
    spilled: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0

    def add(self, stats: ReplicaStats) -> None:
        self.rebalanced += stats.rebalanced_in
        self.spilled += stats.spilled_in
        self.preferred += max(0, stats.requests - stats.rebalanced_in - stats.spilled_in)
        self.failures += stats.failures
        self.prompt_tokens += stats.prompt_tokens
        self.cached_tokens += stats.cached_tokens


class PoolCollector(Collector):
    """Per replica of every watched pool: requests by routing reason, prefix-cache tokens, load.

    Register it once with a registry; watch routers as pool clients come and go.
    """

    def __init__(self, specs: Mapping[str, MetricSpec]) -> None:
        """Args:
        specs: the metric table by name (`web.metrics.METRICS`).
        """
        self._specs = specs
        self._routers: list[PoolRouter] = []
        self._retired: dict[tuple[str, str], _Counts] = {}

    @contextlib.contextmanager
    def watching(self, routers: Iterable[PoolRouter]) -> Iterator[None]:
        """Expose `routers` until the block ends; their counts stay in the totals afterwards."""
        added = list(routers)
        self._routers.extend(added)
        try:
            yield
        finally:
            for router in added:
                self._routers.remove(router)
                for url, stats in router.stats().items():
                    self._retired.setdefault((router.pool.name, url), _Counts()).add(stats)

    def collect(self) -> Iterable[Metric]:
        """The pool metric families (called by the registry at scrape time)."""
        spec = self._specs
        requests = spec["budgetflow_pool_requests_total"].counter_family()
        failures = spec["budgetflow_pool_request_failures_total"].counter_family()
        prompt = spec["budgetflow_pool_prompt_tokens_total"].counter_family()
        cached = spec["budgetflow_pool_cached_prompt_tokens_total"].counter_family()
        in_flight = spec["budgetflow_pool_requests_in_flight"].gauge_family()
        waiting = spec["budgetflow_pool_requests_waiting"].gauge_family()
        up = spec["budgetflow_pool_replica_up"].gauge_family()
        totals = {key: _Counts(**vars(counts)) for key, counts in self._retired.items()}
        live: dict[tuple[str, str], tuple[int, int, int]] = {}
        for router in list(self._routers):
            for url, stats in router.stats().items():
                key = (router.pool.name, url)
                totals.setdefault(key, _Counts()).add(stats)
                flight, queue, healthy = live.get(key, (0, 0, 0))
                live[key] = (
                    flight + stats.in_flight,
                    max(queue, stats.waiting),
                    max(healthy, int(stats.healthy)),
                )
        for (pool, url), counts in sorted(totals.items()):
            for reason in ROUTE_REASONS:
                requests.add_metric([pool, url, reason], getattr(counts, reason))
            failures.add_metric([pool, url], counts.failures)
            prompt.add_metric([pool, url], counts.prompt_tokens)
            cached.add_metric([pool, url], counts.cached_tokens)
        for (pool, url), (flight, queue, healthy) in sorted(live.items()):
            in_flight.add_metric([pool, url], flight)
            waiting.add_metric([pool, url], queue)
            up.add_metric([pool, url], healthy)
        return [requests, failures, prompt, cached, in_flight, waiting, up]
