"""Fixtures of the browser tests: `budgetflow serve` in a process of its own, Debian's chromium
driven by Playwright, an admin token for the API, and screenshots kept as artefacts.

Each test module gets one server (its own SQLite database, the API tests' workflows and
`tests.browser.echo_workflow`, simulated latencies a hundred times shorter) and one
browser; each test gets a fresh browser context (no cookies). Chromium is Debian's
(`bash scripts/setup_browser.sh` installs it; `BUDGETFLOW_CHROMIUM` names another):
`playwright install` is not used. When it is missing the `browser` tests skip, unless
`BUDGETFLOW_REQUIRE_BROWSER` is set (as `make test-browser` does): then they fail.

Screenshots go to `BUDGETFLOW_SCREENSHOTS`, else `tests/browser/artifacts/` (git-ignored),
named after the test.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from storage import create_token
from tests.api.conftest import TIME_SCALE, WORKFLOW_MODULES
from tests.browser.support import Screenshot, Server, ServerOutput, log_in

ROOT = Path(__file__).resolve().parents[2]
BROWSER_WORKFLOWS = (*WORKFLOW_MODULES, "tests.browser.echo_workflow")
"""The workflows the test server registers: `quick`, `slow` and `echo`."""
TIMEOUT_MS = 20_000
"""How long Playwright waits for a page, an element or a condition."""

_API_LINE = re.compile(r"budgetflow API on (http://127\.0\.0\.1:\d+)")
_LOGIN_LINE = re.compile(r"(http://127\.0\.0\.1:\d+/login\?token=bf_[\w-]+)")


def chromium_path() -> Path:
    """The chromium the tests drive."""
    return Path(os.environ.get("BUDGETFLOW_CHROMIUM") or "/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`budgetflow serve --port 0` on a fresh SQLite database; stopped with SIGINT by its pid."""
    workdir = tmp_path_factory.mktemp("serve")
    database_url = f"sqlite:///{workdir / 'runs.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETFLOW_", "OPENAI_", "OTEL_"))}
    env |= {"PYTHONPATH": str(ROOT), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "budgetflow", "serve", "--port", "0", "--db", database_url]
    command += ["--time-scale", str(TIME_SCALE)]
    for module in BROWSER_WORKFLOWS:
        command += ["--workflow", module]
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    output = ServerOutput(process.stdout)
    try:
        base_url = output.wait_for(_API_LINE, timeout_s=60).group(1)
        login_url = output.wait_for(_LOGIN_LINE, timeout_s=60).group(1)
        # the server created and migrated the database before printing its login URL
        admin = create_token(database_url, name="browser tests", scopes=["admin"]).token
        yield Server(
            base_url=base_url,
            login_url=login_url,
            database_url=database_url,
            admin_token=admin,
            pid=process.pid,
        )
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
            output.join(timeout_s=10)
            process.stdout.close()


@pytest.fixture(scope="module")
def base_url(server: Server) -> str:
    """The test server's base URL."""
    return server.base_url


@pytest.fixture(scope="module")
def login_url(server: Server) -> str:
    """The login URL the test server printed."""
    return server.login_url


@pytest.fixture(scope="module")
def database_url(server: Server) -> str:
    """The test server's database, to compare what pages show with what was recorded."""
    return server.database_url


@pytest.fixture(scope="module")
def admin_token(server: Server) -> str:
    """An `admin` API token of the test server."""
    return server.admin_token


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[httpx.Client]:
    """A client of the test server's API, with the admin token as its bearer token."""
    headers = {"Authorization": f"Bearer {server.admin_token}"}
    with httpx.Client(base_url=server.base_url, headers=headers, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium under Playwright (headless, `--no-sandbox`: the tests run as root)."""
    chromium = chromium_path()
    if not os.access(chromium, os.X_OK):
        reason = f"chromium is missing at `{chromium}`; `bash scripts/setup_browser.sh` installs it"
        if os.environ.get("BUDGETFLOW_REQUIRE_BROWSER"):
            pytest.fail(f"BUDGETFLOW_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser, server: Server) -> Iterator[BrowserContext]:
    """A fresh browser context (no cookies, no storage) on the test server."""
    made = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 900})
    made.set_default_timeout(TIMEOUT_MS)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A page of a fresh context, not logged in."""
    return context.new_page()


@pytest.fixture
def logged_in_page(page: Page, server: Server) -> Page:
    """A page whose context logged in with the server's printed login URL."""
    log_in(page, server.login_url)
    return page


def _file_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def _artifacts_dir() -> Path:
    configured = os.environ.get("BUDGETFLOW_SCREENSHOTS")
    return Path(configured) if configured else Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Screenshot:
    """Save a page as `<test>-<name>.png` in the artefacts directory."""
    directory = _artifacts_dir()
    test = _file_name(request.node.name)

    def save(page: Page, name: str) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{test}-{_file_name(name)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
