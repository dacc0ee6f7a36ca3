"""The production `ModelClient`: every call goes through litellm.

Real providers are called with streaming on, so that time to first token is
measured and a cancelled call knows how many tokens it had consumed.
Simulated models (`budgetflow-sim/...`) reach the `SimulatedBackend` through
a litellm custom provider, so a demo run takes the same path as a real one.
Pooled models (`ModelSpec.pool`) are handed to the vLLM pool client, which
picks a replica and calls it through litellm's `hosted_vllm` provider.

litellm is imported by `prepare()`, on a worker thread before a run starts, never at
import time and never on the event loop during a run.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from orchestrator._litellm import litellm_module, warm_call_path
from orchestrator.catalog import SIMULATED_PREFIX, Catalog, ModelSpec
from orchestrator.errors import ProviderError
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse, PromptCount
from orchestrator.simulated import SimulatedBackend
from orchestrator.tokens import byte_bound, count_locally, load_encodings

__all__ = ["LiteLLMClient", "PoolCaller"]

_SIM_PROVIDER = SIMULATED_PREFIX.rstrip("/")
_COUNT_ON_LOOP_MAX_CHARS = 20_000
"""Longer prompts are tokenized on a worker thread (a 60k-character prompt takes ~10 ms)."""


class PoolCaller(Protocol):
    """Calls one vLLM pool (see `orchestrator.pool.PooledLiteLLMCaller`)."""

    async def start(self) -> None: ...
    async def count_prompt_tokens(self, messages: Sequence[ChatMessage]) -> int: ...
    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse: ...
    async def aclose(self) -> None: ...


class _SimulatedProviderTable:
    """Calls in flight on the simulated provider, by token (litellm's provider map is global)."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[SimulatedBackend, ChatRequest, CallProgress]] = {}
        self.tokens = itertools.count()


_TABLE: _SimulatedProviderTable | None = None


def _register_simulated_provider() -> _SimulatedProviderTable:
    """Install the `budgetflow-sim` provider into litellm once per process."""
    global _TABLE
    if _TABLE is not None:
        return _TABLE
    litellm = litellm_module()
    from litellm.llms.custom_llm import CustomLLM
    from litellm.types.utils import ModelResponse

    table = _SimulatedProviderTable()

    class _SimulatedProvider(CustomLLM):
        async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
            metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
            token = metadata.get("budgetflow_call")
            if token not in table.calls:
                raise ProviderError(
                    "the simulated provider was called outside budgetflow's client", retryable=False
                )
            backend, request, progress = table.calls[token]
            assert request.sim_key is not None
            reply = await backend.generate(request, progress, subtask=request.sim_key)
            response: Any = kwargs.get("model_response") or ModelResponse()
            response.choices[0].message.content = reply.text
            response.choices[0].finish_reason = reply.finish_reason
            response.usage = litellm.Usage(
                prompt_tokens=reply.input_tokens,
                completion_tokens=reply.output_tokens,
                total_tokens=reply.input_tokens + reply.output_tokens,
            )
            response._hidden_params["budgetflow_sim"] = reply
            return response

    providers = [p for p in litellm.custom_provider_map if p.get("provider") != _SIM_PROVIDER]
    providers.append({"provider": _SIM_PROVIDER, "custom_handler": _SimulatedProvider()})
    setattr(litellm, "custom_provider_map", providers)  # noqa: B010 - litellm's documented hook
    _TABLE = table
    return table


class LiteLLMClient:
    """Sends every request through litellm (real providers, vLLM pools, the simulated backend)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        simulated: SimulatedBackend | None = None,
        pool_callers: Mapping[str, PoolCaller] | None = None,
        api_keys: dict[str, str] | None = None,
    ) -> None:
        """Make a client.

        Args:
            catalog: the models it may call.
            simulated: backend for `budgetflow-sim/...` models.
            pool_callers: per pool name, the caller that picks a replica and calls it.
            api_keys: per provider, an API key (otherwise litellm reads its usual variables).
        """
        self._catalog = catalog
        self._simulated = simulated
        self._pools = dict(pool_callers or {})
        self._api_keys = dict(api_keys or {})
        self._prepared = False

    async def prepare(self) -> None:
        """Import litellm, load tokenizers and start pool health checks, off the event loop.

        litellm's import alone takes seconds; done during a run it would stall the loop
        and with it every deadline. Idempotent.
        """
        if self._prepared:
            return
        simulated = any(spec.simulated for spec in self._catalog.models.values())

        def load() -> None:
            warm_call_path(
                {spec.litellm_model for spec in self._catalog.models.values() if not spec.simulated}
                | ({f"hosted_vllm/{p.served_model}" for p in self._catalog.pools.values()})
            )
            if simulated:
                _register_simulated_provider()
            load_encodings(list(self._catalog.models.values()))

        await asyncio.to_thread(load)
        for caller in self._pools.values():
            await caller.start()
        self._prepared = True

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        """Exact for OpenAI, simulated and vLLM models, a provable upper bound otherwise.

        A pool that cannot be asked (no healthy replica) falls back to the bound: the
        call itself will then wait for, or fail on, the pool anyway.
        """
        if model.pool is not None and model.pool in self._pools:
            try:
                tokens = await self._pools[model.pool].count_prompt_tokens(messages)
            except ProviderError:
                return PromptCount(tokens=byte_bound(messages), exact=False, method="bytes")
            return PromptCount(tokens=tokens, exact=True, method="vllm")
        if sum(len(m["content"]) for m in messages) > _COUNT_ON_LOOP_MAX_CHARS:
            return await asyncio.to_thread(count_locally, model, messages)
        return count_locally(model, messages)

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        """One call through litellm."""
        spec = request.model
        if spec.pool is not None:
            caller = self._pools.get(spec.pool)
            if caller is None:
                raise ProviderError(
                    f"model `{spec.name}` is served by pool `{spec.pool}`, but no pool client was"
                    " started for it",
                    retryable=False,
                )
            return await caller.complete(request, progress)
        if spec.simulated:
            return await self._complete_simulated(request, progress)
        return await self._complete_streaming(request, progress)

    async def _complete_simulated(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        if self._simulated is None:
            raise ProviderError(
                f"model `{request.model.name}` is simulated but this client has no simulated backend",
                retryable=False,
            )
        table = _register_simulated_provider()
        litellm = litellm_module()
        token = f"c{next(table.tokens)}"
        table.calls[token] = (self._simulated, request, progress)
        try:
            response = await litellm.acompletion(
                model=request.model.litellm_model,
                messages=list(request.messages),
                max_tokens=request.max_tokens,
                metadata={"budgetflow_call": token},
                num_retries=0,
            )
        except ProviderError:
            raise
        except Exception as exc:
            raise _as_provider_error(exc, request) from exc
        finally:
            table.calls.pop(token, None)
        reply: ChatResponse = response._hidden_params["budgetflow_sim"]
        return reply

    async def _complete_streaming(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        litellm = litellm_module()
        spec = request.model
        loop = asyncio.get_running_loop()
        start = loop.time()
        kwargs: dict[str, Any] = {
            "model": spec.litellm_model,
            "messages": list(request.messages),
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            "num_retries": 0,
        }
        if request.timeout_s is not None:
            kwargs["timeout"] = request.timeout_s
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if spec.api_base:
            kwargs["api_base"] = spec.api_base
        if spec.provider in self._api_keys:
            kwargs["api_key"] = self._api_keys[spec.provider]
        parts: list[str] = []
        usage: Any = None
        finish: str | None = None
        answered_by: str | None = None
        stream: Any = None
        try:
            stream = await litellm.acompletion(**kwargs)
            async for chunk in stream:
                if progress.response_id is None and getattr(chunk, "id", None):
                    progress.response_id = str(chunk.id)
                if answered_by is None and getattr(chunk, "model", None):
                    answered_by = str(chunk.model)
                if getattr(chunk, "usage", None):
                    usage = chunk.usage
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = getattr(choice.delta, "content", None)
                if delta:
                    if progress.first_token_s is None:
                        progress.first_token_s = loop.time()
                    parts.append(delta)
                    progress.output_tokens += 1
                if choice.finish_reason:
                    finish = choice.finish_reason
        except ProviderError:
            raise
        except asyncio.CancelledError:
            if stream is not None and hasattr(stream, "aclose"):
                await stream.aclose()
            raise
        except Exception as exc:
            raise _as_provider_error(exc, request) from exc
        text = "".join(parts)
        if usage is None:
            raise ProviderError(
                f"`{spec.litellm_model}` returned no usage; cannot account its cost", retryable=True
            )
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0) if details else 0
        end = loop.time()
        return ChatResponse(
            text=text,
            input_tokens=int(usage.prompt_tokens),
            output_tokens=int(usage.completion_tokens),
            cached_tokens=cached,
            finish_reason="length" if finish == "length" else "stop" if finish == "stop" else "other",
            latency_s=end - start,
            ttft_s=None if progress.first_token_s is None else progress.first_token_s - start,
            provider=spec.provider,
            response_id=progress.response_id,
            model=answered_by,
        )

    async def aclose(self) -> None:
        """Close pool callers."""
        for caller in self._pools.values():
            await caller.aclose()


def _as_provider_error(exc: Exception, request: ChatRequest) -> ProviderError:
    """Map litellm's exceptions to `ProviderError` with the right `retryable` flag."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    retryable_names = {
        "Timeout",
        "APIConnectionError",
        "RateLimitError",
        "ServiceUnavailableError",
        "InternalServerError",
        "APIError",
    }
    retryable = (isinstance(status, int) and (status == 429 or status >= 500)) or name in retryable_names
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        retryable = True
    return ProviderError(
        f"`{request.model.litellm_model}` failed: {name}: {exc}",
        retryable=retryable,
        status_code=status if isinstance(status, int) else None,
    )
