"""The HTTP API: submit runs of registered workflows, follow them live, read what they recorded.

`create_app(settings, authorizer=...)` builds the FastAPI app (see docs/api.md for the
routes); `budgetflow serve` runs it. Runs execute outside the request, through a
`RunQueue` (`InProcessRunner` on the embedded default).
"""

from web.api._access import AllowAll, Authorizer, Scope
from web.api.app import create_app
from web.api.registry import RegisteredWorkflow, WorkflowRegistry
from web.api.runner import InProcessRunner, RunOrder, RunQueue, Ticket

__all__ = [
    "AllowAll",
    "Authorizer",
    "InProcessRunner",
    "RegisteredWorkflow",
    "RunOrder",
    "RunQueue",
    "Scope",
    "Ticket",
    "WorkflowRegistry",
    "create_app",
]
