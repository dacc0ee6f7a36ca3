"""What the routes share: built by the app factory and its lifespan, kept on `app.state.api`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from sqlalchemy.engine import Engine

from budgetflow.settings import Settings
from web.api.registry import WorkflowRegistry
from web.api.runner import RunQueue

__all__ = ["ApiState", "api_state"]


@dataclass(kw_only=True)
class ApiState:
    """The app's services."""

    settings: Settings
    """The settings it was built with."""
    workflows: WorkflowRegistry
    """What it may run."""
    engine: Engine
    """The runs' database (read side)."""
    queue: RunQueue
    """Where submitted runs go."""
    cache: dict[str, tuple[float, Any]] = field(default_factory=dict)
    """Answers kept for a few seconds, by name (when they were made, what they were)."""
    relay: Any = None
    """An async Redis client to follow the events of runs executed elsewhere (`web.api.relay`),
    when runs go to workers and Redis is set; else `None`."""


def api_state(request: Request) -> ApiState:
    """The services of the app serving `request` (a FastAPI dependency)."""
    state: ApiState = request.app.state.api
    return state
