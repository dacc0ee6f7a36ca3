"""Every top-level package has an explicit, sorted public surface whose names exist."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def _isort_key(name: str) -> tuple[int, str]:
    """isort-style order, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


PACKAGES = ["orchestrator", "agents", "policies", "storage", "web", "budgetflow"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert exported == sorted(exported, key=_isort_key), f"`{name}.__all__` is not sorted"
    assert len(set(exported)) == len(exported)
    for attr in exported:
        assert getattr(module, attr) is not None, f"`{name}.{attr}` is exported but missing"


def test_core_imports_no_database_web_or_redis_and_not_litellm() -> None:
    """The core stays clean, and importing it is fast: no litellm, SQLAlchemy, FastAPI or redis."""
    code = (
        "import sys, orchestrator, policies;"
        "bad = [m for m in ('litellm', 'sqlalchemy', 'fastapi', 'redis', 'langgraph') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
