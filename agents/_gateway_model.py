"""`GatewayChatModel`: a LangChain chat model whose every call goes through `ctx.chat`.

It is the bridge that keeps LangGraph agents inside budgetflow's rules: the
model is bound to one attempt's `AttemptContext`, converts LangChain
messages to `ChatMessage`s and calls the attempt's gateway with the
attempt's span as parent, so the call is reserved, retried, recorded and
settled like any other, and shows up as a child in the calling tree.

The gateway carries text messages only, so tool calling (`bind_tools`) is not
supported yet, and the model is async only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages import (
    ChatMessage as LangChainChatMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import Field, PrivateAttr

from agents._common import cap_max_tokens
from orchestrator.agent import AttemptContext
from orchestrator.errors import WorkflowError
from orchestrator.model_client import ChatMessage, ChatResponse

__all__ = ["GatewayChatModel", "message_text"]

_Role = Literal["system", "user", "assistant"]
_ROLES: Mapping[str, _Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}
_CALL_OPTIONS = frozenset({"max_tokens", "temperature"})


class GatewayChatModel(BaseChatModel):
    """A chat model for one attempt; calls `ctx.chat` with `parent_call_id=ctx.span_id`."""

    max_tokens: int | None = None
    """Cap per call; the policy's per-call cap still applies (the smaller wins)."""
    temperature: float | None = None
    """Sampling temperature; `None` leaves the provider default."""
    cache: bool | None = Field(default=False, exclude=True)
    """Never answer from a LangChain cache: every call must pass through the ledger."""

    # A private attribute: the context holds protocol-typed fields pydantic cannot validate.
    _ctx: AttemptContext = PrivateAttr()
    _responses: list[ChatResponse] = PrivateAttr(default_factory=list)

    def __init__(self, *, ctx: AttemptContext, **data: Any) -> None:
        """Bind the model to the attempt `ctx`; other fields as keywords (`max_tokens`, ...).

        Raises:
            WorkflowError: a cache is asked for (a cached answer would skip the ledger).
        """
        if data.get("cache", False) is not False:
            raise WorkflowError(
                f"subtask `{ctx.subtask}`: the budgetflow chat model cannot use a LangChain cache"
                " (a cached answer would skip the ledger and the calling tree); leave `cache` unset"
            )
        super().__init__(**data)
        self._ctx = ctx

    @property
    def ctx(self) -> AttemptContext:
        """The attempt whose gateway, model and span every call uses."""
        return self._ctx

    @property
    def responses(self) -> tuple[ChatResponse, ...]:
        """Replies received so far, in completion order."""
        return tuple(self._responses)

    @property
    def _llm_type(self) -> str:
        return "budgetflow-gateway"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.ctx.model.name,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise WorkflowError(
            f"subtask `{self.ctx.subtask}`: a LangGraph node called the budgetflow chat model"
            " synchronously; make the node `async def` and use `await model.ainvoke(...)`, and"
            " run the graph with `ainvoke`/`astream` (the model gateway is async only)"
        )

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        unknown = sorted(set(kwargs) - _CALL_OPTIONS)
        if unknown:
            raise WorkflowError(
                f"subtask `{self.ctx.subtask}`: the budgetflow chat model got call options"
                f" {', '.join(f'`{k}`' for k in unknown)}, which the model gateway does not"
                " support; only `max_tokens` and `temperature` are passed on"
            )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        temperature = kwargs.get("temperature", self.temperature)
        chat_messages = [self._convert(message) for message in messages]
        response = await self.ctx.chat(
            chat_messages,
            max_tokens=cap_max_tokens(max_tokens, self.ctx),
            parent_call_id=self.ctx.span_id,
            temperature=temperature,
        )
        self._responses.append(response)
        text = _apply_stop(response.text, stop)
        usage = UsageMetadata(
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            total_tokens=response.input_tokens + response.output_tokens,
            input_token_details={"cache_read": response.cached_tokens},
        )
        message = AIMessage(
            content=text,
            usage_metadata=usage,
            response_metadata={
                "model_name": self.ctx.model.name,
                "finish_reason": response.finish_reason,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Not supported: the model gateway carries text messages only.

        Raises:
            WorkflowError: always.
        """
        raise WorkflowError(
            f"subtask `{self.ctx.subtask}`: `bind_tools` is not supported by the budgetflow chat"
            " model (the model gateway carries text messages only); describe the tools in the"
            " prompt and parse the reply, or call the tool in a graph node"
        )

    def _convert(self, message: BaseMessage) -> ChatMessage:
        content = message_text(message, subtask=self.ctx.subtask)
        if isinstance(message, SystemMessage):
            return {"role": "system", "content": content}
        if isinstance(message, HumanMessage):
            return {"role": "user", "content": content}
        if isinstance(message, AIMessage):
            return {"role": "assistant", "content": content}
        if isinstance(message, ToolMessage):
            # The gateway has no tool role: hand the result over as user text.
            name = message.name or message.tool_call_id
            return {"role": "user", "content": f"Result of tool `{name}`:\n{content}"}
        if isinstance(message, LangChainChatMessage) and message.role in _ROLES:
            return {"role": _ROLES[message.role], "content": content}
        raise WorkflowError(
            f"subtask `{self.ctx.subtask}`: the budgetflow chat model cannot send a"
            f" `{type(message).__name__}` (type `{message.type}`); use system, human, AI or"
            " tool messages"
        )


def message_text(message: BaseMessage, *, subtask: str | None = None) -> str:
    """The text of a message: its string content, or its text blocks joined.

    Raises:
        WorkflowError: the content has non-text blocks (images, audio, ...).
    """
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"])
        else:
            where = f"subtask `{subtask}`: " if subtask else ""
            raise WorkflowError(
                f"{where}a `{type(message).__name__}` has a `{block.get('type')}` content block;"
                " the model gateway carries text only, so send text content"
            )
    return "".join(parts)


def _apply_stop(text: str, stop: list[str] | None) -> str:
    """Cut `text` at the first stop sequence (the gateway has no `stop` option)."""
    if not stop:
        return text
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=len(text))
    return text[:cut]
