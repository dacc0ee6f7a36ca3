"""The seam between budgetflow and model providers.

Everything above this module speaks `ChatRequest` / `ChatResponse`; provider
wire details (litellm, vLLM replicas, the simulated backend) stay below it.
A `ModelClient` raises `ProviderError` for failed calls, with `retryable` set
for timeouts, 429 and 5xx; the executor's call gateway retries those.

`CallProgress` is how a cancelled call still reports what it consumed: the
client updates it as tokens stream in, and the gateway settles a cancelled
call from it (or from the full reservation when nothing is known).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict

from orchestrator.catalog import ModelSpec

__all__ = ["CallProgress", "ChatMessage", "ChatRequest", "ChatResponse", "ModelClient", "PromptCount"]


class ChatMessage(TypedDict):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(kw_only=True)
class CallProgress:
    """Mutable progress of one call, updated by the client while it runs."""

    input_tokens: int | None = None
    """Prompt tokens, once known."""
    output_tokens: int = 0
    """Output tokens received so far."""
    first_token_s: float | None = None
    """Loop time of the first output token."""
    replica: str | None = None
    """Replica chosen for the call, when pooled."""
    response_id: str | None = None
    """The provider's id of the reply, once its first chunk arrived."""


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One chat completion request."""

    model: ModelSpec
    """The catalog entry to call."""
    messages: tuple[ChatMessage, ...]
    """The conversation."""
    max_tokens: int
    """Hard cap on output tokens (it bounds the call's cost)."""
    timeout_s: float | None = None
    """Give up after this long; `None` means no limit."""
    temperature: float | None = None
    """Sampling temperature; `None` leaves the provider default."""
    seed: int | None = None
    """Sampling seed passed to the provider; `None` (the default) sends none."""
    sim_key: str | None = None
    """For the simulated backend: which subtask's estimates to draw from."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Free-form tags (run, subtask, attempt ids) for logs."""


@dataclass(frozen=True, kw_only=True)
class ChatResponse:
    """One finished chat completion."""

    text: str
    """The assistant's reply."""
    input_tokens: int
    """Prompt tokens billed."""
    output_tokens: int
    """Output tokens billed."""
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache."""
    finish_reason: Literal["stop", "length", "other"] = "stop"
    """`length` when max_tokens cut the reply."""
    latency_s: float = 0.0
    """Wall time of the call."""
    ttft_s: float | None = None
    """Time to first token."""
    provider: str = ""
    """Provider part of the model string."""
    replica: str | None = None
    """Replica that served the call, for pooled models."""
    simulated: bool = False
    """Whether the simulated backend produced this reply."""
    simulated_success: bool | None = None
    """For simulated replies: the drawn outcome that stands in for the check."""
    response_id: str | None = None
    """The provider's id of the reply (e.g. `chatcmpl-...`)."""
    model: str | None = None
    """The model that answered, as the provider names it (e.g. `gpt-4o-mini-2024-07-18`);
    `None` when it did not say."""


@dataclass(frozen=True, kw_only=True)
class PromptCount:
    """The prompt tokens a call will be billed for, or an upper bound on them."""

    tokens: int
    """Token count (exact, or an upper bound when `exact` is false)."""
    exact: bool
    """Whether `tokens` is the exact count the provider bills."""
    method: Literal["tiktoken", "vllm", "bytes"]
    """How it was counted (see `orchestrator.tokens`)."""


class ModelClient(Protocol):
    """Sends chat requests to models. All implementations are async."""

    async def prepare(self) -> None:
        """Do the slow one-time work (imports, tokenizers, connections) before a run's clock starts.

        Nothing slow may happen on the event loop once a run is under way: a blocked loop
        delays the deadline's cancellation. Idempotent.
        """
        ...

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        """The prompt tokens `model` will bill for `messages`: exact, or a provable upper bound."""
        ...

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        """Run one call; raise `ProviderError` on failure. Update `progress` as tokens arrive."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
