"""Submit runs to the budgetflow HTTP API and follow each to its end (the compose `demo` service).

    python deploy/submit_run.py [WORKFLOW ...] [--api URL] [--budget USD]

The token: this process shares the API's database (`BUDGETFLOW_DATABASE_URL`), so it
mints its own short-lived `submit` token with `budgetflow tokens create`, as an operator
would once for a client, and then talks to the API over HTTP only, as any client does:
`POST /runs` with `Authorization: Bearer ...`, then `GET /runs/{id}` until the run has
an outcome. Exit code: 0 when every run completed, 1 otherwise, 2 when the API or the
token could not be reached or made.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time

import httpx


class _Unavailable(Exception):
    """The API or the token could not be reached or made."""


_TOKEN = re.compile(r"\bbf_[A-Za-z0-9_-]{20,}")
_PENDING = {"queued", "running"}


def _mint_token() -> str:
    """A `submit` token valid for one hour, from `budgetflow tokens create` on the shared database."""
    name = f"demo-{int(time.time())}"
    out = subprocess.run(
        ["budgetflow", "tokens", "create", "--name", name, "--scope", "submit", "--expires-in", "1h"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = _TOKEN.search(out.stdout)
    if out.returncode != 0 or found is None:
        raise _Unavailable(
            f"`budgetflow tokens create` failed (exit {out.returncode}):\n{out.stdout}{out.stderr}"
        )
    return found.group(0)


def _wait_healthy(client: httpx.Client, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise _Unavailable(
                f"the API at `{client.base_url}` did not answer `/healthz` within {timeout_s:.0f} s"
            )
        time.sleep(1)


def _submit_and_follow(client: httpx.Client, workflow: str, budget: str | None) -> str:
    """Submit one run of `workflow`; return its outcome once it has one."""
    body: dict[str, str] = {"workflow": workflow}
    if budget is not None:
        body["budget_usd"] = budget
    answer = client.post("/runs", json=body)
    if answer.status_code != 202:
        print(f"`{workflow}`: POST /runs answered {answer.status_code}: {answer.text}", flush=True)
        return "refused"
    run_id = answer.json()["run_id"]
    print(f"`{workflow}`: run {run_id} accepted; following {client.base_url}/runs/{run_id}", flush=True)
    while True:
        detail = client.get(f"/runs/{run_id}")
        detail.raise_for_status()
        run = detail.json()["run"]
        outcome = str(run["outcome"])
        if outcome not in _PENDING:
            spent = f"spent ${run['spent_usd']} of ${run['budget_usd']}"
            print(f"`{workflow}`: run {run_id} {outcome}, {spent}", flush=True)
            return outcome
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    """Mint a token, submit one run per workflow, follow them; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflows", nargs="*", default=["code-pipeline"], metavar="WORKFLOW")
    parser.add_argument("--api", default="http://api:8000", help="the API's base URL")
    parser.add_argument("--budget", default=None, help="budget in USD (default: the workflow's)")
    args = parser.parse_args(argv)
    try:
        token = _mint_token()
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=args.api, headers=headers, timeout=30) as client:
            _wait_healthy(client, timeout_s=120)
            outcomes = [_submit_and_follow(client, name, args.budget) for name in args.workflows]
    except (_Unavailable, httpx.HTTPError) as exc:
        print(exc, file=sys.stderr)
        return 2
    return 0 if all(o == "completed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
