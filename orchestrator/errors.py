"""The one exception tree of budgetflow.

```text
BudgetflowError                     root: catch this to catch everything we raise
├── UserError                       a mistake in what the user gave us; fix the input
│   ├── WorkflowError               the workflow definition is invalid (cycle, unknown dependency, ...)
│   ├── ConfigError                 settings, catalog or CLI flags are invalid
│   └── PoolFormatError             a DAG-pool JSONL line is malformed
└── RunError                        something failed while a run was executing
    ├── BudgetExhausted             a reservation does not fit in what is left of the budget
    ├── DeadlineExceeded            the run's deadline passed
    ├── ProviderError               a model call failed (timeout, 429, 5xx, malformed response)
    │   └── ReplicaUnavailable      no healthy vLLM replica can take the request
    ├── CheckError                  a check itself crashed (not: the attempt failed the check)
    └── StorageError                the recorder could not write or read
```

Messages say what is wrong, which value, and what to do, with identifiers in backticks.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "BudgetExhausted",
    "BudgetflowError",
    "CheckError",
    "ConfigError",
    "DeadlineExceeded",
    "PoolFormatError",
    "ProviderError",
    "ReplicaUnavailable",
    "RunError",
    "StorageError",
    "UserError",
    "WorkflowError",
    "did_you_mean",
]


class BudgetflowError(Exception):
    """Root of every exception budgetflow raises on purpose."""


class UserError(BudgetflowError):
    """The input is wrong; the message says how to fix it."""


class WorkflowError(UserError):
    """The workflow definition is invalid."""


class ConfigError(UserError):
    """Settings, the model catalog or command-line flags are invalid."""


class PoolFormatError(UserError):
    """A line of a DAG-pool JSONL file is malformed."""


class RunError(BudgetflowError):
    """A failure while a run executes."""


class BudgetExhausted(RunError):
    """A reservation does not fit in what is left of the run's budget."""


class DeadlineExceeded(RunError):
    """The run's deadline passed."""


class ProviderError(RunError):
    """A model call failed.

    Attributes:
        retryable: whether retrying the same call may succeed (timeouts, 429, 5xx).
        status_code: the HTTP status when the provider answered with one.
    """

    def __init__(self, message: str, *, retryable: bool, status_code: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status_code = status_code


class ReplicaUnavailable(ProviderError):
    """No healthy replica of a vLLM pool can take the request.

    Raised after the pool waited for one (`unavailable_wait_s`), so by default it is
    not retried: a retry would only wait again and record one more failed call.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable, status_code=None)


class CheckError(RunError):
    """A check crashed while judging an attempt (a bug in the check, not a failed attempt)."""


class StorageError(RunError):
    """The recorder could not write or read a record."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``"; did you mean `x`?"`` for the closest known name, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""
