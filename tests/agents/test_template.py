"""Template parsing and rendering, shared by `LLMAgent`, `LangGraphAgent` and `llm_judge`."""

from __future__ import annotations

import pytest

from agents._template import parse_template, render_template
from orchestrator.errors import WorkflowError

WHERE = "`LLMAgent` prompt"


@pytest.mark.parametrize(
    ("template", "names"),
    [
        ("no fields", set()),
        ("Plan a fix for: {issue}", {"issue"}),
        ("{plan}\n{issue} and {plan} again", {"plan", "issue"}),
        ("{fix-bug} names a subtask with a dash", {"fix-bug"}),
        ("literal {{braces}} and {{{x}}}", {"x"}),
        ("{x!r} {y:>10} {z!s:^5}", {"x", "y", "z"}),
    ],
)
def test_parse_returns_variable_names(template: str, names: set[str]) -> None:
    assert parse_template(template, where=WHERE) == frozenset(names)


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("Hello {}", "positional field `{}`"),
        ("Hello {0}", "positional field `{0}`"),
        ("{plan.text}", "attribute or index access `{plan.text}`"),
        ("{items[0]}", "attribute or index access `{items[0]}`"),
        ("{ issue}", "not a valid variable name"),
        ("{1abc}", "not a valid variable name"),
        ("{x:{width}}", "nested field"),
        ("unclosed {issue", "not a valid template"),
        ("stray } brace", "not a valid template"),
    ],
)
def test_parse_rejects_unsupported_fields(template: str, fragment: str) -> None:
    with pytest.raises(WorkflowError, match="`LLMAgent` prompt") as info:
        parse_template(template, where=WHERE)
    assert fragment in str(info.value)


def test_parse_rejects_non_string() -> None:
    with pytest.raises(WorkflowError, match="must be a string"):
        parse_template(42, where=WHERE)  # type: ignore[arg-type]


def test_attribute_access_message_suggests_plain_name() -> None:
    with pytest.raises(WorkflowError, match=r"plain names such as `\{plan\}`"):
        parse_template("{plan.text}", where=WHERE)


def test_render_fills_values_and_escapes() -> None:
    text = render_template(
        "{{literal}} {issue} / {plan}", {"issue": "bug", "plan": "fix"}, where=WHERE, subtask="s"
    )
    assert text == "{literal} bug / fix"


def test_render_missing_variable_names_variable_and_subtask() -> None:
    with pytest.raises(WorkflowError) as info:
        render_template("{isue}", {"issue": "bug"}, where=WHERE, subtask="patch")
    message = str(info.value)
    assert "subtask `patch`" in message
    assert "`{isue}`" in message
    assert "did you mean `issue`?" in message


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{topic!z}", "the conversion `!z` in `{topic!z}`; use `!r`, `!s` or `!a`"),
        ("{topic:zz}", "the format spec `zz` in `{topic:zz}`, which fits no value"),
        ("{topic!r:d}", "the format spec `d` in `{topic:d}`, which fits no value"),
    ],
)
def test_parse_rejects_templates_that_cannot_render(template: str, fragment: str) -> None:
    with pytest.raises(WorkflowError) as info:
        parse_template(template, where=WHERE)
    assert fragment in str(info.value)


def test_render_with_a_spec_that_does_not_fit_the_value_names_subtask_template_and_field() -> None:
    assert parse_template("Count: {topic:d}", where=WHERE) == frozenset({"topic"})
    assert render_template("{n:d} {x!r:>6}", {"n": 3, "x": "a"}, where=WHERE, subtask="s") == "3    'a'"
    with pytest.raises(WorkflowError) as info:
        render_template("Count: {topic:d}", {"topic": "ducks"}, where=WHERE, subtask="report")
    message = str(info.value)
    assert "subtask `report`" in message and "`LLMAgent` prompt 'Count: {topic:d}'" in message
    assert "cannot render `{topic:d}`" in message and "the value of `topic` is str 'ducks'" in message
