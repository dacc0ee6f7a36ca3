"""The local vLLM pool: prefix- and load-aware routing, health checks, pooled calls.

See `docs/vllm_pool.md`. Nothing here starts at import: create a
`PooledLiteLLMCaller` (or a `PoolRouter` and `HealthChecker`) and start/close it.
"""

from orchestrator.pool.client import DEFAULT_UNAVAILABLE_WAIT_S, PooledLiteLLMCaller, WarmResult
from orchestrator.pool.health import (
    HealthChecker,
    ReplicaMetrics,
    describe_check_failure,
    fetch_metrics,
    parse_vllm_metrics,
)
from orchestrator.pool.homes import PrefixHomes
from orchestrator.pool.prefix_index import (
    BlockHasher,
    PrefixIndex,
    ReplicaPrefixCache,
    render_prompt,
)
from orchestrator.pool.router import (
    STRATEGIES,
    Lease,
    PoolRouter,
    ReplicaStats,
    RouteDecision,
    RouterConfig,
    Strategy,
)

__all__ = [
    "DEFAULT_UNAVAILABLE_WAIT_S",
    "STRATEGIES",
    "BlockHasher",
    "HealthChecker",
    "Lease",
    "PoolRouter",
    "PooledLiteLLMCaller",
    "PrefixHomes",
    "PrefixIndex",
    "ReplicaMetrics",
    "ReplicaPrefixCache",
    "ReplicaStats",
    "RouteDecision",
    "RouterConfig",
    "Strategy",
    "WarmResult",
    "describe_check_failure",
    "fetch_metrics",
    "parse_vllm_metrics",
    "render_prompt",
]
