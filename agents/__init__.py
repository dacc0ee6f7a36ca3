"""Agents and checks: what runs one attempt at a subtask, and what judges it.

- `LLMAgent`: a templated prompt, one model call.
- `FunctionAgent`: plain async Python.
- `LangGraphAgent`: a compiled LangGraph graph whose chat-model calls go
  through the attempt's gateway (`GatewayChatModel`), so they are budgeted,
  recorded, and shown as children of the attempt in the calling tree.
- `checks`: `python`, `regex`, `json_schema`, `python_tests`, `llm_judge`, `all_of`.

Every model call goes through `AttemptContext.chat`; no agent or check talks
to a provider directly.
"""

from typing import TYPE_CHECKING, Any

from agents import checks
from agents.function import FunctionAgent
from agents.llm import LLMAgent

if TYPE_CHECKING:
    from agents._gateway_model import GatewayChatModel
    from agents.langgraph_agent import LangGraphAgent

__all__ = ["FunctionAgent", "GatewayChatModel", "LLMAgent", "LangGraphAgent", "checks"]


def __getattr__(name: str) -> Any:
    # LangGraph and LangChain take seconds to import: load them only when asked for.
    if name == "LangGraphAgent":
        from agents.langgraph_agent import LangGraphAgent

        return LangGraphAgent
    if name == "GatewayChatModel":
        from agents._gateway_model import GatewayChatModel

        return GatewayChatModel
    raise AttributeError(f"module `agents` has no attribute `{name}`")
