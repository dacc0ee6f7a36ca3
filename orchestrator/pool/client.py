"""Calls to a pooled vLLM model: route, stream through litellm, account, fail cleanly.

`PooledLiteLLMCaller` is what the main model client delegates to for a `ModelSpec`
whose `pool` is set. For each `ChatRequest` it takes a `Lease` on the replica the
`PoolRouter` picks, streams ``litellm.acompletion(model="hosted_vllm/<served_model>",
api_base="<replica>/v1", stream=True, stream_options={"include_usage": True})``,
updates the `CallProgress` as tokens arrive (first-token time on the loop clock,
output tokens so far), and returns a `ChatResponse` naming the replica and the cached
prompt tokens (``usage.prompt_tokens_details.cached_tokens``; replicas need
``--enable-prompt-tokens-details``). A ``seed`` is sent only when the request has one.

Failures: connection errors, timeouts, 429 and 5xx become `ProviderError` with
``retryable=True`` (the executor may retry, and the router will pick again); after such
a failure the replica is probed at once and marked down if its ``/health`` fails, so
retries do not land on a dead replica.

Poison requests: a request during which its replica *died* (the call failed with HTTP
5xx and ``/health`` then fails) is not retryable: a request that crashes the engine
would crash every replica it is retried on. One whose connection merely dropped
before the replica died is retried once elsewhere; if a second replica dies serving
it, it fails for good too (`_deaths` remembers, per request, where it killed).

Outages: when no replica is healthy, `complete` waits inside the call (so the gateway
records one call, not one per poll) while the down replicas are probed with backoff,
up to `unavailable_wait_s` and the request's ``timeout_s``; then it raises
`ReplicaUnavailable` naming each replica's state, since when and why.

Token counts: `count_prompt_tokens` asks a replica's ``/tokenize`` for the exact prompt
tokens vLLM will bill (chat template included), for the ledger's reservation.

Connections: a call that ends any other way than normally (cancelled, timed out,
failed) closes its HTTP connection before the exception propagates, which makes vLLM
abort the request and stop generating; a call that ends normally leaves its
connection open for the next call to the same replica (see `_connections`).

Prices are not needed here: the response carries input, cached and output tokens, and
`ModelSpec.cost_nano` prices them from the catalog (litellm has no prices for local
models).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import httpx

from orchestrator._litellm import litellm_module
from orchestrator.catalog import PoolSpec
from orchestrator.errors import ConfigError, ProviderError, ReplicaUnavailable
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse
from orchestrator.pool._connections import ReplicaConnections
from orchestrator.pool._deaths import RequestDeaths, request_key
from orchestrator.pool._outage import DEFAULT_UNAVAILABLE_WAIT_S, OutageWait
from orchestrator.pool.health import HealthChecker, describe_check_failure
from orchestrator.pool.router import Lease, PoolRouter, RouterConfig
from orchestrator.tokens import byte_bound

__all__ = ["DEFAULT_UNAVAILABLE_WAIT_S", "PooledLiteLLMCaller", "WarmResult"]

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
        unavailable_wait_s: when no replica is healthy, how long a call waits for one
            (also bounded by the request's ``timeout_s``) before it raises
            `ReplicaUnavailable`; 0 fails at once, `None` lets only the request's timeout
            bound the wait. See `DEFAULT_UNAVAILABLE_WAIT_S` for why 30 s.
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
        unavailable_wait_s: float | None = DEFAULT_UNAVAILABLE_WAIT_S,
    ) -> None:
        if unavailable_wait_s is not None and unavailable_wait_s < 0:
            raise ConfigError(
                f"`unavailable_wait_s` of pool `{pool.name}` must be at least 0 or None (no limit),"
                f" got {unavailable_wait_s}"
            )
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
        self._deaths = RequestDeaths()
        self._outage = OutageWait(self._router, self._health_failure, wait_s=unavailable_wait_s)

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
        await self._outage.aclose()
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

        When no replica is healthy it first waits for one (see `unavailable_wait_s`);
        the request's ``timeout_s`` bounds the whole call, waits included.

        Raises:
            ConfigError: the request's model is not served by this pool.
            ReplicaUnavailable: no replica became healthy within `unavailable_wait_s` or
                the request's timeout; not retryable (the wait already happened).
            ProviderError: the call failed; `retryable` for connection errors,
                timeouts, 429 and 5xx, except for a request during which its replica
                died (see the module docstring): that one is not retryable.
        """
        if request.model.pool != self.pool.name:
            raise ConfigError(
                f"model `{request.model.name}` is served by pool `{request.model.pool}`, not"
                f" `{self.pool.name}`; send it to its own pool's caller"
            )
        await self.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = None if request.timeout_s is None else started + request.timeout_s
        key = request_key(request)
        refusal = self._deaths.refusal(key)
        if refusal is not None:
            raise refusal
        async with contextlib.AsyncExitStack() as stack:
            lease = await self._lease(stack, request, deadline)
            progress.replica = lease.replica
            result = await self._call(
                lease.replica,
                request.messages,
                max_tokens=request.max_tokens,
                timeout_s=None if deadline is None else max(0.0, deadline - loop.time()),
                temperature=request.temperature,
                seed=request.seed,
                progress=progress,
                key=key,
            )
            self._router.record(lease, prompt_tokens=result.prompt_tokens, cached_tokens=result.cached_tokens)
        self._deaths.forget(key)
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
            response_id=progress.response_id,
        )

    async def count_prompt_tokens(self, messages: Sequence[ChatMessage], *, timeout_s: float = 5.0) -> int:
        """The prompt tokens vLLM will bill for `messages`, chat template included.

        Asks the least loaded healthy replica's ``POST /tokenize`` (the next one if it
        fails), with the served model's own chat template and generation prompt: the
        count is the ``usage.prompt_tokens`` a chat completion of `messages` reports.

        Args:
            messages: the prompt.
            timeout_s: bound on the whole count, whatever the replicas do.

        Raises:
            ProviderError: (retryable) no healthy replica, or none answered in time with a
                count; count an upper bound instead.
        """
        await self.start()
        body = {
            "model": self.pool.served_model,
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": True,
        }
        stats = self._router.stats()
        replicas = sorted((s for s in stats.values() if s.healthy), key=lambda s: s.in_flight + s.waiting)
        if not replicas:
            raise ProviderError(
                f"cannot count prompt tokens: no healthy replica in pool `{self.pool.name}`"
                f" ({self._router.describe_replicas()}); count an upper bound instead",
                retryable=True,
            )
        http = self._http_client()
        failures: list[str] = []
        try:
            async with asyncio.timeout(timeout_s):
                for state in replicas:
                    try:
                        response = await http.post(
                            f"{state.replica}/tokenize", json=body, timeout=self._health_timeout_s
                        )
                        response.raise_for_status()
                    except httpx.HTTPError as exc:
                        reason = describe_check_failure(exc, self._health_timeout_s)
                        failures.append(f"`{state.replica}`: {reason}")
                        continue
                    count = _token_count(response)
                    if count is not None:
                        return count
                    failures.append(f"`{state.replica}` answered no token count: {response.text[:200]!r}")
        except TimeoutError:
            failures.append(f"no count within {timeout_s:g} s")
        raise ProviderError(
            f"cannot count prompt tokens with `/tokenize` of pool `{self.pool.name}`"
            f" ({'; '.join(failures)}); count an upper bound instead",
            retryable=True,
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

    async def _lease(
        self, stack: contextlib.AsyncExitStack, request: ChatRequest, deadline: float | None
    ) -> Lease:
        """Hold a replica for `request` (released by `stack`), waiting through an outage."""
        while True:
            await self._outage.wait(deadline=deadline, timeout_s=request.timeout_s)
            try:
                async with asyncio.timeout_at(deadline):
                    return await stack.enter_async_context(self._router.lease(request.messages))
            except ReplicaUnavailable:
                continue  # every replica went down while the request waited for a free slot
            except TimeoutError as exc:
                raise ProviderError(
                    f"no replica of pool `{self.pool.name}` had a free slot"
                    f" (`max_in_flight_per_replica` {self.pool.max_in_flight_per_replica}) within the"
                    f" request's `timeout_s` ({request.timeout_s} s); retry later, or raise the limit",
                    retryable=True,
                ) from exc

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
        key: str | None = None,
    ) -> _StreamResult:
        """One streamed call to `replica`; `key` (the request's identity) enables the
        poison-request rule (see the module docstring)."""
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
            await self._probe(replica, after="a call timed out")
            raise ProviderError(
                f"call to replica `{replica}` of pool `{self.pool.name}` timed out after"
                f" {timeout_s or 0:.1f} s; retry, or raise the request's `timeout_s`",
                retryable=True,
            ) from exc
        except ProviderError:
            raise
        except Exception as exc:
            error = _provider_error(exc, replica, self.pool.name)
            if error is None:
                raise
            if error.retryable:
                failure = await self._probe(replica, after=f"a call failed ({_short(error)})")
                if failure is not None and key is not None:
                    error = self._deaths.died(
                        key, error, replica=replica, pool=self.pool.name, health=failure
                    )
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
                if progress.response_id is None and getattr(chunk, "id", None):
                    progress.response_id = str(chunk.id)
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
        else:  # not expected with include_usage: bill the upper bound rather than lose the cost
            prompt_tokens = byte_bound(messages)
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

    def _http_client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._health_timeout_s)
        return self._http

    async def _health_failure(self, replica: str) -> str | None:
        """Why `replica`'s `/health` fails now, or `None` when it answers."""
        try:
            response = await self._http_client().get(f"{replica}/health", timeout=self._health_timeout_s)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            return describe_check_failure(exc, self._health_timeout_s)
        return None

    async def _probe(self, replica: str, *, after: str) -> str | None:
        """Check `replica` right after a failure; mark it down if `/health` fails.

        Returns:
            Why the check failed, or `None` when the replica answered.
        """
        failure = await self._health_failure(replica)
        if failure is not None:
            _log.warning("replica %s failed a probe after %s: marked down", replica, after)
            self._router.mark_down(replica, f"{after}, then its health check failed: {failure}")
        return failure


def _finish(reason: str | None) -> Literal["stop", "length", "other"]:
    if reason == "stop":
        return "stop"
    if reason == "length":
        return "length"
    return "other"


def _token_count(response: httpx.Response) -> int | None:
    """The ``count`` of a vLLM ``/tokenize`` answer, or `None` when it has none."""
    try:
        body = response.json()
    except ValueError:
        return None
    count = body.get("count") if isinstance(body, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None


def _short(error: ProviderError) -> str:
    return f"HTTP {error.status_code}" if error.status_code is not None else "connection failed"


def _provider_error(exc: Exception, replica: str, pool: str) -> ProviderError | None:
    """Map a litellm/openai/transport exception to `ProviderError`; `None`: not ours to map."""
    import openai  # installed with litellm; imported here because litellm is imported lazily

    # litellm wraps an error met while streaming (`MidStreamFallbackError`) and gives the
    # wrapper status 500 even when the connection merely dropped: judge the original.
    original = getattr(exc, "original_exception", None)
    if isinstance(original, Exception) and original is not exc:
        return _provider_error(original, replica, pool)
    where = f"replica `{replica}` of pool `{pool}`"
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return ProviderError(f"could not reach {where}, or the connection broke: {exc}", retryable=True)
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
