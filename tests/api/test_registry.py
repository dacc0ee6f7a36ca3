"""Registering workflows by module path, the `api_workflows` setting, and the per-run event buffer."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from budgetflow.loader import load_workflow_module
from budgetflow.settings import Settings, load_settings
from orchestrator.errors import ConfigError
from orchestrator.events import LedgerView, RunFinished
from orchestrator.records import RunRecord
from web.api import RegisteredWorkflow, WorkflowRegistry
from web.api.live import LiveEvents


def test_api_workflows_come_from_the_environment_or_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUDGETFLOW_CONFIG", raising=False)
    monkeypatch.setenv(
        "BUDGETFLOW_API_WORKFLOWS", " examples.code_pipeline, examples.hard_step,,examples.code_pipeline"
    )
    assert load_settings(cwd=tmp_path).api_workflows == ("examples.code_pipeline", "examples.hard_step")
    monkeypatch.delenv("BUDGETFLOW_API_WORKFLOWS")
    (tmp_path / "budgetflow.toml").write_text('api_workflows = ["tests.api.quick_workflow"]\n')
    assert load_settings(cwd=tmp_path).api_workflows == ("tests.api.quick_workflow",)
    flag = load_settings({"api_workflows": ["examples.hard_step"]}, cwd=tmp_path)
    assert flag.api_workflows == ("examples.hard_step",)
    monkeypatch.setenv("BUDGETFLOW_API_WORKFLOWS", "examples/code_pipeline.py")
    with pytest.raises(
        ConfigError, match=re.escape("`BUDGETFLOW_API_WORKFLOWS` names `examples/code_pipeline.py`")
    ):
        load_settings(cwd=tmp_path)


def test_a_module_is_loaded_as_a_workflow_file_is() -> None:
    loaded = load_workflow_module("tests.api.quick_workflow")
    assert loaded.workflow.name == "quick" and loaded.inputs == {"topic": "parsing CSV"}
    assert loaded.path.name == "quick_workflow.py" and loaded.deadline_s == 600
    with pytest.raises(ConfigError, match=re.escape("`tests.api.conftest` must define `workflow = Workflow")):
        load_workflow_module("tests.api.conftest")
    with pytest.raises(ConfigError, match="not a Python module path"):
        load_workflow_module("tests/api/quick_workflow.py")


def test_the_registry_refuses_two_workflows_with_one_name() -> None:
    settings = Settings()
    registered = RegisteredWorkflow.of(
        load_workflow_module("tests.api.quick_workflow"), settings, module="tests.api.quick_workflow"
    )
    assert registered.simulated == ("small", "large") and registered.models == ["large", "small"]
    with pytest.raises(ConfigError, match="workflow `quick` is registered twice"):
        WorkflowRegistry([registered, registered])
    with pytest.raises(KeyError, match="did you mean `quick`"):
        WorkflowRegistry([registered]).get("quik")


def _finished(seq: int) -> RunFinished:
    run = RunRecord(
        run_id="r",
        workflow="w",
        policy="p",
        budget_usd=Decimal(1),
        deadline_s=None,
        seed=0,
        simulated=True,
        started_at=datetime.now(UTC),
    )
    return RunFinished(
        run_id="r",
        seq=seq,
        at_s=0.0,
        ledger=LedgerView(budget_nano=1, spent_nano=0, reserved_nano=0),
        run=run,
    )


async def test_the_buffer_keeps_the_newest_events_and_followers_resume_after_a_seq() -> None:
    events = LiveEvents("r", capacity=3)
    for seq in range(10):
        events.publish(_finished(seq))
    events.close()
    kept = [item.seq for item in [i async for i in events.follow()] if item is not None]
    assert kept[-1] == 9 and len(kept) <= 6 and kept == sorted(kept)
    after = [i.seq async for i in events.follow(7) if i is not None]
    assert after == [8, 9]


async def test_a_follower_waits_for_new_events_and_ends_when_the_run_does() -> None:
    events = LiveEvents("r")
    seen: list[int] = []

    async def follow() -> None:
        async for item in events.follow(idle_s=0.01):
            if item is not None:
                seen.append(item.seq)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    events.publish(_finished(0))
    events.publish(_finished(1))
    await asyncio.sleep(0.02)
    events.close()
    await asyncio.wait_for(task, 5)
    assert seen == [0, 1] and events.finished
