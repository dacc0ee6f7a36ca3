"""`FunctionAgent`: async functions only, and how their values become outputs."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest

from agents import FunctionAgent
from orchestrator.agent import AttemptContext, AttemptOutput
from orchestrator.errors import WorkflowError

if TYPE_CHECKING:
    from tests.agents.conftest import MakeCtx, MakeGateway


async def merge(ctx: AttemptContext) -> dict[str, str]:
    return {"plan": ctx.texts["plan"], "issue": str(ctx.inputs["issue"])}


async def shout(ctx: AttemptContext) -> str:
    return str(ctx.inputs["issue"]).upper()


async def prefixed(prefix: str, ctx: AttemptContext) -> str:
    return prefix + str(ctx.inputs["issue"])


async def verdict(ctx: AttemptContext) -> AttemptOutput:
    return AttemptOutput(value=[1, 2], text="one, two", simulated_success=True)


async def ask(ctx: AttemptContext) -> str:
    response = await ctx.chat([{"role": "user", "content": "hi"}], parent_call_id=ctx.span_id)
    return response.text


def sync_fn(ctx: AttemptContext) -> str:
    return "sync"


async def test_non_string_value_gets_str_text(make_ctx: MakeCtx) -> None:
    ctx = make_ctx(inputs={"issue": "bug"}, texts={"plan": "fix"})
    output = await FunctionAgent(merge).attempt(ctx)
    assert output.value == {"plan": "fix", "issue": "bug"}
    assert output.text == str({"plan": "fix", "issue": "bug"})
    assert output.simulated_success is None


async def test_string_value_is_its_own_text(make_ctx: MakeCtx) -> None:
    output = await FunctionAgent(shout).attempt(make_ctx(inputs={"issue": "bug"}))
    assert (output.value, output.text) == ("BUG", "BUG")


async def test_partial_of_async_function_is_accepted(make_ctx: MakeCtx) -> None:
    agent = FunctionAgent(functools.partial(prefixed, "issue: "))
    output = await agent.attempt(make_ctx(inputs={"issue": "bug"}))
    assert output.text == "issue: bug"
    assert repr(agent) == "FunctionAgent(prefixed)"


async def test_attempt_output_is_returned_as_is(make_ctx: MakeCtx) -> None:
    output = await FunctionAgent(verdict).attempt(make_ctx())
    assert output == AttemptOutput(value=[1, 2], text="one, two", simulated_success=True)


async def test_function_may_call_models_through_the_gateway(
    make_ctx: MakeCtx, make_gateway: MakeGateway, span_id: str
) -> None:
    gateway = make_gateway("hello")
    output = await FunctionAgent(ask).attempt(make_ctx(gateway))
    assert output.text == "hello"
    assert [c.parent_call_id for c in gateway.calls] == [span_id]


def test_sync_function_rejected_with_async_def_hint() -> None:
    with pytest.raises(WorkflowError, match=r"sync function `sync_fn`.*`async def sync_fn\(ctx\)"):
        FunctionAgent(sync_fn)  # type: ignore[arg-type]


def test_non_callable_rejected() -> None:
    with pytest.raises(WorkflowError, match="needs an async function"):
        FunctionAgent("not a function")  # type: ignore[arg-type]


def test_no_template_variables() -> None:
    assert FunctionAgent(merge).template_variables() == frozenset()
