"""docs/ledger.md's Python example runs as written, against the session's redis-server."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

pytestmark = pytest.mark.redis

DOC = Path(__file__).resolve().parents[2] / "docs" / "ledger.md"


async def test_ledger_doc_example_runs(redis_client: Redis, run_id: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1, "docs/ledger.md should have one Python example"
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], str(DOC), "exec"), namespace)
    example = namespace["start_and_join"]
    assert callable(example)
    run: Callable[[Redis, str], Awaitable[None]] = example
    await run(redis_client, run_id)
