"""What an agent and a check are, as the executor sees them.

An `Agent` makes one attempt at a subtask: it reads the run inputs and its
parents' outputs from an `AttemptContext` and makes model calls through
`AttemptContext.chat`, the one gateway through which every call is reserved
in the ledger, retried, recorded and settled. A `Check` judges the output.
Both are async.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from orchestrator.catalog import ModelSpec
from orchestrator.model_client import ChatMessage, ChatResponse

__all__ = [
    "Agent",
    "AttemptContext",
    "AttemptOutput",
    "ChatGateway",
    "Check",
    "CheckResult",
    "PromptPreview",
    "template_values",
]


@dataclass(frozen=True, kw_only=True)
class AttemptOutput:
    """What one attempt produced."""

    value: Any
    """The output handed to children (a string for LLM agents, anything for functions)."""
    text: str
    """Text form of the output, for templates, previews and checks."""
    simulated_success: bool | None = None
    """Set when the simulated backend produced the output: the drawn outcome, used instead of the check."""


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """A check's verdict on one attempt."""

    passed: bool
    """Whether the attempt succeeded."""
    detail: str = ""
    """Why, in a sentence (shown in the CLI and stored)."""


class ChatGateway(Protocol):
    """Makes one budgeted, recorded model call for the current attempt."""

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
        """Call the attempt's model (or `model`); raise `ProviderError` after retries fail.

        `seed` is sent to the provider only when given (some servers fail on seeded requests).
        """
        ...


@dataclass(frozen=True, kw_only=True)
class AttemptContext:
    """Everything an agent may use during one attempt."""

    run_id: str
    """The run."""
    subtask: str
    """The subtask being attempted."""
    attempt_id: str
    """Unique id of this attempt."""
    model: ModelSpec
    """Model chosen by the policy."""
    max_tokens: int
    """Per-call output cap chosen by the policy."""
    inputs: Mapping[str, Any]
    """The run's inputs."""
    outputs: Mapping[str, Any]
    """Outputs of the subtask's completed ancestors, by subtask name."""
    texts: Mapping[str, str]
    """Text form of those outputs."""
    chat: ChatGateway
    """The one way to call a model."""
    seed: int
    """Seed for anything random the agent does."""
    span_id: str
    """Call-tree node id of this attempt's agent span (parent of its calls)."""

    def template_values(self) -> Mapping[str, Any]:
        """Ancestors' texts over the run inputs, for `str.format` prompt templates (a view, not a copy)."""
        return template_values(self.texts, self.inputs)


def template_values(texts: Mapping[str, str], inputs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Ancestors' texts over the run inputs (a view, not a copy): what prompt templates read."""
    return _Layered(texts, inputs)


class _Layered(Mapping[str, Any]):
    """`first` over `second`, read-only, without copying either."""

    def __init__(self, first: Mapping[str, Any], second: Mapping[str, Any]) -> None:
        self._first = first
        self._second = second

    def __getitem__(self, key: str) -> Any:
        if key in self._first:
            return self._first[key]
        return self._second[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._first
        yield from (k for k in self._second if k not in self._first)

    def __len__(self) -> int:
        return sum(1 for _ in self)


class Agent(Protocol):
    """Makes one attempt at a subtask.

    An agent that always calls a model sets the class attribute `needs_model = True`, so
    that a subtask using it must list models; without it a subtask may list none (plain
    code, see `orchestrator.catalog.NO_MODEL`).
    """

    def template_variables(self) -> frozenset[str]:
        """Names this agent's templates read (validated against inputs and parents)."""
        ...

    async def attempt(self, ctx: AttemptContext) -> AttemptOutput:
        """Produce an output; may call `ctx.chat` any number of times."""
        ...


@runtime_checkable
class PromptPreview(Protocol):
    """An agent that can say, before an attempt, which messages its (first) call will send.

    The executor counts their tokens when the subtask becomes ready, so that the
    planner sees the real prompt size and every sample's hold covers it.
    """

    def preview_messages(self, values: Mapping[str, Any], *, subtask: str) -> list[ChatMessage]:
        """The messages an attempt with these template values sends first.

        Raises:
            WorkflowError: a template cannot be rendered with `values`.
        """
        ...


class Check(Protocol):
    """Judges whether an attempt succeeded."""

    async def __call__(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        """The verdict."""
        ...
