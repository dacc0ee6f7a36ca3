"""End to end: `LLMAgent` then `LangGraphAgent` through `arun` on the simulated backend.

The LangGraph agent's two inner model calls must go through the executor's
gateway: billed in the ledger, and recorded as children of the attempt's
agent span in the calling tree.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph

from agents import LangGraphAgent, LLMAgent, checks
from budgetflow import arun
from orchestrator import CallKind, Catalog, Outcome, Workflow
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from tests.conftest import estimate


def draft_and_refine(model: BaseChatModel) -> CompiledStateGraph[Any, Any, Any, Any]:
    async def draft(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    async def refine(state: MessagesState) -> dict[str, list[BaseMessage]]:
        request = HumanMessage(content="Tighten it.")
        return {"messages": [request, await model.ainvoke([*state["messages"], request])]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft)
    graph.add_node("refine", refine)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "refine")
    graph.add_edge("refine", END)
    return graph.compile()


async def test_langgraph_inner_calls_are_children_of_the_attempt_span(
    sim_catalog: Catalog,
) -> None:
    sure = estimate(1.0, tokens=50, latency=0.01, spread=0)
    wf = Workflow("plan-answer", inputs=["issue"])
    plan = wf.subtask(
        "plan",
        LLMAgent(system="You plan.", prompt="Plan a fix for: {issue}"),
        models=["small"],
        estimates={"small": sure},
    )
    wf.subtask(
        "answer",
        LangGraphAgent(draft_and_refine, prompt="Plan:\n{plan}\nWrite the fix for {issue}."),
        after=[plan],
        models=["small"],
        estimates={"small": sure},
        check=checks.regex("never consulted: the simulated verdict stands in"),
    )
    client = SimulatedClient(SimulatedBackend({("plan", "small"): sure, ("answer", "small"): sure}))

    result = await arun(
        wf,
        catalog=sim_catalog,
        inputs={"issue": "crash on empty list"},
        budget_usd=1,
        deadline_s=60,
        policy="fixed:small:1",
        client=client,
        seed=5,
    )

    assert result.outcome is Outcome.COMPLETED, result.run.reason
    assert set(result.outputs) == {"plan", "answer"}
    spans = {c.subtask: c for c in result.calls if c.kind is CallKind.AGENT}
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert [c.parent_call_id for c in llm if c.subtask == "plan"] == [spans["plan"].call_id]
    inner = [c for c in llm if c.subtask == "answer"]
    assert len(inner) == 2
    assert {c.parent_call_id for c in inner} == {spans["answer"].call_id}
    assert sum(c.cost_usd for c in llm) == result.spent_usd > 0

    [answer_attempt] = [n for n in result.tree.attempts if n.attempt.subtask == "answer"]
    [span_node] = answer_attempt.calls
    assert span_node.call.kind is CallKind.AGENT
    assert [ch.call.kind for ch in span_node.children] == [CallKind.LLM, CallKind.LLM]
    assert result.tree.cost_usd == result.spent_usd
