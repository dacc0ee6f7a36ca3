"""`LLMAgent`: templates, the one gateway call, and what the attempt returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agents import LLMAgent
from orchestrator.errors import WorkflowError

if TYPE_CHECKING:
    from tests.agents.conftest import MakeCtx, MakeGateway


def test_template_variables_cover_prompt_and_system() -> None:
    agent = LLMAgent("Plan:\n{plan}\nFix {issue}", system="You fix {language} code. {{json}}")
    assert agent.template_variables() == frozenset({"plan", "issue", "language"})


@pytest.mark.parametrize("prompt", ["{}", "{0}", "{plan.text}", "{plan[0]}", "{unclosed"])
def test_bad_prompt_rejected_at_construction(prompt: str) -> None:
    with pytest.raises(WorkflowError, match="`LLMAgent` prompt"):
        LLMAgent(prompt)


def test_bad_system_rejected_at_construction() -> None:
    with pytest.raises(WorkflowError, match="`LLMAgent` system"):
        LLMAgent("ok", system="{0}")


@pytest.mark.parametrize(
    ("kwargs", "fragment"), [({"max_tokens": 0}, "max_tokens"), ({"temperature": -1.0}, "temp")]
)
def test_bad_numbers_rejected(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(WorkflowError, match=fragment):
        LLMAgent("ok", **kwargs)  # type: ignore[arg-type]


async def test_attempt_makes_one_call_under_the_attempt_span(
    make_ctx: MakeCtx, make_gateway: MakeGateway, span_id: str
) -> None:
    gateway = make_gateway("the plan")
    ctx = make_ctx(gateway, inputs={"issue": "crash on empty list"}, texts={"lang": "Python"})
    agent = LLMAgent("Plan a fix for: {issue}", system="You write {lang}.", temperature=0.2)

    output = await agent.attempt(ctx)

    assert output.value == "the plan"
    assert output.text == "the plan"
    assert output.simulated_success is None
    [call] = gateway.calls
    assert call.messages == [
        {"role": "system", "content": "You write Python."},
        {"role": "user", "content": "Plan a fix for: crash on empty list"},
    ]
    assert call.parent_call_id == span_id
    assert call.temperature == 0.2
    assert call.max_tokens is None  # the policy's cap applies
    assert call.model is None  # the attempt's model


async def test_agent_max_tokens_never_exceeds_policy_cap(
    make_ctx: MakeCtx, make_gateway: MakeGateway
) -> None:
    gateway = make_gateway()
    await LLMAgent("hi", max_tokens=1000).attempt(make_ctx(gateway, max_tokens=300))
    await LLMAgent("hi", max_tokens=100).attempt(make_ctx(gateway, max_tokens=300))
    assert [c.max_tokens for c in gateway.calls] == [300, 100]


@pytest.mark.parametrize("verdict", [True, False])
async def test_simulated_verdict_passes_through(
    make_ctx: MakeCtx, make_gateway: MakeGateway, verdict: bool
) -> None:
    gateway = make_gateway("sim", simulated_success=verdict)
    output = await LLMAgent("hi").attempt(make_ctx(gateway))
    assert output.simulated_success is verdict


async def test_missing_variable_at_run_time_names_it_and_the_subtask(
    make_ctx: MakeCtx, make_gateway: MakeGateway
) -> None:
    gateway = make_gateway()
    ctx = make_ctx(gateway, inputs={"issue": "x"}, subtask="patch")
    with pytest.raises(WorkflowError) as info:
        await LLMAgent("{issue} {plan}").attempt(ctx)
    assert "subtask `patch`" in str(info.value)
    assert "`{plan}`" in str(info.value)
    assert gateway.calls == []


def test_repr_is_readable() -> None:
    assert repr(LLMAgent("Plan a fix for: {issue}")) == "LLMAgent(prompt='Plan a fix for: {issue}')"
