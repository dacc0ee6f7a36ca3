"""The web dashboard, served by the API app: overview, runs, run detail (live), models, pool.

`mount_dashboard(app)` adds the pages under `/ui` (and `/` redirecting there) and their
stylesheet and script under `/ui/static`. Pages need scope `read` from the app's
authorizer (`app.state.authorizer`), as the API does; see docs/dashboard.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from web.dashboard._pages import pages_router

__all__ = ["mount_dashboard"]


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard from `app`."""
    app.include_router(pages_router())
    app.mount("/ui/static", StaticFiles(directory=Path(__file__).parent / "static"), name="ui-static")
