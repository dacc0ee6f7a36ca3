"""Shared budget definitions: checked, stored, matched to runs; `budgetflow budgets` in-process."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from budgetflow.cli import main
from orchestrator.errors import ConfigError
from storage.migrate import upgrade
from storage.shared_budgets import (
    BudgetScope,
    RunScope,
    budgets_for,
    check_budget,
    create_budget,
    delete_budget,
    list_budgets,
)
from storage.shared_ledger import SharedBudgetLedger
from tests.cli.conftest import capture


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "has space", "budget name `has space`"),
        ("scope", "group:x", "budget scope `group:x`"),
        ("scope", "team:", "budget scope `team:`"),
        ("limit_usd", "ten", "budget limit `ten`"),
        ("limit_usd", "-1", "must be positive"),
        ("window", "week", "budget window `week`"),
        ("on_cross", "stop", "--on-cross `stop`"),
    ],
)
def test_a_bad_definition_says_which_value(field: str, value: str, message: str) -> None:
    given: dict[str, object] = {
        "name": "ok",
        "scope": "team:t",
        "limit_usd": "1",
        "window": None,
        "on_cross": "none",
        "cross_at": 0.95,
    }
    given[field] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_budget(**given)  # type: ignore[arg-type]


def test_definitions_are_stored_and_matched_to_runs(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    create_budget(sqlite_url, name="team-r", scope="team:research", limit_usd="25", window="day")
    create_budget(sqlite_url, name="flow-qa", scope="workflow:qa", limit_usd="3.5", on_cross="pause")
    create_budget(sqlite_url, name="token-7", scope="token:7", limit_usd="1")
    with pytest.raises(ConfigError, match="a budget named `team-r` exists"):
        create_budget(sqlite_url, name="team-r", scope="team:other", limit_usd="1")
    assert [b.name for b in list_budgets(sqlite_url)] == ["flow-qa", "team-r", "token-7"]
    run = RunScope(workflow="qa", team="research", token="7")
    assert [b.name for b in budgets_for(sqlite_url, run)] == ["flow-qa", "team-r", "token-7"]
    assert [b.name for b in budgets_for(sqlite_url, RunScope(workflow="qa"))] == ["flow-qa"]
    assert budgets_for(sqlite_url, RunScope(workflow="other", team="ops")) == []
    gone = delete_budget(sqlite_url, "flow-qa")
    assert gone.scope == BudgetScope(kind="workflow", value="qa") and gone.on_cross == "pause"
    with pytest.raises(ConfigError, match="no budget is named `flow-qa`"):
        delete_budget(sqlite_url, "flow-qa")
    [again] = budgets_for(sqlite_url, RunScope(workflow="x", team="research"))
    assert again.limit_nano == 25_000_000_000 and again.window == "day"


@pytest.mark.redis
async def test_the_cli_defines_lists_and_deletes(
    sqlite_url: str, redis_url: str, redis_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BUDGETFLOW_REDIS_URL", redis_url)
    console, buf = capture(width=200)
    name = f"b{secrets.token_hex(3)}"
    argv = ["--db", sqlite_url, "budgets", "create", "--name", name, "--scope", "team:t", "--limit-usd", "2"]
    assert (
        await asyncio.to_thread(main, [*argv, "--window", "month", "--on-cross", "pause"], console=console)
        == 0
    )
    assert f"budget `{name}`: 2 USD per month (UTC) above the runs of `team:t`" in buf.getvalue()
    [made] = list_budgets(sqlite_url)
    ledger = await SharedBudgetLedger.create(redis_client, secrets.token_hex(6), 10**9, budgets=[made])
    held = await ledger.reserve(600_000_000)
    assert held is not None
    await ledger.settle(held, 500_000_000)
    assert await ledger.reserve(250_000_000) is not None
    console, buf = capture(width=200)
    assert await asyncio.to_thread(main, ["--db", sqlite_url, "budgets", "list"], console=console) == 0
    row = next(line for line in buf.getvalue().splitlines() if line.startswith(name))
    assert row.split() == [
        name,
        "team:t",
        datetime.now(UTC).strftime("%Y-%m"),
        "2",
        "0.5",
        "0.25",
        "25%",
        "pause",
        "at",
        "95%",
    ]
    console, buf = capture()
    assert (
        await asyncio.to_thread(main, ["--db", sqlite_url, "budgets", "delete", name], console=console) == 0
    )
    assert list_budgets(sqlite_url) == []
    console, buf = capture()
    assert await asyncio.to_thread(main, [*argv[:4], "--name", "x y", *argv[6:]], console=console) == 2
    assert "budget name `x y`" in buf.getvalue()
