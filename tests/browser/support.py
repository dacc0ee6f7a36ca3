"""What the browser tests share besides fixtures: the served API, following its runs, the database's view.

Everything here waits on something the server says (a line it prints, an event it streams),
never on the clock alone.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Final

import httpx
from playwright.sync_api import Page

from storage import RunSummary, list_runs

__all__ = [
    "FINAL_OUTCOMES",
    "Screenshot",
    "Server",
    "ServerOutput",
    "follow_events",
    "log_in",
    "parse_usd",
    "recorded_summary",
    "submit_run",
    "wait_until_ended",
    "wait_until_started",
]

FINAL_OUTCOMES: Final = (
    "completed",
    "budget_exhausted",
    "deadline_exceeded",
    "failed",
    "cancelled",
    "abandoned",
)
"""The outcomes a run ends with (`running` and `queued` are not final)."""

Screenshot = Callable[[Page, str], Path]
"""`screenshot(page, name)` (a fixture): save the whole page as a PNG artefact; its path."""

_STREAM_TIMEOUT: Final = httpx.Timeout(10.0, read=60.0)
"""An event stream sends a keep-alive comment every 15 s: a minute of silence is a dead server."""


@dataclass(frozen=True, kw_only=True)
class Server:
    """A `budgetflow serve` process of the tests."""

    base_url: str
    """`http://127.0.0.1:PORT`, as it printed it."""
    login_url: str
    """The login URL it printed: `.../login?token=bf_...` (an admin token for 24 hours)."""
    database_url: str
    """Its SQLite database (runs and tokens)."""
    admin_token: str
    """An `admin` API token of that database, for `Authorization: Bearer` calls."""
    pid: int
    """The process id (it is stopped by this id)."""


class ServerOutput:
    """The lines a process prints, read on a thread of their own so that its pipe never fills."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[str] = []
        self._ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                with self._changed:
                    self._lines.append(line)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    @property
    def text(self) -> str:
        """Everything printed so far."""
        with self._changed:
            return "".join(self._lines)

    def wait_for(self, pattern: re.Pattern[str], *, timeout_s: float) -> re.Match[str]:
        """The first match of `pattern` in a printed line, waiting for it to be printed.

        Raises:
            AssertionError: the process closed its output, or `timeout_s` passed, first.
        """
        deadline = time.monotonic() + timeout_s
        with self._changed:
            seen = 0
            while True:
                for line in self._lines[seen:]:
                    if match := pattern.search(line):
                        return match
                seen = len(self._lines)
                if self._ended:
                    raise AssertionError(
                        f"the server ended before printing /{pattern.pattern}/:\n{self.text}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no /{pattern.pattern}/ after {timeout_s} s:\n{self.text}")
                self._changed.wait(left)

    def join(self, timeout_s: float) -> None:
        """Wait for the process to close its output."""
        self._thread.join(timeout_s)


def log_in(page: Page, login_url: str) -> None:
    """Open `login_url` in `page` and wait until its page has moved on (the session cookies set)."""
    response = page.goto(login_url)
    assert response is not None, login_url
    assert response.status == 200, response.text()
    page.wait_for_url(lambda url: "/login" not in url)


def submit_run(api: httpx.Client, workflow: str, **fields: Any) -> str:
    """`POST /runs` of `workflow` with `fields` (`inputs`, `seed`, ...); the new run's id."""
    response = api.post("/runs", json={"workflow": workflow, **fields})
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


@contextlib.contextmanager
def _events(api: httpx.Client, run_id: str) -> Iterator[Iterator[str]]:
    """The names of the run's server-sent events, as they come."""
    with api.stream("GET", f"/runs/{run_id}/events", timeout=_STREAM_TIMEOUT) as response:
        assert response.status_code == 200, response.read().decode()
        yield (
            line.removeprefix("event:").strip() for line in response.iter_lines() if line.startswith("event:")
        )


def follow_events(api: httpx.Client, run_id: str) -> list[str]:
    """The names of all the run's events, read until its stream ends (after `RunFinished`)."""
    with _events(api, run_id) as names:
        return list(names)


def wait_until_started(api: httpx.Client, run_id: str) -> None:
    """Return once the run's `RunStarted` is streamed: it is recorded and running."""
    with _events(api, run_id) as names:
        for name in names:
            if name == "RunStarted":
                return
    raise AssertionError(f"the event stream of run `{run_id}` ended without `RunStarted`")


def wait_until_ended(api: httpx.Client, run_id: str) -> str:
    """Follow the run's events to their end; its final outcome as the API reports it.

    The executor records a run's end before it emits `RunFinished`, so the database
    holds the final state once this returns.
    """
    names = follow_events(api, run_id)
    assert names and names[-1] == "RunFinished", f"run `{run_id}`: {names}"
    outcome: str = api.get(f"/runs/{run_id}").raise_for_status().json()["run"]["outcome"]
    assert outcome in FINAL_OUTCOMES, f"run `{run_id}` streamed `RunFinished` but is `{outcome}`"
    return outcome


def recorded_summary(database_url: str, run_id: str) -> RunSummary:
    """The run as the database holds it: outcome, spend, model calls (as `budgetflow runs list` counts)."""
    for summary in list_runs(database_url, limit=1000):
        if summary.run_id == run_id:
            return summary
    raise AssertionError(f"run `{run_id}` is not recorded in `{database_url}`")


def parse_usd(text: str) -> Decimal:
    """`$0.001234` (or `$1,234.5`) as a `Decimal`."""
    match = re.fullmatch(r"\s*\$\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*", text)
    assert match, f"`{text}` is not an amount in dollars like `$0.001234`"
    return Decimal(match.group(1).replace(",", ""))
