"""`budgetflow runs list | show | mark-abandoned` on recorded runs: every state, 80 columns, prefixes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa

from budgetflow.cli import main
from orchestrator.records import AttemptStatus, Outcome
from storage import make_engine
from tests.cli.conftest import capture, record_run


async def test_show_draws_running_and_not_started_attempts(db: str) -> None:
    await record_run(
        db,
        "a1b2c3d4e5f6",
        outcome=Outcome.RUNNING,
        attempts=(AttemptStatus.PASSED, AttemptStatus.RUNNING, AttemptStatus.NOT_STARTED),
    )
    console, out = capture()
    assert main(["--db", db, "runs", "show", "a1b2c3d4e5f6"], console=console) == 0
    text = out.getvalue()
    assert "small #0.1  running" in text and "#0.2  not_started" in text
    assert "outcome      running" in text


async def test_list_at_80_columns_shows_ids_whole_and_show_takes_a_prefix(db: str) -> None:
    long_name = "a-workflow-with-a-rather-long-name-that-does-not-fit"
    await record_run(db, "abc111aaaaaa", workflow=long_name, outcome=Outcome.DEADLINE_EXCEEDED)
    await record_run(db, "abc222bbbbbb", workflow=long_name)
    console, out = capture(width=80)
    assert main(["runs", "list", "--db", db], console=console) == 0
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "abc111aaaaaa" in text and "abc222bbbbbb" in text
    assert "deadline_exceeded" in text
    assert "model calls" in _header(text)
    assert "a-workflow" in text and "…" in text  # the name is shortened, never the id

    console, out = capture(width=80)
    assert main(["runs", "show", "abc1", "--db", db], console=console) == 0
    assert "abc111aaaaaa" in out.getvalue()

    console, out = capture(width=80)
    assert main(["runs", "show", "abc", "--db", db], console=console) == 2
    message = " ".join(out.getvalue().split())
    assert "the run id prefix `abc` is ambiguous: it starts `abc" in message
    assert "abc111aaaaaa" in message and "abc222bbbbbb" in message and "give more characters" in message


async def test_wide_list_shows_policy_budget_and_makespan(db: str) -> None:
    await record_run(db, "0123456789ab")
    console, out = capture(width=140)
    assert main(["--db", db, "runs", "list"], console=console) == 0
    header = _header(out.getvalue())
    for column in (
        "run",
        "workflow",
        "policy",
        "outcome",
        "spent $",
        "budget $",
        "makespan s",
        "model calls",
    ):
        assert column in header


async def test_unknown_workflow_in_list_names_the_recorded_ones(db: str) -> None:
    await record_run(db, "0123456789ab", workflow="code-pipeline")
    console, out = capture()
    assert main(["--db", db, "runs", "list", "--workflow", "code-pipelin"], console=console) == 2
    text = out.getvalue()
    assert "no runs of workflow `code-pipelin`" in text and "did you mean `code-pipeline`?" in text


async def test_overrun_is_shown_with_spend_only_when_there_is_one(db: str) -> None:
    await record_run(db, "over00000000", spent=Decimal("0.6"), budget=Decimal("0.6"), overrun=Decimal("0.26"))
    await record_run(db, "fine00000000", spent=Decimal("0.01"))
    console, out = capture()
    assert main(["--db", db, "runs", "show", "over"], console=console) == 0
    assert (
        "spent        $0.600000 of $0.6 (100.0%) + $0.260000 OVERRUN billed above the budget"
        in out.getvalue()
    )
    console, out = capture()
    assert main(["--db", db, "runs", "show", "fine"], console=console) == 0
    assert "OVERRUN" not in out.getvalue()
    console, out = capture()
    assert main(["--db", db, "runs", "list"], console=console) == 0
    lines = out.getvalue().splitlines()
    assert "overrun $" in _header(out.getvalue())
    assert "0.260000" in next(line for line in lines if line.startswith("over00000000"))


async def test_abandoned_runs_are_shown_and_closed(db: str) -> None:
    await record_run(db, "dead00000000", outcome=Outcome.RUNNING, attempts=(AttemptStatus.RUNNING,))
    await record_run(db, "live00000000", outcome=Outcome.RUNNING, attempts=(AttemptStatus.RUNNING,))
    engine = make_engine(db)
    with engine.begin() as connection:  # the process of `dead…` stopped ten minutes ago
        connection.execute(
            sa.text("UPDATE runs SET heartbeat_at = :at, started_at = :at WHERE run_id = 'dead00000000'"),
            {"at": datetime.now(UTC) - timedelta(minutes=10)},
        )
    engine.dispose()
    console, out = capture()
    assert main(["--db", db, "runs", "list"], console=console) == 0
    rows = {line.split()[0]: line for line in out.getvalue().splitlines() if line[:4] in ("dead", "live")}
    assert "abandoned" in rows["dead00000000"] and "running" in rows["live00000000"]

    console, out = capture()
    assert main(["--db", db, "runs", "show", "dead"], console=console) == 0
    assert "outcome      abandoned" in out.getvalue() and "mark-abandoned" in out.getvalue()

    console, out = capture()
    assert main(["--db", db, "runs", "mark-abandoned", "live"], console=console) == 2
    assert "run `live00000000` is not abandoned: it is `running` and sent a heartbeat" in out.getvalue()

    console, out = capture()
    assert main(["--db", db, "runs", "mark-abandoned"], console=console) == 0
    text = out.getvalue()
    assert "closed 1 abandoned run as `abandoned`" in text and "dead00000000" in text and "0.010000" in text
    assert "live00000000" not in text.split("Inspect one")[0]

    console, out = capture()
    assert main(["--db", db, "runs", "mark-abandoned"], console=console) == 0
    assert "no abandoned runs" in out.getvalue()


async def test_an_attempt_without_model_calls_is_not_shown_as_a_model(db: str) -> None:
    await record_run(db, "func00000000", model_calls=False)
    console, out = capture()
    assert main(["--db", db, "runs", "show", "func"], console=console) == 0
    text = out.getvalue()
    assert "no model call #0.0  passed" in text and "small #0.0" not in text
    assert "model calls  0" in text


def _header(listing: str) -> str:
    """The header of a run list, its stacked words (`model` over `calls`) joined."""
    lines = listing.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("run "))
    above, line = lines[at - 1], lines[at]
    words = line.split("  ")
    for i, ch in enumerate(above):
        if ch != " " and (i == 0 or above[i - 1] == " "):
            word = above[i:].split()[0]
            below = line[i:].split()[0] if line[i:].strip() else ""
            words.append(f"{word} {below}")
    return "  ".join(words)


def test_the_summary_shows_an_overrun_beside_the_spend_only_when_there_is_one() -> None:
    from budgetflow._format import spend_text

    assert spend_text(Decimal("0.6"), Decimal("0.60"), Decimal("0.26")).plain == (
        "$0.600000 of $0.6 (100.0%) + $0.260000 OVERRUN billed above the budget"
    )
    assert spend_text(Decimal("0.3"), Decimal("0.60")).plain == "$0.300000 of $0.6 (50.0%)"
