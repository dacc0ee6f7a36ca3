"""`LangGraphAgent` and `GatewayChatModel` with real LangGraph graphs: every call via the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agents import GatewayChatModel, LangGraphAgent
from orchestrator.agent import AttemptContext
from orchestrator.errors import WorkflowError

if TYPE_CHECKING:
    from tests.agents.conftest import MakeCtx, MakeGateway

Graph = CompiledStateGraph[Any, Any, Any, Any]


def draft_and_refine(model: BaseChatModel) -> Graph:
    """Two nodes, two model calls: draft an answer, then refine it."""

    async def draft(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    async def refine(state: MessagesState) -> dict[str, list[BaseMessage]]:
        request = HumanMessage(content="Make it shorter.")
        reply = await model.ainvoke([*state["messages"], request])
        return {"messages": [request, reply]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft)
    graph.add_node("refine", refine)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "refine")
    graph.add_edge("refine", END)
    return graph.compile()


def sync_node_graph(model: BaseChatModel) -> Graph:
    def answer(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    return graph.compile()


class QA(TypedDict, total=False):
    question: str
    answer: str
    tokens: int


def qa_graph(model: BaseChatModel) -> Graph:
    async def answer(state: QA) -> QA:
        reply = await model.ainvoke([("user", state["question"])])
        assert isinstance(reply, AIMessage) and reply.usage_metadata is not None
        return {"answer": reply.text, "tokens": reply.usage_metadata["output_tokens"]}

    graph = StateGraph(QA)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    return graph.compile(checkpointer=InMemorySaver())


def qa_input(ctx: AttemptContext) -> dict[str, Any]:
    return {"question": f"Q: {ctx.inputs['question']}"}


def qa_output(state: QA) -> str:
    return f"{state['answer']} ({state['tokens']} tokens)"


def not_a_graph(model: BaseChatModel) -> Graph:
    return "graph"  # type: ignore[return-value]


async def test_inner_calls_go_through_the_gateway_as_children_of_the_span(
    make_ctx: MakeCtx, make_gateway: MakeGateway, span_id: str
) -> None:
    gateway = make_gateway("A long answer.", "Short.")
    agent = LangGraphAgent(draft_and_refine, prompt="Answer: {question}", system="Be {tone}.", max_tokens=64)
    assert agent.template_variables() == frozenset({"question", "tone"})
    ctx = make_ctx(gateway, inputs={"question": "why?", "tone": "brief"}, max_tokens=32)

    output = await agent.attempt(ctx)

    assert (output.value, output.text, output.simulated_success) == ("Short.", "Short.", None)
    assert [c.parent_call_id for c in gateway.calls] == [span_id, span_id]
    assert [c.max_tokens for c in gateway.calls] == [32, 32]  # the policy's cap wins
    assert gateway.calls[0].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Answer: why?"},
    ]
    assert gateway.calls[1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Answer: why?"},
        {"role": "assistant", "content": "A long answer."},
        {"role": "user", "content": "Make it shorter."},
    ]


@pytest.mark.parametrize("verdict", [True, False])
async def test_simulated_verdict_comes_from_the_last_call(
    make_ctx: MakeCtx, make_gateway: MakeGateway, verdict: bool
) -> None:
    gateway = make_gateway("one", "two", simulated_success=verdict)
    output = await LangGraphAgent(draft_and_refine, prompt="hi").attempt(make_ctx(gateway))
    assert output.simulated_success is verdict


async def test_custom_input_and_output_with_a_checkpointer(
    make_ctx: MakeCtx, make_gateway: MakeGateway
) -> None:
    gateway = make_gateway("forty two")
    agent = LangGraphAgent(qa_graph, input_fn=qa_input, output_fn=qa_output)
    assert agent.template_variables() == frozenset()
    output = await agent.attempt(make_ctx(gateway, inputs={"question": "meaning?"}))
    assert output.value == "forty two (2 tokens)"
    assert gateway.calls[0].messages == [{"role": "user", "content": "Q: meaning?"}]


async def test_sync_node_gets_a_clear_error(make_ctx: MakeCtx, make_gateway: MakeGateway) -> None:
    gateway = make_gateway()
    with pytest.raises(WorkflowError, match=r"make the node `async def`.*await model\.ainvoke"):
        await LangGraphAgent(sync_node_graph, prompt="hi").attempt(make_ctx(gateway))
    assert gateway.calls == []


async def test_output_fn_needed_when_state_has_no_messages(
    make_ctx: MakeCtx, make_gateway: MakeGateway
) -> None:
    agent = LangGraphAgent(qa_graph, input_fn=qa_input)
    with pytest.raises(WorkflowError, match="pass `output_fn="):
        await agent.attempt(make_ctx(make_gateway(), inputs={"question": "q"}))


async def test_factory_must_return_a_graph(make_ctx: MakeCtx) -> None:
    with pytest.raises(WorkflowError, match=r"returned str, not a compiled graph"):
        await LangGraphAgent(not_a_graph, prompt="hi").attempt(make_ctx())


async def test_missing_template_variable_names_it(make_ctx: MakeCtx) -> None:
    agent = LangGraphAgent(draft_and_refine, prompt="{question}")
    with pytest.raises(WorkflowError, match=r"subtask `answer`.*`\{question\}`"):
        await agent.attempt(make_ctx(subtask="answer"))


def test_needs_prompt_or_input_fn() -> None:
    with pytest.raises(WorkflowError, match="needs `prompt=`"):
        LangGraphAgent(draft_and_refine)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"prompt": "{0}"}, "`LangGraphAgent` prompt"),
        ({"prompt": "ok", "system": "{a.b}"}, "`LangGraphAgent` system"),
        ({"prompt": "ok", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "ok", "recursion_limit": 0}, "recursion_limit"),
    ],
)
def test_bad_arguments_rejected(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(WorkflowError, match=fragment):
        LangGraphAgent(draft_and_refine, **kwargs)


# --- GatewayChatModel on its own ----------------------------------------------


async def test_model_converts_messages_and_reports_usage(
    make_ctx: MakeCtx, make_gateway: MakeGateway, span_id: str
) -> None:
    gateway = make_gateway("done END ignored")
    model = GatewayChatModel(ctx=make_ctx(gateway), temperature=0.5)
    reply = await model.ainvoke(
        [
            SystemMessage(content="sys"),
            HumanMessage(content=[{"type": "text", "text": "a"}, "b"]),
            AIMessage(content="c"),
            ToolMessage(content="42", tool_call_id="call-1", name="calc"),
            ChatMessage(role="developer", content="dev"),
        ],
        stop=["END"],
    )
    assert isinstance(reply, AIMessage)
    assert reply.content == "done "
    assert reply.usage_metadata == {
        "input_tokens": 9,
        "output_tokens": 3,
        "total_tokens": 12,
        "input_token_details": {"cache_read": 1},
    }
    assert reply.response_metadata["model_name"] == "small"
    [call] = gateway.calls
    assert call.messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "c"},
        {"role": "user", "content": "Result of tool `calc`:\n42"},
        {"role": "system", "content": "dev"},
    ]
    assert (call.parent_call_id, call.temperature) == (span_id, 0.5)
    assert [r.text for r in model.responses] == ["done END ignored"]


async def test_model_call_options(make_ctx: MakeCtx, make_gateway: MakeGateway) -> None:
    gateway = make_gateway()
    model = GatewayChatModel(ctx=make_ctx(gateway, max_tokens=100))
    await model.bind(max_tokens=10, temperature=0.0).ainvoke("hi")
    assert (gateway.calls[0].max_tokens, gateway.calls[0].temperature) == (10, 0.0)
    with pytest.raises(WorkflowError, match="`top_p`"):
        await model.bind(top_p=0.5).ainvoke("hi")


async def test_model_rejects_non_text_content(make_ctx: MakeCtx) -> None:
    model = GatewayChatModel(ctx=make_ctx())
    image = {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
    with pytest.raises(WorkflowError, match="`image_url` content block"):
        await model.ainvoke([HumanMessage(content=[image])])


def test_model_has_no_tool_calling(make_ctx: MakeCtx) -> None:
    with pytest.raises(WorkflowError, match="`bind_tools` is not supported"):
        GatewayChatModel(ctx=make_ctx()).bind_tools([])


async def test_model_never_answers_from_a_langchain_cache(
    make_ctx: MakeCtx, make_gateway: MakeGateway
) -> None:
    gateway = make_gateway("same")
    model = GatewayChatModel(ctx=make_ctx(gateway))
    set_llm_cache(InMemoryCache())
    try:
        await model.ainvoke("same prompt")
        await model.ainvoke("same prompt")
    finally:
        set_llm_cache(None)
    assert len(gateway.calls) == 2  # both calls reached the ledger
    with pytest.raises(WorkflowError, match="cannot use a LangChain cache"):
        GatewayChatModel(ctx=make_ctx(gateway), cache=True)
