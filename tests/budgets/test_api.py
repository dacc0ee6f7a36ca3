"""The API refuses a run under a paused shared budget with 409 at submission, for the token
that submits it as for its workflow; runs outside that budget go on."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from redis.asyncio import Redis

from budgetflow.settings import Settings
from storage.shared_budgets import create_budget
from storage.tokens import create_token
from tests.api.conftest import TIME_SCALE, WORKFLOW_MODULES, asgi_client
from web.api import WorkflowRegistry, create_app
from web.auth import authorizer_for


async def _spend_all(redis_url: str, key: str, limit_nano: int) -> None:
    client = Redis.from_url(redis_url)
    try:
        await client.hset(key, mapping={"limit": limit_nano, "spent": limit_nano, "reserved": 0})
    finally:
        await client.aclose()


async def test_a_paused_budget_refuses_new_runs_of_its_scope_with_409(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'runs.db'}", api_workflows=WORKFLOW_MODULES, redis_url=redis_url
    )
    authorizer = authorizer_for(settings)  # migrates the database
    try:
        alice = create_token(settings.database_url, name="alice", scopes=["submit"])
        bob = create_token(settings.database_url, name="bob", scopes=["submit"])
        now = datetime.now(UTC)
        by_workflow = create_budget(
            settings.database_url,
            name="quick-month",
            scope="workflow:quick",
            limit_usd="1",
            window="month",
            on_cross="pause",
            now=now,
        )
        by_token = create_budget(
            settings.database_url,
            name="alice-day",
            scope=f"token:{alice.info.token_id}",
            limit_usd="1",
            window="day",
            on_cross="pause",
            now=now,
        )
        app = create_app(
            dataclasses.replace(settings),
            authorizer=authorizer,
            workflows=WorkflowRegistry.from_modules(settings.api_workflows, settings),
            sim_time_scale=TIME_SCALE,
        )
        async with asgi_client(app) as client:

            async def submit(token: str, workflow: str) -> tuple[int, str]:
                answer = await client.post(
                    "/runs",
                    json={"workflow": workflow, "budget_usd": "0.05"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                return answer.status_code, answer.text

            assert (await submit(bob.token, "slow"))[0] == 202  # nothing is spent yet
            await _spend_all(redis_url, by_token.key(now), by_token.limit_nano)
            status, text = await submit(alice.token, "slow")
            assert status == 409 and "alice-day" in text and "pause" in text
            assert (await submit(bob.token, "slow"))[0] == 202  # bob's runs are not under it
            await _spend_all(redis_url, by_workflow.key(now), by_workflow.limit_nano)
            status, text = await submit(bob.token, "quick")
            assert status == 409 and "quick-month" in text
            for run_id in [
                r["run_id"]
                for r in (await client.get("/runs", headers={"Authorization": f"Bearer {bob.token}"})).json()[
                    "runs"
                ]
            ]:
                await client.post(f"/runs/{run_id}/cancel", headers={"Authorization": f"Bearer {bob.token}"})
    finally:
        await authorizer.aclose()
