"""The public surface of `agents`: explicit, sorted, and importable."""

from __future__ import annotations

import agents
from agents import checks


def test_agents_all_is_sorted_and_complete() -> None:
    assert agents.__all__ == sorted(agents.__all__)
    assert set(agents.__all__) == {
        "FunctionAgent",
        "GatewayChatModel",
        "LLMAgent",
        "LangGraphAgent",
        "checks",
    }
    for name in agents.__all__:
        assert getattr(agents, name) is not None


def test_checks_all_is_sorted_and_complete() -> None:
    assert checks.__all__ == sorted(checks.__all__)
    assert set(checks.__all__) == {
        "NamedCheck",
        "all_of",
        "json_schema",
        "llm_judge",
        "python",
        "python_tests",
        "regex",
    }
