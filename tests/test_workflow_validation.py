"""Workflow definition and validation errors: each says what is wrong and how to fix it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import FunctionAgent, LLMAgent
from orchestrator import Catalog, ConfigError, RunLimits, Workflow, WorkflowError
from orchestrator.agent import AttemptContext


async def _noop(ctx: AttemptContext) -> str:
    return "ok"


def test_duplicate_name_is_rejected_at_once() -> None:
    wf = Workflow("w")
    wf.subtask("plan", LLMAgent(prompt="x"), models=["small"])
    with pytest.raises(WorkflowError, match=r"subtask `plan` is defined twice"):
        wf.subtask("plan", LLMAgent(prompt="y"), models=["small"])


def test_empty_model_list_says_what_to_give() -> None:
    wf = Workflow("w")
    with pytest.raises(WorkflowError, match=r"`models` is empty; give at least one catalog model"):
        wf.subtask("plan", LLMAgent(prompt="x"), models=[])


def test_models_as_string_is_caught() -> None:
    with pytest.raises(WorkflowError, match=r'write models=\["small"\]'):
        Workflow("w").subtask("plan", LLMAgent(prompt="x"), models="small")


def test_unknown_dependency_suggests_the_close_name() -> None:
    wf = Workflow("w")
    wf.subtask("plan", LLMAgent(prompt="x"), models=["small"])
    wf.subtask("patch", LLMAgent(prompt="x"), models=["small"], after=["plann"])
    with pytest.raises(
        WorkflowError, match=r"depends on `plann`, which does not exist; did you mean `plan`\?"
    ):
        wf.validate()


def test_cycle_is_named_in_order() -> None:
    wf = Workflow("w")
    wf.subtask("a", LLMAgent(prompt="x"), models=["small"], after=["c"])
    wf.subtask("b", LLMAgent(prompt="x"), models=["small"], after=["a"])
    wf.subtask("c", LLMAgent(prompt="x"), models=["small"], after=["b"])
    with pytest.raises(WorkflowError, match=r"cycle: `\w` -> `\w` -> `\w` -> `\w`; remove one") as info:
        wf.validate()
    names = [p.strip("`") for p in str(info.value).split(": ", 1)[1].split(";")[0].split(" -> ")]
    assert names[0] == names[-1] and set(names) == {"a", "b", "c"}


def test_self_dependency() -> None:
    with pytest.raises(WorkflowError, match="depends on itself"):
        Workflow("w").subtask("a", LLMAgent(prompt="x"), models=["small"], after=["a"])


def test_unknown_model_lists_known_ones(sim_catalog: Catalog) -> None:
    wf = Workflow("w")
    wf.subtask("a", LLMAgent(prompt="x"), models=["smal"])
    with pytest.raises(
        WorkflowError, match=r"model `smal`, which is not in the catalog; did you mean `small`\?"
    ):
        wf.validate(catalog=sim_catalog)


def test_template_variable_without_provider() -> None:
    wf = Workflow("w", inputs=["issue"])
    plan = wf.subtask("plan", LLMAgent(prompt="Plan {issue}"), models=["small"])
    wf.subtask("patch", LLMAgent(prompt="{plan} {isue}"), models=["small"], after=[plan])
    with pytest.raises(
        WorkflowError, match=r"`\{isue\}`, which no ancestor or input provides.*did you mean `issue`"
    ):
        wf.validate()


def test_template_variable_naming_a_non_ancestor_subtask() -> None:
    wf = Workflow("w", inputs=[])
    wf.subtask("plan", LLMAgent(prompt="x"), models=["small"])
    wf.subtask("review", LLMAgent(prompt="{plan}"), models=["small"])
    with pytest.raises(WorkflowError, match=r"add `plan` to `after=` of `review`"):
        wf.validate()


def test_missing_declared_input_at_run_time() -> None:
    wf = Workflow("w", inputs=["issue"])
    wf.subtask("plan", LLMAgent(prompt="{issue}"), models=["small"])
    with pytest.raises(WorkflowError, match=r"run inputs are missing `issue`"):
        wf.validate(inputs={})


def test_all_problems_are_listed_together(sim_catalog: Catalog) -> None:
    wf = Workflow("w")
    wf.subtask("a", FunctionAgent(_noop), models=["nope"], after=["zzz"])
    with pytest.raises(WorkflowError, match=r"has 2 problems") as info:
        wf.validate(catalog=sim_catalog)
    assert "`zzz`" in str(info.value) and "`nope`" in str(info.value)


@pytest.mark.parametrize(
    ("budget", "deadline", "fragment"),
    [
        (0, 10, "`budget_usd` = `0` is not positive; give a positive budget"),
        (-1, 10, "`budget_usd` = `-1` is not positive"),
        ("1e-12", 10, "below one nano-dollar"),
        ("0.0000000001", 10, "below one nano-dollar"),
        ("nan", 10, "`budget_usd` = `nan` is not a finite amount"),
        (float("inf"), 10, "`budget_usd` = `inf` is not a finite amount"),
        ("1e400", 10, "above the largest budget a run accepts"),
        ("abc", 10, "`budget_usd` = `abc` is not an amount in USD"),
        (1, 0, "`deadline_s` = `0` is not positive; give a positive deadline"),
        (1, -5, "`deadline_s` = `-5` is not positive"),
        (1, float("inf"), "`deadline_s` = `inf` is not a finite number of seconds"),
        (1, float("nan"), "`deadline_s` = `nan` is not a finite number of seconds"),
        (1, 1e12, "longer than a year"),
        (1, "soon", "`deadline_s` = `soon` is not a number of seconds"),
    ],
)
def test_bad_limits_say_what_to_give(budget: object, deadline: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunLimits.checked(budget, deadline)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_good_limits_are_exact() -> None:
    limits = RunLimits.checked(0.1, None)
    assert limits.budget_usd == Decimal("0.1") and limits.deadline_s is None
    assert RunLimits.checked("$0.000000001", 90).deadline_s == 90.0


def test_subtask_name_with_a_trailing_newline_is_rejected() -> None:
    with pytest.raises(WorkflowError, match=r"subtask name 'a\\n' is not valid"):
        Workflow("w").subtask("a\n", LLMAgent(prompt="x"), models=["small"])
    with pytest.raises(WorkflowError, match="control character"):
        Workflow("w\n")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"after": [None]}, "`after` holds None; give the handles"),
        ({"after": "plan"}, "`after` must be a list, not a single subtask; write after=[plan]"),
        ({"after": 3}, "`after` must be a list of subtasks"),
        ({"estimates": {"small": None}}, "the estimate for model `small` must be an `AttemptEstimate`"),
        ({"estimates": {None: None}}, "estimates for model None, which is not in its models"),
        ({"estimates": [1]}, "`estimates` must map model names"),
        ({"models": [None]}, "`models` must hold catalog model names, got [None]"),
        ({"models": 5}, "`models` must be a list of catalog model names, got 5"),
        ({"max_attempts": "3"}, "max_attempts must be a whole number >= 1, got '3'"),
        ({"max_tokens": 0}, "max_tokens must be a whole number >= 1, got 0"),
        ({"max_errors": True}, "max_errors must be a whole number >= 1, got True"),
        ({"check": "regex"}, "`check` must be a check such as `checks.regex(...)`"),
    ],
)
def test_wrong_argument_types_are_workflow_errors(kwargs: dict[str, Any], fragment: str) -> None:
    arguments: dict[str, Any] = {"models": ["small"], **kwargs}
    with pytest.raises(WorkflowError) as info:
        Workflow("w").subtask("patch", LLMAgent(prompt="x"), **arguments)
    assert fragment in str(info.value)


def test_wrong_agent_and_inputs_types_are_workflow_errors() -> None:
    with pytest.raises(WorkflowError, match="the agent must be an agent object"):
        Workflow("w").subtask("a", LLMAgent, models=["small"])  # type: ignore[arg-type]
    with pytest.raises(WorkflowError, match="the agent must be an agent object"):
        Workflow("w").subtask("a", "Plan {issue}", models=["small"])  # type: ignore[arg-type]
    with pytest.raises(WorkflowError, match=r'write inputs=\["issue"\]'):
        Workflow("w", inputs="issue")
    with pytest.raises(WorkflowError, match="non-empty name"):
        Workflow(None)  # type: ignore[arg-type]


def test_a_long_chain_defined_child_first_validates() -> None:
    wf = Workflow("chain")
    n = 5_000
    for i in reversed(range(n)):
        wf.subtask(f"s{i}", FunctionAgent(_noop), models=["small"], after=[f"s{i - 1}"] if i else [])
    wf.validate()
    assert wf.topological_order()[:3] == ("s0", "s1", "s2")


def test_a_long_cycle_is_named_briefly() -> None:
    wf = Workflow("ring")
    n = 3_000
    for i in range(n):
        wf.subtask(f"s{i}", FunctionAgent(_noop), models=["small"], after=[f"s{(i + 1) % n}"])
    with pytest.raises(WorkflowError, match="cycle") as info:
        wf.validate()
    assert "more)" in str(info.value) and len(str(info.value)) < 400


def test_topological_order_is_the_sweep_order() -> None:
    # c needs b, which is defined after it: a and b are taken in the first sweep, c in the second
    wf = Workflow("w")
    wf.subtask("a", FunctionAgent(_noop), models=["small"])
    wf.subtask("c", FunctionAgent(_noop), models=["small"], after=["b"])
    wf.subtask("b", FunctionAgent(_noop), models=["small"], after=["a"])
    wf.subtask("d", FunctionAgent(_noop), models=["small"])
    assert wf.topological_order() == ("a", "b", "d", "c")


def test_an_input_given_but_not_declared_says_to_declare_it() -> None:
    wf = Workflow("w", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="{topic} for {audience}"), models=["small"])
    with pytest.raises(WorkflowError) as info:
        wf.validate(inputs={"topic": "t", "audience": "kids"})
    assert "`audience` is given as a run input, but workflow `w` declares only `topic`" in str(info.value)
    assert "add `audience` to `inputs=[...]`" in str(info.value)


def test_how_to_pass_inputs_is_the_callers_advice() -> None:
    wf = Workflow("w", inputs=["topic"])
    wf.subtask("a", LLMAgent(prompt="{topic}"), models=["small"])
    with pytest.raises(WorkflowError, match=r"missing `topic`.*; use --input topic=VALUE$"):
        wf.validate(inputs={}, how_to_pass=lambda names: f"use --input {names[0]}=VALUE")


@st.composite
def _dags(draw: st.DrawFn) -> list[list[int]]:
    n = draw(st.integers(1, 12))
    return [draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else [] for i in range(n)]


@settings(max_examples=60, deadline=None)
@given(_dags(), st.data())
def test_random_dags_validate_and_a_back_edge_makes_a_cycle(
    parents: list[list[int]], data: st.DataObject
) -> None:
    wf = Workflow("w")
    for i, ps in enumerate(parents):
        wf.subtask(f"s{i}", FunctionAgent(_noop), models=["small"], after=[f"s{p}" for p in ps])
    wf.validate()
    order = wf.topological_order()
    assert sorted(order) == sorted(f"s{i}" for i in range(len(parents)))
    for i, ps in enumerate(parents):
        assert all(order.index(f"s{p}") < order.index(f"s{i}") for p in ps)
    # an edge from an ancestor back to a descendant closes a cycle
    edges = [(i, p) for i, ps in enumerate(parents) for p in ps]
    if edges:
        child, parent = data.draw(st.sampled_from(edges))
        wf2 = Workflow("w2")
        for i, ps in enumerate(parents):
            extra = [f"s{child}"] if i == parent else []
            wf2.subtask(f"s{i}", FunctionAgent(_noop), models=["small"], after=[f"s{p}" for p in ps] + extra)
        with pytest.raises(WorkflowError, match="cycle"):
            wf2.validate()
