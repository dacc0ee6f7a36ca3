"""`budgetflow train`, `estimates artifacts`, and runs that load the newest trained estimator."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from budgetflow.cli import main
from budgetflow.services import open_run_services
from budgetflow.settings import load_settings
from orchestrator.estimator import TableEstimator
from orchestrator.records import AttemptStatus
from storage import get_run, list_runs
from storage.estimator_artifacts import list_artifacts, load_artifact
from storage.learned_estimator import LearnedEstimator
from tests.cli.conftest import capture
from tests.learning.records import Tried, record_run
from tests.learning.test_estimator_artifacts import _history

DOC = Path(__file__).resolve().parents[2] / "docs" / "learning.md"
START = datetime(2026, 11, 1, tzinfo=UTC)
WORKFLOW_FILE = """
from budgetflow import LLMAgent, Workflow
from examples._models import catalog, estimate

workflow = Workflow("fix-bug", inputs=["issue"])
workflow.subtask(
    "fix", LLMAgent(prompt="Fix: {issue}"), models=["mini", "4o"],
    estimates={
        "mini": estimate(0.9, 300, 3.0, spread=0.3, input_tokens=50),
        "4o": estimate(0.9, 300, 3.0, spread=0.3, input_tokens=50),
    },
)
inputs = {"issue": "it crashes"}
budget_usd = 0.5
deadline_s = 60
"""
RUN = ["--time-scale", "0.01", "--no-progress", "--policy", "threshold_router"]


async def _mini_always_fails(url: str, *, simulated: bool = True) -> None:
    """Runs of `fix-bug` where `mini` never passed `fix` and `4o` always did."""
    for r in range(6):
        await record_run(
            url,
            f"h{r}",
            [
                *[Tried(status=AttemptStatus.FAILED, subtask="fix", model="mini", ended_s=2.0)] * 4,
                *[Tried(status=AttemptStatus.PASSED, subtask="fix", model="4o", ended_s=3.0)] * 4,
            ],
            workflow="fix-bug",
            simulated=simulated,
            started_at=START + timedelta(hours=r),
        )


def _documented_output() -> list[str]:
    """The output of `budgetflow train --seed 3` that docs/learning.md shows."""
    blocks = re.findall(r"```text\n\$ budgetflow train --seed 3\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    return [line.rstrip() for line in str(blocks[0]).splitlines()]


def _cli(*argv: str, width: int = 80) -> tuple[int, str]:
    console, buf = capture(width=width)
    code = main(list(argv), console=console)
    return code, buf.getvalue()


async def test_train_stores_a_version_per_workflow_and_prints_its_held_out_metrics(sqlite_url: str) -> None:
    await _history(sqlite_url, runs=10, workflow="fix-bug")
    await _history(sqlite_url, runs=3, workflow="triage", seed=1)

    code, text = _cli("train", "--db", sqlite_url, "--seed", "3")
    assert code == 0, text
    assert max(len(line) for line in text.splitlines()) <= 80
    stored = {a.workflow: a for a in list_artifacts(sqlite_url)}
    assert {w: a.version for w, a in stored.items()} == {"fix-bug": 1, "triage": 1}
    fix = stored["fix-bug"]
    m = fix.metrics
    assert m.auroc is not None and m.brier is not None and m.ece is not None
    row = next(line.split() for line in text.splitlines() if line.startswith("fix-bug "))
    assert row == [
        "fix-bug",
        "1",
        "10",
        str(fix.data.examples),
        f"{m.auroc:.2f}",
        f"{m.brier:.3f}",
        f"{m.ece:.3f}",
        f"{m.output_tokens_mae:,.0f}",
        f"{m.output_tokens_p90_coverage:.2f}/{m.latency_p90_coverage:.2f}",
    ]
    assert fix.embedder == "hashing-256" and fix.data.runs == 10 and not fix.data.include_simulated
    assert "`triage` v1: 3 real runs" in " ".join(text.split())
    assert "none held out" in " ".join(text.split()), "3 runs are too few to hold some out"
    printed = [line.rstrip() for line in text.splitlines()]
    assert (
        _documented_output() == printed[: printed.index(next(x for x in printed if x.startswith("AUROC,")))]
    )

    code, text = _cli("train", "--db", sqlite_url, "--workflow", "fix-bug", "--embedder", "none")
    assert code == 0, text
    newest = load_artifact(sqlite_url, "fix-bug")
    assert newest is not None and newest.version == 2 and newest.embedder is None
    assert not any(f.startswith("embedding:") for f in newest.features)
    assert load_artifact(sqlite_url, "triage").version == 1  # type: ignore[union-attr]

    code, text = _cli("estimates", "artifacts", "--db", sqlite_url)
    assert code == 0, text
    listed = [line.split()[:2] for line in text.splitlines() if line.startswith(("fix-bug", "triage"))]
    assert listed == [["fix-bug", "2"], ["fix-bug", "1"], ["triage", "1"]]
    assert "runs load the newest: `fix-bug` v2, `triage` v1" in text


async def test_the_window_and_the_simulated_choice_pick_the_runs(sqlite_url: str) -> None:
    await _mini_always_fails(sqlite_url)
    await record_run(
        sqlite_url,
        "real",
        [Tried(status=AttemptStatus.PASSED, subtask="fix", model="mini")],
        workflow="fix-bug",
        started_at=START + timedelta(days=2),
    )

    assert _cli("train", "--db", sqlite_url)[0] == 0
    real = load_artifact(sqlite_url, "fix-bug")
    assert real is not None and (real.data.runs, real.data.include_simulated) == (1, False)
    assert _cli("train", "--db", sqlite_url, "--include-simulated", "--since", "2026-11-01T03:00")[0] == 0
    recent = load_artifact(sqlite_url, "fix-bug")
    assert recent is not None and recent.data.runs == 4 and recent.data.include_simulated
    assert recent.data.first_run_started_at == START + timedelta(hours=3)
    assert _cli("train", "--db", sqlite_url, "--only-simulated", "--limit", "2")[0] == 0
    newest_two = load_artifact(sqlite_url, "fix-bug")
    assert newest_two is not None and newest_two.version == 3 and newest_two.data.runs == 2
    assert newest_two.data.last_run_started_at == START + timedelta(hours=5)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--since", "last tuesday"], "--since `last tuesday` is not a date"),
        (["--include-simulated", "--only-simulated"], "not allowed with argument"),
        (["--workflow", "fixbug"], "did you mean"),
        (["--holdout", "1"], "--holdout"),
        (["--limit", "0"], "--limit"),
        (["--embedder", "bert"], "--embedder"),
        ([], "no attempts of real runs of any workflow match"),
    ],
)
async def test_bad_input_is_one_clear_error_and_exit_2(sqlite_url: str, argv: list[str], says: str) -> None:
    await _mini_always_fails(sqlite_url)
    code, text = _cli("train", "--db", sqlite_url, *argv, width=200)
    assert code == 2, text
    assert says in text and "Traceback" not in text
    assert text.startswith("error:")
    assert list_artifacts(sqlite_url) == []


def test_no_database_or_no_runs_is_an_error(tmp_path: Path, sqlite_url: str) -> None:
    code, text = _cli("train", "--db", f"sqlite:///{tmp_path / 'none.db'}", width=200)
    assert code == 2 and "does not exist" in text, text
    assert not (tmp_path / "none.db").exists()
    assert main(["runs", "list", "--db", sqlite_url], console=capture()[0]) == 0  # creates the schema
    code, text = _cli("train", "--db", sqlite_url, width=200)
    assert code == 2 and "no runs recorded" in text, text


async def test_estimates_show_puts_the_trained_success_next_to_the_pooled(sqlite_url: str) -> None:
    await _history(sqlite_url, runs=10, workflow="fix-bug")
    code, before = _cli("estimates", "show", "--db", sqlite_url)
    assert code == 0 and "trained" not in before
    assert _cli("train", "--db", sqlite_url)[0] == 0

    code, text = _cli("estimates", "show", "--db", sqlite_url)
    assert code == 0, text
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    header = next(line.split() for line in lines if line.startswith("subtask"))
    assert header[:5] == ["subtask", "model", "pooled", "learned", "trained"]
    artifact = load_artifact(sqlite_url, "fix-bug")
    assert artifact is not None
    from orchestrator.estimator import RequestFeatures

    estimator = LearnedEstimator(artifact)
    for line in lines:
        cells = line.split()
        if cells[:1] in (["plan"], ["fix"]):
            expected = estimator.success_probability(cells[0], cells[1], RequestFeatures())
            assert expected is not None and cells[4] == f"{expected:.2f}"
    assert "`fix-bug` v1" in " ".join(text.split())


def test_a_run_plans_with_the_newest_trained_estimator_by_default(sqlite_url: str, tmp_path: Path) -> None:
    path = tmp_path / "fix_bug.py"
    path.write_text(WORKFLOW_FILE)
    asyncio.run(_mini_always_fails(sqlite_url))  # `run` runs its own event loop

    def first_model(*flags: str, beliefs: str | None = None) -> tuple[str, str]:
        code, text = _cli("run", str(path), "--db", sqlite_url, *RUN, *flags, width=200)
        assert code == 0, text
        newest = get_run(sqlite_url, list_runs(sqlite_url, limit=1)[0].run_id)
        if beliefs is not None:
            assert newest.run.beliefs == beliefs, "the run's record says what it planned on"
            code, shown = _cli("runs", "show", newest.run.run_id, "--db", sqlite_url, width=200)
            rows = [line.split() for line in shown.splitlines()]
            assert code == 0 and ["beliefs", *beliefs.split()] in rows, shown
        return newest.decisions[0].allocation["fix"]["model"], text

    # (A run before training would teach the artifact that mini passed this very prompt.)
    code, text = _cli("train", "--db", sqlite_url, "--include-simulated")
    assert code == 0, text

    trained, text = first_model(beliefs="trained v1, then priors; updated in run")
    assert trained == "4o", "the artifact learned that mini never passes `fix`"
    assert "planner estimates from the trained estimator `fix-bug` v1" in text
    assert first_model("--estimator-version", "1")[0] == "4o"
    explored = "trained v1 explored (seed 7), then priors; updated in run"
    first_model("--explore", "--seed", "7", beliefs=explored)
    untrained, text = first_model("--no-learn", beliefs="priors; updated in run")
    assert untrained == "mini" and "trained estimator" not in text, "the priors alone favour the cheap model"

    code, text = _cli("run", str(path), "--db", sqlite_url, *RUN, "--estimator-version", "2", width=200)
    assert code == 2 and "no trained estimator version 2" in text, text
    code, text = _cli("run", str(path), "--db", sqlite_url, *RUN, "--no-learn", "--estimator-version", "1")
    assert code == 2 and "not allowed with argument" in text, text


async def test_services_choose_the_artifact_then_the_pooled_estimates(
    sqlite_url: str, tmp_path: Path
) -> None:
    from budgetflow.loader import load_workflow_file

    await _mini_always_fails(sqlite_url, simulated=False)
    settings = load_settings({"database_url": sqlite_url})
    path = tmp_path / "fix_bug.py"
    path.write_text(WORKFLOW_FILE)
    loaded = load_workflow_file(str(path))
    assert loaded.catalog is not None
    catalog = loaded.catalog

    async def chosen(learn: bool = True, version: int | None = None) -> tuple[object, int | None]:
        async with open_run_services(
            settings,
            workflow=loaded.workflow,
            catalog=catalog,
            budget_usd=Decimal("0.5"),
            run_id="probe",
            learn=learn,
            estimator_version=version,
        ) as services:
            return services.estimator, services.estimator_version

    pooled, version = await chosen()
    assert isinstance(pooled, TableEstimator) and version is None
    assert (await chosen(learn=False)) == (None, None)
    assert _cli("train", "--db", sqlite_url)[0] == 0
    assert _cli("train", "--db", sqlite_url, "--embedder", "none")[0] == 0
    newest, version = await chosen()
    assert isinstance(newest, LearnedEstimator) and version == newest.artifact.version == 2
    older, version = await chosen(version=1)
    assert isinstance(older, LearnedEstimator) and version == 1 and older.artifact.embedder == "hashing-256"


async def test_train_and_artifacts_on_either_database(db_url: str) -> None:
    await _history(db_url, runs=6, workflow="fix-bug")
    for expected in (1, 2):
        code, text = _cli("train", "--db", db_url, "--embedder", "none")
        assert code == 0, text
        stored = load_artifact(db_url, "fix-bug")
        assert stored is not None and stored.version == expected and stored.data.runs == 6
    code, text = _cli("estimates", "artifacts", "--db", db_url, "--workflow", "fix-bug")
    assert code == 0 and [line.split()[1] for line in text.splitlines() if line.startswith("fix-bug")] == [
        "2",
        "1",
    ], text


async def test_an_exploring_run_draws_its_beliefs_around_what_it_would_plan_on(
    sqlite_url: str, tmp_path: Path
) -> None:
    from budgetflow.loader import load_workflow_file
    from orchestrator import ThompsonEstimator
    from orchestrator.estimator import RequestFeatures

    settings = load_settings({"database_url": sqlite_url})
    path = tmp_path / "fix_bug.py"
    path.write_text(WORKFLOW_FILE)
    loaded = load_workflow_file(str(path))
    catalog = loaded.catalog
    assert catalog is not None

    async def success(explore_seed: int | None) -> tuple[float | None, list[str]]:
        async with open_run_services(
            settings,
            workflow=loaded.workflow,
            catalog=catalog,
            budget_usd=Decimal("0.5"),
            run_id="probe",
            explore_seed=explore_seed,
        ) as services:
            estimator = services.estimator
            if estimator is None:
                return None, services.notes
            assert isinstance(estimator, ThompsonEstimator)
            found = estimator.estimate(loaded.workflow.name, "fix", "mini", RequestFeatures())
            return (None if found is None else found.success_prob), services.notes

    # Nothing recorded: no estimator unless exploring, which draws around the declared priors.
    assert (await success(None))[0] is None
    prior = loaded.workflow.subtasks["fix"].estimates["mini"].success_prob
    drawn, notes = await success(3)
    assert drawn is not None and drawn != prior and any("exploring" in n for n in notes)
    assert (await success(3))[0] == drawn, "the seed repeats the run's draws"
    assert (await success(4))[0] != drawn
