"""The built-in checks on passing, failing and broken input (all but `python_tests`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from agents import checks
from orchestrator.agent import AttemptOutput, CheckResult
from orchestrator.errors import BudgetExhausted, CheckError, WorkflowError
from orchestrator.model_client import ChatMessage

if TYPE_CHECKING:
    from tests.agents.conftest import MakeCtx, MakeGateway


def out(text: str, value: object = None) -> AttemptOutput:
    return AttemptOutput(value=text if value is None else value, text=text)


def is_short(value: str) -> bool:
    return len(value) < 10


async def has_title(value: dict[str, str]) -> CheckResult:
    return CheckResult(passed="title" in value, detail="looked for a title")


def explodes(value: object) -> bool:
    raise ZeroDivisionError("boom")


def returns_string(value: object) -> str:
    return "yes"


def refuse_budget(messages: list[ChatMessage]) -> str:
    raise BudgetExhausted("no budget left for the judge")


# --- python ---------------------------------------------------------------


async def test_python_sync_predicate(make_ctx: MakeCtx) -> None:
    check = checks.python(is_short)
    assert repr(check) == "python(is_short)"
    assert (await check(out("short"), make_ctx())).passed
    failed = await check(out("much too long"), make_ctx())
    assert not failed.passed
    assert failed.detail == "`python(is_short)` returned False"


async def test_python_async_predicate_sees_the_value(make_ctx: MakeCtx) -> None:
    check = checks.python(has_title)
    passed = await check(out("{}", value={"title": "x"}), make_ctx())
    assert passed == CheckResult(passed=True, detail="looked for a title")
    assert not (await check(out("{}", value={}), make_ctx())).passed


async def test_python_crash_becomes_check_error_naming_the_check(make_ctx: MakeCtx) -> None:
    with pytest.raises(CheckError, match=r"check `python\(explodes\)` crashed on subtask `sub`"):
        await checks.python(explodes)(out("x"), make_ctx())


async def test_python_wrong_return_type_is_check_error(make_ctx: MakeCtx) -> None:
    with pytest.raises(CheckError, match="return a bool or a `CheckResult`"):
        await checks.python(returns_string)(out("x"), make_ctx())  # type: ignore[arg-type]


# --- regex ----------------------------------------------------------------


async def test_regex_searches_the_text(make_ctx: MakeCtx) -> None:
    check = checks.regex(r"diff --git a/(\S+)")
    assert repr(check) == r"regex('diff --git a/(\\S+)')"
    result = await check(out("Here:\ndiff --git a/x.py b/x.py"), make_ctx())
    assert result.passed
    assert "diff --git a/x.py" in result.detail
    failed = await check(out("no patch"), make_ctx())
    assert not failed.passed
    assert "no match" in failed.detail


async def test_regex_flags(make_ctx: MakeCtx) -> None:
    import re

    assert not (await checks.regex("^done$")(out("x\nDONE"), make_ctx())).passed
    check = checks.regex("^done$", re.IGNORECASE | re.MULTILINE)
    assert (await check(out("x\nDONE"), make_ctx())).passed


def test_regex_invalid_pattern_is_workflow_error() -> None:
    with pytest.raises(WorkflowError, match=r"pattern '\(unclosed' is not a valid regular"):
        checks.regex("(unclosed")


# --- json_schema ------------------------------------------------------------

SCHEMA: dict[str, object] = {
    "title": "order",
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": {
            "type": "array",
            "items": {"type": "object", "properties": {"price": {"type": "number"}}},
        }
    },
}


async def test_json_schema_bare_json(make_ctx: MakeCtx) -> None:
    check = checks.json_schema(SCHEMA)
    assert repr(check) == "json_schema('order')"
    assert (await check(out('{"items": [{"price": 1.5}]}'), make_ctx())).passed


async def test_json_schema_fenced_json(make_ctx: MakeCtx) -> None:
    text = 'Here you go:\n```json\n{"items": []}\n```\nAnything else?'
    assert (await checks.json_schema(SCHEMA)(out(text), make_ctx())).passed


async def test_json_schema_failure_names_the_path(make_ctx: MakeCtx) -> None:
    text = '```json\n{"items": [{"price": 1}, {"price": "cheap"}]}\n```'
    result = await checks.json_schema(SCHEMA)(out(text), make_ctx())
    assert not result.passed
    assert result.detail.startswith("`$.items[1].price`: 'cheap' is not of type 'number'")


async def test_json_schema_missing_property(make_ctx: MakeCtx) -> None:
    result = await checks.json_schema(SCHEMA)(out("{}"), make_ctx())
    assert not result.passed
    assert result.detail == "`$`: 'items' is a required property"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json at all", "the output is not JSON"),
        ("```json\n{broken\n```", "code fence does not parse"),
    ],
)
async def test_json_schema_unparsable_output_fails(make_ctx: MakeCtx, text: str, fragment: str) -> None:
    result = await checks.json_schema(SCHEMA)(out(text), make_ctx())
    assert not result.passed
    assert fragment in result.detail


def test_json_schema_invalid_schema_is_workflow_error() -> None:
    with pytest.raises(WorkflowError, match=r"schema is invalid at `\$.type`"):
        checks.json_schema({"type": "no-such-type"})


# --- llm_judge -------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "passed"),
    [
        ("Yes, it is specific.", True),
        ("PASS", True),
        ("**Yes**", True),
        ("no: too vague", False),
        ("I think yes", False),
    ],
)
async def test_llm_judge_verdicts(
    make_ctx: MakeCtx, make_gateway: MakeGateway, span_id: str, reply: str, passed: bool
) -> None:
    gateway = make_gateway(reply)
    check = checks.llm_judge("Is this title about {topic}? {output}", model="large")
    result = await check(out("Fix crash"), make_ctx(gateway, inputs={"topic": "bugs"}))
    assert result.passed is passed
    assert reply in result.detail
    [call] = gateway.calls
    assert call.messages[-1] == {"role": "user", "content": "Is this title about bugs? Fix crash"}
    assert call.model == "large"
    assert call.max_tokens == 16
    assert call.parent_call_id == span_id


def test_llm_judge_must_see_the_output() -> None:
    with pytest.raises(WorkflowError, match=r"does not use `\{output\}`"):
        checks.llm_judge("Is it good?")


async def test_llm_judge_budget_refusal_passes_through(make_ctx: MakeCtx, make_gateway: MakeGateway) -> None:
    gateway = make_gateway(refuse_budget)
    with pytest.raises(BudgetExhausted):
        await checks.llm_judge("{output}")(out("x"), make_ctx(gateway))


async def test_llm_judge_missing_variable_is_a_user_error(make_ctx: MakeCtx) -> None:
    with pytest.raises(WorkflowError, match=r"subtask `sub`: `checks.llm_judge` prompt uses `\{topic\}`"):
        await checks.llm_judge("{topic}: {output}")(out("x"), make_ctx())


# --- all_of ----------------------------------------------------------------


async def test_all_of_passes_when_every_check_passes(make_ctx: MakeCtx) -> None:
    check = checks.all_of(checks.regex("a"), checks.python(is_short))
    assert repr(check) == "all_of(regex('a'), python(is_short))"
    result = await check(out("abc"), make_ctx())
    assert result.passed
    assert "regex('a')" in result.detail


async def test_all_of_stops_at_first_failure(make_ctx: MakeCtx) -> None:
    check = checks.all_of(checks.regex("z"), checks.python(explodes))
    result = await check(out("abc"), make_ctx())
    assert not result.passed
    assert result.detail.startswith("regex('z'): no match")


async def test_all_of_keeps_the_inner_check_error(make_ctx: MakeCtx) -> None:
    check = checks.all_of(checks.regex("a"), checks.python(explodes))
    with pytest.raises(CheckError, match=r"check `python\(explodes\)` crashed"):
        await check(out("abc"), make_ctx())


def test_all_of_needs_checks() -> None:
    with pytest.raises(WorkflowError, match="at least one check"):
        checks.all_of()
    with pytest.raises(WorkflowError, match="not a check"):
        checks.all_of("regex")  # type: ignore[arg-type]
