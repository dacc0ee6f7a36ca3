"""An instant `ModelClient` for overhead benchmarks: every call answers at once, and succeeds.

With a backend that takes no time, the wall time of a run is the
orchestrator's own cost. `InstantClient` answers with fixed token counts and
`simulated_success=True` (so the attempt passes without a check), without
suspending, unless a *gate* is set: then every call waits until `gate` calls
have started (after `pass_first` calls that answer at once), so that they
really are in flight together, and the moment the last one arrives is
reported to `on_gate` (where the benchmark measures memory).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal

from orchestrator.catalog import Catalog, ModelSpec
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse, PromptCount

__all__ = ["InstantClient", "instant_catalog", "instant_request"]


class InstantClient:
    """A `ModelClient` that answers every request immediately (optionally after a gate opens)."""

    def __init__(
        self,
        *,
        input_tokens: int = 100,
        output_tokens: int = 20,
        gate: int | None = None,
        pass_first: int = 0,
        on_gate: Callable[[], None] | None = None,
    ) -> None:
        """Make a client.

        Args:
            input_tokens: prompt tokens billed for every call.
            output_tokens: output tokens billed for every call.
            gate: when set, each call waits until this many calls have started (then all
                answer); `None` answers at once without yielding to the event loop.
            pass_first: with a gate, this many first calls answer at once and are not counted
                (e.g. the root of a fan-out, whose children are the calls to hold).
            on_gate: called once, synchronously, when the `gate`-th call starts (all calls
                are in flight at that moment).
        """
        if gate is not None and gate < 1:
            raise ValueError(f"gate must be >= 1, got {gate}")
        if pass_first < 0:
            raise ValueError(f"pass_first must be >= 0, got {pass_first}")
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.calls = 0
        """Calls started so far."""
        self._gate = gate
        self._pass_first = pass_first
        self._on_gate = on_gate
        self._open: asyncio.Event | None = None

    async def prepare(self) -> None:
        """Nothing to load."""

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        """Exactly what every call bills."""
        return PromptCount(tokens=self.input_tokens, exact=True, method="tiktoken")

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        """Answer `request` with the fixed token counts (after the gate opens, if any)."""
        self.calls += 1
        progress.input_tokens = self.input_tokens
        if self._gate is not None and self.calls > self._pass_first:
            if self._open is None:
                self._open = asyncio.Event()
            if self.calls - self._pass_first == self._gate:
                if self._on_gate is not None:
                    self._on_gate()
                self._open.set()
            else:
                await self._open.wait()
        progress.output_tokens = self.output_tokens
        return ChatResponse(
            text="ok",
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            provider="instant",
            simulated_success=True,
        )

    async def aclose(self) -> None:
        """Nothing to release."""


def instant_catalog() -> Catalog:
    """Two priced models served by `InstantClient` (not simulated: no simulated backend involved)."""
    return Catalog.of(
        ModelSpec(
            name="cheap",
            litellm_model="instant/cheap",
            input_price_per_mtok=Decimal("0.15"),
            output_price_per_mtok=Decimal("0.60"),
            tier="cheap",
        ),
        ModelSpec(
            name="strong",
            litellm_model="instant/strong",
            input_price_per_mtok=Decimal("2.50"),
            output_price_per_mtok=Decimal("10.00"),
            tier="strong",
        ),
    )


def instant_request(catalog: Catalog, model: str = "cheap") -> ChatRequest:
    """A small request, for callers (the LangGraph reference) that bypass the gateway."""
    message: ChatMessage = {"role": "user", "content": "Do the step."}
    return ChatRequest(model=catalog.get(model), messages=(message,), max_tokens=64)
