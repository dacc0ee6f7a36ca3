"""Fixtures for the agents tests: a scripted chat gateway and attempt contexts.

`ScriptedGateway` is the one test gateway for these tests: it stands where the
executor's gateway stands (`AttemptContext.chat`), answers from a script and
records every call, so tests can assert what an agent or check sent and under
which parent span.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import pytest

from orchestrator.agent import AttemptContext
from orchestrator.catalog import ModelSpec
from orchestrator.model_client import ChatMessage, ChatResponse

Reply = str | Callable[[list[ChatMessage]], str]


@dataclass(frozen=True, kw_only=True)
class RecordedCall:
    """One call the gateway received."""

    messages: list[ChatMessage]
    max_tokens: int | None
    model: str | None
    parent_call_id: str | None
    temperature: float | None


@dataclass(kw_only=True)
class ScriptedGateway:
    """A `ChatGateway` answering the i-th call with `replies[i]` (the last one repeats)."""

    replies: Sequence[Reply]
    simulated_success: bool | None = None
    calls: list[RecordedCall] = field(default_factory=list)

    async def __call__(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int | None = None,
        model: str | None = None,
        parent_call_id: str | None = None,
        temperature: float | None = None,
        seed: int | None = None,
    ) -> ChatResponse:
        """Record the call and answer from the script."""
        reply = self.replies[min(len(self.calls), len(self.replies) - 1)]
        self.calls.append(
            RecordedCall(
                messages=list(messages),
                max_tokens=max_tokens,
                model=model,
                parent_call_id=parent_call_id,
                temperature=temperature,
            )
        )
        text = reply if isinstance(reply, str) else reply(list(messages))
        prompt_words = sum(len(m["content"].split()) for m in messages)
        return ChatResponse(
            text=text,
            input_tokens=prompt_words,
            output_tokens=len(text.split()),
            cached_tokens=1,
            simulated=self.simulated_success is not None,
            simulated_success=self.simulated_success,
        )


class MakeGateway(Protocol):
    def __call__(self, *replies: Reply, simulated_success: bool | None = None) -> ScriptedGateway: ...


class MakeCtx(Protocol):
    def __call__(
        self,
        gateway: ScriptedGateway | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        texts: Mapping[str, str] | None = None,
        subtask: str = "sub",
        max_tokens: int = 256,
    ) -> AttemptContext: ...


SPAN_ID = "span-attempt-1"
"""The `span_id` of every context `make_ctx` builds."""


@pytest.fixture
def span_id() -> str:
    """The attempt span id used by `make_ctx`."""
    return SPAN_ID


@pytest.fixture
def model_spec() -> ModelSpec:
    """A priced simulated model."""
    return ModelSpec(
        name="small",
        litellm_model="budgetflow-sim/small",
        input_price_per_mtok=Decimal("0.15"),
        output_price_per_mtok=Decimal("0.60"),
    )


@pytest.fixture
def make_gateway() -> MakeGateway:
    """Factory: `make_gateway("first reply", "second reply", simulated_success=None)`."""

    def make(*replies: Reply, simulated_success: bool | None = None) -> ScriptedGateway:
        return ScriptedGateway(replies=replies or ("ok",), simulated_success=simulated_success)

    return make


@pytest.fixture
def make_ctx(model_spec: ModelSpec, make_gateway: MakeGateway) -> MakeCtx:
    """Factory for an `AttemptContext` whose `chat` is a `ScriptedGateway`."""

    def make(
        gateway: ScriptedGateway | None = None,
        *,
        inputs: Mapping[str, Any] | None = None,
        texts: Mapping[str, str] | None = None,
        subtask: str = "sub",
        max_tokens: int = 256,
    ) -> AttemptContext:
        texts = dict(texts or {})
        return AttemptContext(
            run_id="run-1",
            subtask=subtask,
            attempt_id="attempt-1",
            model=model_spec,
            max_tokens=max_tokens,
            inputs=dict(inputs or {}),
            outputs=dict(texts),
            texts=texts,
            chat=gateway if gateway is not None else make_gateway(),
            seed=7,
            span_id=SPAN_ID,
        )

    return make
