"""Every top-level package has an explicit, sorted public surface whose names exist."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import types
from pathlib import Path

import pytest


def _isort_key(name: str) -> tuple[int, str]:
    """isort-style order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


PACKAGES = ["orchestrator", "agents", "policies", "storage", "web"]
"""Packages with one sorted `__all__`; `budgetflow`, the users' door, groups its names by topic."""


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_key), f"`{name}.__all__` is not sorted"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert getattr(module, attr) is not None, f"`{name}.{attr}` is exported but missing"


def test_core_imports_no_database_web_or_redis_and_not_litellm() -> None:
    """The core and the users' door import fast and clean: no litellm, SQLAlchemy, FastAPI or redis."""
    code = (
        "import sys, orchestrator, policies, budgetflow;"
        "bad = [m for m in ('litellm', 'sqlalchemy', 'fastapi', 'redis', 'langgraph') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _groups(path: Path) -> list[tuple[str, list[str]]]:
    """The comment-headed groups of the `__all__` list in `path`, in order."""
    source = path.read_text()
    tree = ast.parse(source)
    node = next(
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in n.targets)
    )
    assert isinstance(node.value, ast.List)
    lines = source.splitlines()[node.lineno : node.value.end_lineno]
    groups: list[tuple[str, list[str]]] = []
    for line in lines:
        text = line.strip()
        if text.startswith("#"):
            groups.append((text.lstrip("# "), []))
        elif text.startswith('"'):
            assert groups, "every name of `budgetflow.__all__` sits under a group comment"
            groups[-1][1].append(text.strip('",'))
    return groups


def test_budgetflow_is_one_grouped_complete_door() -> None:
    import budgetflow

    groups = _groups(Path(budgetflow.__file__))
    names = [name for _, members in groups for name in members]
    assert names == list(budgetflow.__all__)
    assert len(set(names)) == len(names)
    for title, members in groups:
        assert members, f"group `{title}` is empty"
        assert members == sorted(members, key=_isort_key), f"group `{title}` is not sorted"
    for name in names:
        assert getattr(budgetflow, name) is not None
    # complete: every public name the module holds is in a group (submodules aside)
    public = {
        n
        for n, v in vars(budgetflow).items()
        if not n.startswith("_")
        and (not isinstance(v, types.ModuleType) or n in names)
        and n != "annotations"
    }
    assert public == set(names) - {"LangGraphAgent"}  # loaded on first use
    # a user needs nothing else for the README's example: these are the names it promises
    promised = {"Workflow", "run", "arun", "simulate", "Catalog", "ModelSpec", "LLMAgent", "FunctionAgent"}
    assert promised | {"LangGraphAgent", "checks", "AttemptEstimate", "LogNormal"} <= set(names)
    assert isinstance(budgetflow.__version__, str) and budgetflow.__version__


def test_the_door_is_the_same_objects_as_the_packages_behind_it() -> None:
    import agents
    import budgetflow
    import orchestrator

    assert budgetflow.Workflow is orchestrator.Workflow and budgetflow.RunResult is orchestrator.RunResult
    # `budgetflow.run` adds defaults (a client, a policy by name) to the core's `orchestrator.run`
    assert budgetflow.run is not orchestrator.run
    assert budgetflow.LLMAgent is agents.LLMAgent and budgetflow.checks is agents.checks
    assert budgetflow.LangGraphAgent is agents.LangGraphAgent
