"""budgetflow: run multi-agent LLM workflows under a hard dollar budget and a deadline.

Everything a workflow author needs comes from here:

```python
from budgetflow import Catalog, LLMAgent, ModelSpec, Workflow, checks, run
```

The packages behind it stay importable for those who extend budgetflow:
`orchestrator` (the executor, ledger, records, model-client and recorder
protocols), `policies` (planners and the `Policy` protocol), `agents` (agent
and check building blocks) and `storage` (the SQL recorder, queries, the Redis
ledger).
"""

from __future__ import annotations

import importlib.metadata as _metadata
import typing as _typing

from agents import FunctionAgent, LLMAgent, checks
from budgetflow.api import arun, astream, run, simulate
from budgetflow.cli import main
from budgetflow.settings import Settings, load_settings
from orchestrator.agent import AttemptContext, AttemptOutput, CheckResult
from orchestrator.catalog import Catalog, LatencyProfile, ModelSpec, PoolSpec
from orchestrator.errors import (
    BudgetExhausted,
    BudgetflowError,
    CheckError,
    ConfigError,
    DeadlineExceeded,
    ProviderError,
    RunError,
    StorageError,
    UserError,
    WorkflowError,
)
from orchestrator.estimates import AttemptEstimate, EmpiricalSample, LogNormal
from orchestrator.events import (
    AttemptFinished,
    AttemptStarted,
    BudgetThresholdCrossed,
    CallFinished,
    DecisionMade,
    Event,
    LedgerView,
    Observer,
    RunFinished,
    RunStarted,
    SubtaskChanged,
)
from orchestrator.records import Outcome
from orchestrator.run import RunResult
from orchestrator.workflow import SubtaskRef, Workflow

if _typing.TYPE_CHECKING:
    from agents.langgraph_agent import LangGraphAgent

try:
    __version__ = _metadata.version("budgetflow")
    """The installed budgetflow's version."""
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"

# Grouped by topic, as users look for names; each group is sorted the way RUF022 sorts a whole
# list (CONSTANTS, Classes, functions), which tests/test_public_api.py checks instead.
__all__ = [  # noqa: RUF022
    # defining a workflow
    "AttemptEstimate",
    "EmpiricalSample",
    "LogNormal",
    "SubtaskRef",
    "Workflow",
    # models
    "Catalog",
    "LatencyProfile",
    "ModelSpec",
    "PoolSpec",
    # agents and checks
    "AttemptContext",
    "AttemptOutput",
    "CheckResult",
    "FunctionAgent",
    "LLMAgent",
    "LangGraphAgent",
    "checks",
    # running
    "Outcome",
    "RunResult",
    "arun",
    "astream",
    "run",
    "simulate",
    # watching a run
    "AttemptFinished",
    "AttemptStarted",
    "BudgetThresholdCrossed",
    "CallFinished",
    "DecisionMade",
    "Event",
    "LedgerView",
    "Observer",
    "RunFinished",
    "RunStarted",
    "SubtaskChanged",
    # errors
    "BudgetExhausted",
    "BudgetflowError",
    "CheckError",
    "ConfigError",
    "DeadlineExceeded",
    "ProviderError",
    "RunError",
    "StorageError",
    "UserError",
    "WorkflowError",
    # the command line and its settings
    "Settings",
    "load_settings",
    "main",
]


def __getattr__(name: str) -> _typing.Any:
    # LangGraph takes seconds to import: load `LangGraphAgent` only when asked for.
    if name == "LangGraphAgent":
        from agents.langgraph_agent import LangGraphAgent

        return LangGraphAgent
    raise AttributeError(f"module `budgetflow` has no attribute `{name}`")
