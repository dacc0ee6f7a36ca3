"""Health checks of a vLLM pool: which replicas are up, how loaded, how large their cache.

`HealthChecker` polls each replica's ``GET /health`` and ``GET /metrics`` (httpx) and
writes the result into the `PoolRouter`: a replica that fails its check is marked down
(no request goes there and its prefix index is cleared), one that passes again is put
back. From the metrics it reads the queue (``vllm:num_requests_waiting``,
``vllm:num_requests_running``) and the KV capacity (``vllm:cache_config_info``:
``num_gpu_blocks`` x ``block_size``).

Nothing runs until the owner calls `HealthChecker.start` (or enters it with
``async with``); `stop` ends the polling task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from types import TracebackType

import httpx
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.pool.router import PoolRouter

__all__ = [
    "HealthChecker",
    "ReplicaMetrics",
    "describe_check_failure",
    "fetch_metrics",
    "parse_vllm_metrics",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ReplicaMetrics:
    """The few vLLM metrics the pool uses (summed over engines and model labels)."""

    waiting: int = 0
    """``vllm:num_requests_waiting``."""
    running: int = 0
    """``vllm:num_requests_running``."""
    kv_capacity_tokens: int | None = None
    """KV cache capacity: ``num_gpu_blocks * block_size`` from ``vllm:cache_config_info``."""
    block_size: int | None = None
    """KV block size in tokens."""
    prefix_cache_queries: float = 0.0
    """``vllm:prefix_cache_queries_total``: prompt tokens looked up in the prefix cache."""
    prefix_cache_hits: float = 0.0
    """``vllm:prefix_cache_hits_total``: of those, tokens found."""
    prompt_tokens: float = 0.0
    """``vllm:prompt_tokens_total``."""
    generation_tokens: float = 0.0
    """``vllm:generation_tokens_total``."""
    requests_finished: float = 0.0
    """``vllm:request_success_total`` over all finish reasons."""


_COUNTERS = {
    "vllm:prefix_cache_queries": "prefix_cache_queries",
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:prompt_tokens": "prompt_tokens",
    "vllm:generation_tokens": "generation_tokens",
    "vllm:request_success": "requests_finished",
}


def parse_vllm_metrics(text: str) -> ReplicaMetrics:
    """Parse a vLLM ``/metrics`` page (Prometheus text format)."""
    values: dict[str, float] = {}
    kv_tokens: int | None = None
    block_size: int | None = None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:num_requests_waiting":
                values["waiting"] = values.get("waiting", 0.0) + sample.value
            elif sample.name == "vllm:num_requests_running":
                values["running"] = values.get("running", 0.0) + sample.value
            elif sample.name == "vllm:cache_config_info":
                blocks = sample.labels.get("num_gpu_blocks")
                size = sample.labels.get("block_size")
                if blocks and size and blocks.isdigit() and size.isdigit():
                    block_size = int(size)
                    kv_tokens = (kv_tokens or 0) + int(blocks) * block_size
            elif sample.name.endswith("_total") and sample.name[: -len("_total")] in _COUNTERS:
                key = _COUNTERS[sample.name[: -len("_total")]]
                values[key] = values.get(key, 0.0) + sample.value
    return ReplicaMetrics(
        waiting=int(values.get("waiting", 0)),
        running=int(values.get("running", 0)),
        kv_capacity_tokens=kv_tokens,
        block_size=block_size,
        prefix_cache_queries=values.get("prefix_cache_queries", 0.0),
        prefix_cache_hits=values.get("prefix_cache_hits", 0.0),
        prompt_tokens=values.get("prompt_tokens", 0.0),
        generation_tokens=values.get("generation_tokens", 0.0),
        requests_finished=values.get("requests_finished", 0.0),
    )


def describe_check_failure(exc: BaseException, timeout_s: float) -> str:
    """Why a request to a replica's ``/health`` or ``/metrics`` failed, in a few words."""
    if isinstance(exc, httpx.HTTPStatusError):
        return f"`{exc.request.url.path}` answered HTTP {exc.response.status_code}"
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"no answer within {timeout_s:g} s (paused, overloaded or unreachable)"
    if isinstance(exc, httpx.ConnectError):
        return f"connection refused or failed ({exc or type(exc).__name__}): is its server running?"
    return f"request failed: {exc!r}"


async def fetch_metrics(client: httpx.AsyncClient, replica: str) -> ReplicaMetrics:
    """GET and parse `replica`'s ``/metrics``; raises `httpx.HTTPError` on failure."""
    response = await client.get(f"{replica}/metrics")
    response.raise_for_status()
    return parse_vllm_metrics(response.text)


class HealthChecker:
    """Polls a pool's replicas and keeps the router's view of them current.

    Args:
        router: the router to update.
        client: httpx client to use; default: one owned (and closed) by the checker.
        interval_s: time between rounds.
        timeout_s: per-request timeout; a replica slower than this counts as down.
        failures_to_down: consecutive failed checks before a replica is marked down.
    """

    def __init__(
        self,
        router: PoolRouter,
        *,
        client: httpx.AsyncClient | None = None,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        failures_to_down: int = 1,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0 or failures_to_down < 1:
            raise ValueError(
                f"interval_s ({interval_s}) and timeout_s ({timeout_s}) must be positive and"
                f" failures_to_down ({failures_to_down}) at least 1"
            )
        self._router = router
        self._client = client
        self._owns_client = client is None
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._failures_to_down = failures_to_down
        self._failures = dict.fromkeys(router.replicas, 0)
        self._task: asyncio.Task[None] | None = None
        self._rounds = 0
        self._round_done: asyncio.Event | None = None
        self.last_metrics: dict[str, ReplicaMetrics] = {}
        """Latest metrics per replica (only replicas that answered)."""

    @property
    def rounds(self) -> int:
        """Completed check rounds."""
        return self._rounds

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout_s)
        return self._client

    async def check_once(self) -> None:
        """Check every replica once, concurrently, and update the router."""
        await asyncio.gather(*(self._check(r) for r in self._router.replicas))
        self._rounds += 1
        if self._round_done is not None:
            self._round_done.set()
            self._round_done = asyncio.Event()

    async def _check(self, replica: str) -> None:
        client = self._http()
        try:
            health = await client.get(f"{replica}/health", timeout=self._timeout_s)
            health.raise_for_status()
            metrics = await asyncio.wait_for(fetch_metrics(client, replica), self._timeout_s)
        except (httpx.HTTPError, TimeoutError) as exc:
            self._failures[replica] += 1
            if self._failures[replica] >= self._failures_to_down and self._router.is_healthy(replica):
                _log.warning("replica %s failed its health check (%r): marked down", replica, exc)
                reason = describe_check_failure(exc, self._timeout_s)
                self._router.mark_down(replica, f"health check failed: {reason}")
            return
        self._failures[replica] = 0
        self.last_metrics[replica] = metrics
        self._router.update_load(replica, waiting=metrics.waiting, running=metrics.running)
        if metrics.kv_capacity_tokens is not None:
            self._router.set_kv_capacity(replica, metrics.kv_capacity_tokens)
        if not self._router.is_healthy(replica):
            _log.info("replica %s passed its health check: back in rotation", replica)
            self._router.mark_up(replica)

    async def wait_round(self) -> None:
        """Wait until the running task finishes its next full round (for tests and tools)."""
        if self._round_done is None:
            raise RuntimeError("HealthChecker is not running; call `start()` first")
        await self._round_done.wait()

    async def start(self) -> None:
        """Run one check now, then keep checking in a background task."""
        if self._task is not None:
            return
        self._round_done = asyncio.Event()
        await self.check_once()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="budgetflow-pool-health")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_once()
            except Exception:  # keep polling whatever one round hit
                _log.exception("pool health check round failed")

    async def stop(self) -> None:
        """Stop the background task and close the owned httpx client."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> HealthChecker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
