"""Persistence for budgetflow: the SQL recorder, the read-side queries and the Redis ledger.

- `SqlRecorder`: the `orchestrator.records.Recorder` for SQLite or PostgreSQL.
- `list_runs`, `get_run`, `build_call_tree`: what the CLI and the web UI read;
  `search_runs`: runs filtered, sorted and paged by a cursor (the HTTP API).
- `find_abandoned`, `mark_abandoned`: runs whose process died (stale heartbeat).
- `learn_estimates`: empirical (subtask, model) estimates from recorded runs.
- `extract_examples`, `iter_examples`: every recorded attempt as a typed training
  example (`AttemptExample`; censored, error and lost attempts kept apart).
- `fit_estimator`, `LearnedEstimator`, `EstimatorArtifact`, `HashingEmbedder`: the
  per-input learned estimator (success, output tokens and latency from a request's
  features; `storage.learned_estimator`).
- `save_artifact`, `load_artifact`, `list_artifacts`: those estimators stored in the
  database, numbered per workflow (`storage.estimator_artifacts`).
- `create_token`, `verify_token`, `list_tokens`, `revoke_token`: the HTTP API's
  scoped tokens, stored as hashes (`storage.tokens`).
- `upgrade`: bring a database's schema to the newest Alembic revision.
- `RedisLedger`: one run's budget shared by worker processes.
"""

from storage._engine import make_engine, parse_database_url
from storage.abandoned import AbandonedRun, find_abandoned, mark_abandoned
from storage.estimator_artifacts import list_artifacts, load_artifact, save_artifact
from storage.learned_estimator import EstimatorArtifact, HashingEmbedder, LearnedEstimator, fit_estimator
from storage.learning import learn_estimates
from storage.migrate import upgrade
from storage.queries import (
    AttemptNode,
    CallNode,
    CallTree,
    RunDetail,
    RunSummary,
    build_call_tree,
    get_run,
    list_runs,
)
from storage.redis_ledger import LedgerRetry, RedisLedger
from storage.run_search import RunPage, search_runs
from storage.sql_recorder import SqlRecorder
from storage.tokens import NewToken, TokenInfo, create_token, list_tokens, revoke_token, verify_token
from storage.training_data import AttemptExample, AttemptOutcome, Embedder, extract_examples, iter_examples

__all__ = [
    "AbandonedRun",
    "AttemptExample",
    "AttemptNode",
    "AttemptOutcome",
    "CallNode",
    "CallTree",
    "Embedder",
    "EstimatorArtifact",
    "HashingEmbedder",
    "LearnedEstimator",
    "LedgerRetry",
    "NewToken",
    "RedisLedger",
    "RunDetail",
    "RunPage",
    "RunSummary",
    "SqlRecorder",
    "TokenInfo",
    "build_call_tree",
    "create_token",
    "extract_examples",
    "find_abandoned",
    "fit_estimator",
    "get_run",
    "iter_examples",
    "learn_estimates",
    "list_artifacts",
    "list_runs",
    "list_tokens",
    "load_artifact",
    "make_engine",
    "mark_abandoned",
    "parse_database_url",
    "revoke_token",
    "save_artifact",
    "search_runs",
    "upgrade",
    "verify_token",
]
