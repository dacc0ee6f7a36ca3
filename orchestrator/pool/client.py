"""Calls to a pooled vLLM model: route, stream through litellm, account, fail cleanly.

`PooledLiteLLMCaller` is what the main model client delegates to for a `ModelSpec`
whose `pool` is set. For each `ChatRequest` it takes a `Lease` on the replica the
`PoolRouter` picks, streams ``litellm.acompletion(model="hosted_vllm/<served_model>",
api_base="<replica>/v1", stream=True, stream_options={"include_usage": True})``,
updates the `CallProgress` as tokens arrive (first-token time on the loop clock,
output tokens so far), and returns a `ChatResponse` naming the replica and the cached
prompt tokens (``usage.prompt_tokens_details.cached_tokens``; replicas need
``--enable-prompt-tokens-details``).

Failures: connection errors, timeouts, 429 and 5xx become `ProviderError` with
``retryable=True`` (the executor may retry, and the router will pick again); after such
a failure the replica is probed at once and marked down if its ``/health`` fails, so
retries do not land on a dead replica. A call that ends any other way than normally
(cancelled, timed out, failed) closes its HTTP connection before the exception
propagates, which makes vLLM abort the request and stop generating; a call that ends
normally leaves its connection open for the next call to the same replica (see
`_connections`).

Prices are not needed here: the response carries input, cached and output tokens, and
`ModelSpec.cost_nano` prices them from the catalog (litellm has no prices for local
models).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx

from orchestrator._litellm import litellm_module
from orchestrator.catalog import PoolSpec
from orchestrator.errors import ConfigError, ProviderError
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse
from orchestrator.pool._connections import ReplicaConnections
from orchestrator.pool.health import HealthChecker
from orchestrator.pool.prefix_index import render_prompt
from orchestrator.pool.router import PoolRouter, RouterConfig

__all__ = ["PooledLiteLLMCaller", "WarmResult"]

_log = logging.getLogger(__name__)
_RETRYABLE_STATUS = frozenset({408, 409, 429})


@dataclass(frozen=True, kw_only=True)
class WarmResult:
    """What one warm-up request did."""

    replica: str
    """Replica that now holds the prefix."""
    prompt_tokens: int
    """Prompt tokens sent (to be charged like any call)."""
    cached_tokens: int
    """Of those, tokens that were already cached."""
    latency_s: float
    """Wall time of the warm-up request."""


@dataclass(frozen=True, kw_only=True)
class _StreamResult:
    text: str
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int
    finish_reason: Literal["stop", "length", "other"]


class PooledLiteLLMCaller:
    """Sends chat requests for one vLLM pool; one instance per pool per process.

    Args:
        pool: the pool (served model name, replicas, limits).
        router_config: routing strategy and weights; ignored when `router` is given.
        router: a router to share; default: a new one from `pool` and `router_config`.
        health_checks: run a `HealthChecker` while the caller is open (started by
            `start` or the first call, stopped by `aclose`).
        health_interval_s: seconds between health rounds.
        health_timeout_s: health request timeout; slower replicas count as down.
        http_client: httpx client for health checks and probes; default: owned.
        extra_body: extra JSON fields sent with every request (e.g. ``{"ignore_eos": True}``
            in benchmarks that need fixed output lengths).
        api_key: key sent to the replicas (vLLM ignores it unless started with one).
    """

    def __init__(
        self,
        pool: PoolSpec,
        *,
        router_config: RouterConfig | None = None,
        router: PoolRouter | None = None,
        health_checks: bool = True,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 2.0,
        http_client: httpx.AsyncClient | None = None,
        extra_body: Mapping[str, object] | None = None,
        api_key: str = "EMPTY",
    ) -> None:
        self.pool = pool
        self._router = router or PoolRouter(pool, router_config)
        self._owns_http = http_client is None
        self._http = http_client
        self._health_timeout_s = health_timeout_s
        self._health: HealthChecker | None = None
        if health_checks:
            self._health = HealthChecker(
                self._router,
                client=http_client,
                interval_s=health_interval_s,
                timeout_s=health_timeout_s,
            )
        self._extra_body = dict(extra_body or {})
        self._api_key = api_key
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        # Our own litellm HTTP handlers, one per call in flight: connections to the
        # replicas are then ours to close (litellm's cached module-level clients outlive
        # the caller and leak sockets at exit, and are shared by concurrent calls).
        self._connections = ReplicaConnections()

    @property
    def router(self) -> PoolRouter:
        """The pool's router."""
        return self._router

    @property
    def health(self) -> HealthChecker | None:
        """The health checker, when enabled."""
        return self._health

    async def start(self) -> None:
        """Open the HTTP session, run a first health round, start background checks.

        Idempotent; `complete` and `warm` call it on first use.
        """
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            if self._health is not None:
                await self._health.start()
            self._started = True

    async def aclose(self) -> None:
        """Stop health checks and close owned connections."""
        if self._health is not None:
            await self._health.stop()
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        await self._connections.aclose()
        self._started = False

    async def __aenter__(self) -> PooledLiteLLMCaller:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        """Run one call on the replica the router picks.

        Raises:
            ConfigError: the request's model is not served by this pool.
            ReplicaUnavailable: no healthy replica.
            ProviderError: the call failed; `retryable` for connection errors,
                timeouts, 429 and 5xx.
        """
        if request.model.pool != self.pool.name:
            raise ConfigError(
                f"model `{request.model.name}` is served by pool `{request.model.pool}`, not"
                f" `{self.pool.name}`; send it to its own pool's caller"
            )
        await self.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with self._router.lease(request.messages) as lease:
            progress.replica = lease.replica
            result = await self._call(
                lease.replica,
                request.messages,
                max_tokens=request.max_tokens,
                timeout_s=request.timeout_s,
                temperature=request.temperature,
                seed=request.seed,
                progress=progress,
            )
            self._router.record(lease, prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens)
        first = progress.first_token_s
        return ChatResponse(
            text=result.text,
            input_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            cached_tokens=result.cached_tokens,
            finish_reason=result.finish_reason,
            latency_s=loop.time() - started,
            ttft_s=None if first is None else first - started,
            provider="hosted_vllm",
            replica=lease.replica,
        )

    async def warm(
        self, messages: Sequence[ChatMessage], *, timeout_s: float | None = 30.0
    ) -> WarmResult | None:
        """Load `messages`' prefix into the KV cache of the replica the router would pick.

        Sends a prompt-only request (``max_tokens=1``) when that replica has spare
        capacity (`RouterConfig.warm_max_load`) and does not hold the prefix yet, then
        pins the prefix there so later requests keep their affinity. Best effort: returns
        `None` when nothing was sent or the request failed.
        """
        await self.start()
        decision = self._router.plan_warm(messages)
        if decision is None:
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._router.lease(messages, replica=decision.replica, wait_for_slot=False) as lease:
                result = await self._call(
                    lease.replica,
                    messages,
                    max_tokens=1,
                    timeout_s=timeout_s,
                    temperature=None,
                    seed=None,
                    progress=CallProgress(),
                )
                self._router.record(
                    lease, prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens
                )
        except ProviderError as exc:
            _log.info("warm-up on %s failed: %s", decision.replica, exc)
            return None
        self._router.pin(messages, decision.replica)
        return WarmResult(
            replica=decision.replica,
            prompt_tokens=result.prompt_tokens,
            cached_tokens=result.cached_tokens,
            latency_s=loop.time() - started,
        )

    async def _call(
        self,
        replica: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        timeout_s: float | None,
        temperature: float | None,
        seed: int | None,
        progress: CallProgress,
    ) -> _StreamResult:
        try:
            async with asyncio.timeout(timeout_s):
                return await self._stream(
                    replica,
                    messages,
                    max_tokens=max_tokens,
                    timeout_s=timeout_s,
                    temperature=temperature,
                    seed=seed,
                    progress=progress,
                )
        except TimeoutError as exc:
            await self._probe(replica)
            raise ProviderError(
                f"call to replica `{replica}` of pool `{self.pool.name}` timed out after"
                f" {timeout_s}s; retry, or raise the request's `timeout_s`",
                retryable=True,
            ) from exc
        except ProviderError:
            raise
        except Exception as exc:
            error = _provider_error(exc, replica, self.pool.name)
            if error is None:
                raise
            if error.retryable:
                await self._probe(replica)
            raise error from exc

    async def _stream(
        self,
        replica: str,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        timeout_s: float | None,
        temperature: float | None,
        seed: int | None,
        progress: CallProgress,
    ) -> _StreamResult:
        litellm = litellm_module()
        loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {
            "model": f"hosted_vllm/{self.pool.served_model}",
            "api_base": f"{replica}/v1",
            "api_key": self._api_key,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "num_retries": 0,
        }
        if timeout_s is not None:
            kwargs["timeout"] = timeout_s
        if temperature is not None:
            kwargs["temperature"] = temperature
        if seed is not None:
            kwargs["seed"] = seed
        if self._extra_body:
            kwargs["extra_body"] = dict(self._extra_body)
        handler = self._connections.take(replica)
        stream: Any = None
        parts: list[str] = []
        usage: Any = None
        finish: str | None = None
        try:
            stream = await litellm.acompletion(**kwargs, client=handler)
            async for chunk in stream:
                for choice in chunk.choices or ():
                    content = choice.delta.content if choice.delta is not None else None
                    if content:
                        parts.append(content)
                        # vLLM streams about one token per chunk; usage corrects it at the end.
                        progress.output_tokens += 1
                        if progress.first_token_s is None:
                            progress.first_token_s = loop.time()
                    if choice.finish_reason:
                        finish = choice.finish_reason
                chunk_usage = getattr(chunk, "usage", None)
                if chunk_usage is not None:
                    usage = chunk_usage
            await stream.aclose()
        except BaseException:
            # Cancelled, timed out or failed: drop the connection (its sockets close, so
            # vLLM sees the disconnect and aborts the request), then the stream wrapper.
            await self._connections.discard(handler)
            if stream is not None:
                await asyncio.shield(stream.aclose())
            raise
        self._connections.give_back(replica, handler)
        text = "".join(parts)
        if usage is not None:
            prompt_tokens = int(usage.prompt_tokens or 0)
            output_tokens = int(usage.completion_tokens or 0)
            details = getattr(usage, "prompt_tokens_details", None)
            cached = int(getattr(details, "cached_tokens", None) or 0)
        else:  # not expected with include_usage; estimate rather than lose the call's cost
            prompt_tokens = math.ceil(len(render_prompt(messages)) / 4)
            output_tokens = progress.output_tokens
            cached = 0
        progress.input_tokens = prompt_tokens
        progress.output_tokens = output_tokens
        return _StreamResult(
            text=text,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            cached_tokens=cached,
            finish_reason=_finish(finish),
        )

    async def _probe(self, replica: str) -> None:
        """Check `replica` right after a failure; mark it down if `/health` fails."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._health_timeout_s)
        try:
            response = await self._http.get(f"{replica}/health", timeout=self._health_timeout_s)
            response.raise_for_status()
        except httpx.HTTPError:
            _log.warning("replica %s failed a probe after a failed call: marked down", replica)
            self._router.mark_down(replica)


def _finish(reason: str | None) -> Literal["stop", "length", "other"]:
    if reason == "stop":
        return "stop"
    if reason == "length":
        return "length"
    return "other"


def _provider_error(exc: Exception, replica: str, pool: str) -> ProviderError | None:
    """Map a litellm/openai/transport exception to `ProviderError`; `None`: not ours to map."""
    import openai  # installed with litellm; imported here because litellm is imported lazily

    where = f"replica `{replica}` of pool `{pool}`"
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return ProviderError(f"could not reach {where}: {exc}", retryable=True)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, openai.OpenAIError):
        if not isinstance(status, int):
            return ProviderError(f"call to {where} failed: {exc}", retryable=True)
        retryable = status >= 500 or status in _RETRYABLE_STATUS
        hint = "retry" if retryable else "fix the request"
        return ProviderError(
            f"{where} answered HTTP {status}: {exc}; {hint}",
            retryable=retryable,
            status_code=status,
        )
    # Transport errors that escape litellm's mapping (aiohttp or httpx, depending on the
    # litellm version): the connection broke, so the call may succeed elsewhere.
    if isinstance(exc, OSError | httpx.HTTPError) or type(exc).__module__.startswith("aiohttp"):
        return ProviderError(f"connection to {where} broke: {exc!r}", retryable=True)
    return None
