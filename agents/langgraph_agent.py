"""`LangGraphAgent`: a LangGraph graph as a subtask, with every model call budgeted.

LangGraph is the agent runtime inside one attempt; budgetflow stays the one
path for model calls. The user builds the graph around a chat model we hand
in, a `GatewayChatModel` bound to the attempt, whose calls go through
`AttemptContext.chat`: they run on the model the policy chose, are reserved
and settled in the ledger, and are recorded as children of the attempt's
span in the calling tree.

```python
def build(model: BaseChatModel) -> CompiledStateGraph[Any, Any, Any, Any]:
    async def draft(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft)
    graph.add_edge(START, "draft")
    return graph.compile()

wf.subtask("answer", LangGraphAgent(build, prompt="Answer: {question}"), models=["small"])
```

Graph nodes must be `async def` and call `await model.ainvoke(...)`: the
gateway is async, and a sync call raises `WorkflowError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.pregel import Pregel

from agents._gateway_model import GatewayChatModel, message_text
from agents._template import parse_template, render_template
from orchestrator.agent import AttemptContext, AttemptOutput
from orchestrator.errors import WorkflowError

__all__ = ["GatewayChatModel", "LangGraphAgent"]

GraphFactory = Callable[[BaseChatModel], Pregel[Any, Any, Any, Any]]
"""Builds (and compiles) the graph around the chat model it is given."""


class LangGraphAgent:
    """Run a compiled LangGraph graph as one attempt; its model calls go through the gateway."""

    needs_model = True
    """Its subtask must list the models its graph's chat model may run on."""

    def __init__(
        self,
        graph_factory: GraphFactory,
        *,
        prompt: str | None = None,
        system: str | None = None,
        input_fn: Callable[[AttemptContext], Mapping[str, Any]] | None = None,
        output_fn: Callable[[Any], object] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        recursion_limit: int | None = None,
    ) -> None:
        """Build the agent; templates are checked now, the graph per attempt.

        Args:
            graph_factory: called once per attempt with that attempt's
                `GatewayChatModel`; returns the compiled graph (a `StateGraph`
                compiled, or a functional-API `@entrypoint`).
            prompt: user message template for the default input; its variables are
                this agent's template variables even when `input_fn` is given.
            system: optional system message template for the default input.
            input_fn: builds the graph input from the context; default
                ``{"messages": [SystemMessage(system), HumanMessage(prompt)]}``
                with both templates rendered.
            output_fn: turns the final state into the subtask's output; default:
                the text of the last message in ``state["messages"]``.
            max_tokens: cap per inner call (the policy's cap still applies).
            temperature: sampling temperature for inner calls.
            recursion_limit: LangGraph's step limit; `None` keeps LangGraph's default.

        Raises:
            WorkflowError: a template is malformed, an argument is out of range, or
                neither `prompt` nor `input_fn` says what the graph receives.
        """
        if not callable(graph_factory):
            raise WorkflowError(
                "`LangGraphAgent` needs a graph factory `(model) -> compiled graph`, got"
                f" {type(graph_factory).__name__}; pass a function that builds the graph"
                " around the model it receives and returns `graph.compile()`"
            )
        if prompt is None and input_fn is None:
            raise WorkflowError(
                "`LangGraphAgent` needs `prompt=` (a template sent as the user message) or"
                " `input_fn=` (a function `(ctx) -> graph input`); give one of them"
            )
        variables: frozenset[str] = frozenset()
        if prompt is not None:
            variables |= parse_template(prompt, where="`LangGraphAgent` prompt")
        if system is not None:
            variables |= parse_template(system, where="`LangGraphAgent` system")
        if max_tokens is not None and max_tokens < 1:
            raise WorkflowError(f"`LangGraphAgent`: max_tokens must be >= 1, got {max_tokens}")
        if temperature is not None and temperature < 0:
            raise WorkflowError(f"`LangGraphAgent`: temperature must be >= 0, got {temperature}")
        if recursion_limit is not None and recursion_limit < 1:
            raise WorkflowError(f"`LangGraphAgent`: recursion_limit must be >= 1, got {recursion_limit}")
        self.graph_factory = graph_factory
        self.prompt = prompt
        self.system = system
        self.input_fn = input_fn
        self.output_fn = output_fn
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.recursion_limit = recursion_limit
        self._variables = variables

    def template_variables(self) -> frozenset[str]:
        """Names the prompt and system templates read."""
        return self._variables

    def chat_model(self, ctx: AttemptContext) -> GatewayChatModel:
        """The chat model handed to `graph_factory` for the attempt `ctx`."""
        return GatewayChatModel(ctx=ctx, max_tokens=self.max_tokens, temperature=self.temperature)

    async def attempt(self, ctx: AttemptContext) -> AttemptOutput:
        """Build the graph around a gateway model, run it, and extract the output.

        The simulated verdict, when the backend is simulated, is the one drawn for
        the last inner call to finish: the final answer stands for the attempt.

        Raises:
            WorkflowError: the factory returned no graph, a template variable has no
                value, or the default `output_fn` finds no messages.
        """
        model = self.chat_model(ctx)
        graph = self.graph_factory(model)
        if not hasattr(graph, "ainvoke"):
            raise WorkflowError(
                f"subtask `{ctx.subtask}`: the `LangGraphAgent` graph factory returned"
                f" {type(graph).__name__}, not a compiled graph; return `graph.compile()`"
            )
        config: RunnableConfig = {
            "run_name": ctx.subtask,
            "configurable": {"thread_id": ctx.attempt_id},
            "metadata": {"run_id": ctx.run_id, "attempt_id": ctx.attempt_id},
        }
        if self.recursion_limit is not None:
            config["recursion_limit"] = self.recursion_limit
        graph_input = self.input_fn(ctx) if self.input_fn is not None else self._input(ctx, self.prompt or "")
        state = await graph.ainvoke(graph_input, config)
        value = self.output_fn(state) if self.output_fn is not None else _last_message(state, ctx)
        responses = model.responses
        return AttemptOutput(
            value=value,
            text=value if isinstance(value, str) else str(value),
            simulated_success=responses[-1].simulated_success if responses else None,
        )

    def _input(self, ctx: AttemptContext, prompt_template: str) -> dict[str, Any]:
        values = ctx.template_values()
        messages: list[BaseMessage] = []
        if self.system is not None:
            system = render_template(
                self.system, values, where="`LangGraphAgent` system", subtask=ctx.subtask
            )
            messages.append(SystemMessage(content=system))
        prompt = render_template(
            prompt_template, values, where="`LangGraphAgent` prompt", subtask=ctx.subtask
        )
        messages.append(HumanMessage(content=prompt))
        return {"messages": messages}

    def __repr__(self) -> str:
        name = getattr(self.graph_factory, "__qualname__", type(self.graph_factory).__name__)
        return f"LangGraphAgent({name})"


def _last_message(state: object, ctx: AttemptContext) -> str:
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], BaseMessage):
        raise WorkflowError(
            f"subtask `{ctx.subtask}`: the LangGraph graph's final state has no `messages` list"
            f" to take the output from (got {type(state).__name__}); pass"
            " `output_fn=lambda state: ...` to `LangGraphAgent`"
        )
    return message_text(messages[-1])
