"""Workflow definition and validation errors: each says what is wrong and how to fix it."""

from __future__ import annotations

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
    with pytest.raises(WorkflowError, match=r"empty model list; give at least one catalog model"):
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
    [(0, 10, "budget_usd"), (-1, 10, "budget_usd"), (1, 0, "deadline_s"), (1, -5, "deadline_s")],
)
def test_bad_limits_say_what_to_give(budget: float, deadline: float, fragment: str) -> None:
    with pytest.raises(ConfigError, match=rf"`{fragment}`.*give a positive budget"):
        RunLimits.checked(budget, deadline)


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
