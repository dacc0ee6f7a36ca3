"""budgetflow's core: workflows, the event-driven executor, the ledger, and the seams around them.

Nothing here imports a database, a web framework or Redis; storage and
serving plug in through the `Recorder`, `Ledger` and `ModelClient` protocols.
"""

from orchestrator.agent import Agent, AttemptContext, AttemptOutput, ChatGateway, Check, CheckResult
from orchestrator.belief_updates import InRunUpdate
from orchestrator.call_tree import AttemptNode, CallNode, CallTree
from orchestrator.catalog import Catalog, LatencyProfile, ModelSpec, PoolSpec
from orchestrator.errors import (
    BudgetExhausted,
    BudgetflowError,
    CheckError,
    ConfigError,
    DeadlineExceeded,
    PoolFormatError,
    ProviderError,
    ReplicaUnavailable,
    RunError,
    StorageError,
    UserError,
    WorkflowError,
)
from orchestrator.estimates import AttemptEstimate, EmpiricalSample, LogNormal
from orchestrator.estimator import Estimator, RequestFeatures, TableEstimator, describe_beliefs
from orchestrator.exploration import ThompsonEstimator
from orchestrator.gateway import RetryPolicy
from orchestrator.interceptors import (
    AttemptInfo,
    CallInfo,
    DecisionInfo,
    Interceptor,
    InterceptorStats,
    RunInfo,
)
from orchestrator.ledger import InProcessLedger, Ledger, LedgerSnapshot, Reservation
from orchestrator.litellm_client import LiteLLMClient
from orchestrator.memory_recorder import MemoryRecorder
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse, ModelClient
from orchestrator.plan import Allocation, Assignment, DagView, InFlight, ModelPrice, PlanState, Policy
from orchestrator.records import (
    AttemptRecord,
    AttemptStatus,
    CallKind,
    CallRecord,
    CallStatus,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
    SubtaskStatus,
)
from orchestrator.run import RunResult, arun, run
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.simulation import simulate
from orchestrator.workflow import RunLimits, Subtask, SubtaskRef, Workflow

__all__ = [
    "Agent",
    "Allocation",
    "Assignment",
    "AttemptContext",
    "AttemptEstimate",
    "AttemptInfo",
    "AttemptNode",
    "AttemptOutput",
    "AttemptRecord",
    "AttemptStatus",
    "BudgetExhausted",
    "BudgetflowError",
    "CallInfo",
    "CallKind",
    "CallNode",
    "CallProgress",
    "CallRecord",
    "CallStatus",
    "CallTree",
    "Catalog",
    "ChatGateway",
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "Check",
    "CheckError",
    "CheckResult",
    "ConfigError",
    "DagView",
    "DeadlineExceeded",
    "DecisionInfo",
    "DecisionRecord",
    "EmpiricalSample",
    "Estimator",
    "InFlight",
    "InProcessLedger",
    "InRunUpdate",
    "Interceptor",
    "InterceptorStats",
    "LatencyProfile",
    "Ledger",
    "LedgerSnapshot",
    "LiteLLMClient",
    "LogNormal",
    "MemoryRecorder",
    "ModelClient",
    "ModelPrice",
    "ModelSpec",
    "Outcome",
    "PlanState",
    "Policy",
    "PoolFormatError",
    "PoolSpec",
    "ProviderError",
    "Recorder",
    "ReplicaUnavailable",
    "RequestFeatures",
    "Reservation",
    "RetryPolicy",
    "RunError",
    "RunInfo",
    "RunLimits",
    "RunRecord",
    "RunResult",
    "SimulatedBackend",
    "SimulatedClient",
    "StorageError",
    "Subtask",
    "SubtaskRecord",
    "SubtaskRef",
    "SubtaskStatus",
    "TableEstimator",
    "ThompsonEstimator",
    "UserError",
    "Workflow",
    "WorkflowError",
    "arun",
    "describe_beliefs",
    "run",
    "simulate",
]
