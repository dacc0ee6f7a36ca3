"""The versioned store of learned estimators, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.errors import StorageError
from orchestrator.estimator import RequestFeatures
from orchestrator.records import AttemptStatus
from storage import extract_examples, make_engine, upgrade
from storage.estimator_artifacts import list_artifacts, load_artifact, save_artifact
from storage.learned_estimator import EstimatorArtifact, HashingEmbedder, LearnedEstimator, fit_estimator
from storage.models import EstimatorArtifactRow
from tests.learning.records import Tried, record_run

START = datetime(2026, 11, 1, tzinfo=UTC)
CELLS = [("plan", "small"), ("plan", "large"), ("fix", "small"), ("fix", "large")]


async def _history(url: str, *, runs: int = 10, workflow: str = "w", seed: int = 0) -> None:
    """Runs whose cheap model passes short issues more often than long ones."""
    rng = random.Random(seed)
    for r in range(runs):
        long_issue = r % 2 == 1
        tried = []
        for subtask, model in CELLS:
            odds = 0.9 if model == "large" else 0.3 if long_issue else 0.8
            for _ in range(3):
                passed = rng.random() < odds
                tried.append(
                    Tried(
                        status=AttemptStatus.PASSED if passed else AttemptStatus.FAILED,
                        subtask=subtask,
                        model=model,
                        output_tokens=rng.randint(100, 400),
                        ended_s=rng.uniform(1.0, 6.0),
                    )
                )
        await record_run(
            url,
            f"{workflow}-{r}",
            tried,
            workflow=workflow,
            started_at=START + timedelta(hours=r),
            inputs={"issue": "x" * (4_000 if long_issue else 200)},
        )


def _fitted(url: str, workflow: str = "w", seed: int = 0) -> EstimatorArtifact:
    embedder = HashingEmbedder(dim=16)
    examples = extract_examples(url, workflow=workflow, embedder=embedder)
    return fit_estimator(examples, workflow=workflow, embedder=embedder, seed=seed)


async def test_versions_count_up_per_workflow_and_the_newest_loads(db_url: str) -> None:
    await _history(db_url)
    await _history(db_url, runs=3, workflow="other")
    first = save_artifact(db_url, _fitted(db_url))
    second = save_artifact(db_url, dataclasses.replace(_fitted(db_url, seed=1), version=7))
    other = save_artifact(db_url, _fitted(db_url, "other"))

    assert (first.version, second.version, other.version) == (1, 2, 1), "the store numbers, per workflow"
    newest = load_artifact(db_url, "w")
    assert newest is not None and newest.version == 2 and newest.created_at == second.created_at
    older = load_artifact(db_url, "w", 1)
    assert older is not None and older.version == 1 and older.created_at == first.created_at
    assert load_artifact(db_url, "w", 3) is None
    assert load_artifact(db_url, "nothing") is None
    assert [(a.workflow, a.version) for a in list_artifacts(db_url)] == [("other", 1), ("w", 2), ("w", 1)]
    assert [a.version for a in list_artifacts(db_url, "w")] == [2, 1]


async def test_a_loaded_artifact_predicts_exactly_as_the_fitted_one(db_url: str) -> None:
    await _history(db_url)
    fitted = _fitted(db_url)
    saved = save_artifact(db_url, fitted)
    loaded = load_artifact(db_url, "w")

    assert loaded == saved == dataclasses.replace(fitted, version=1)
    before, after = LearnedEstimator(fitted), LearnedEstimator(loaded)
    requests = [
        RequestFeatures(),
        RequestFeatures(input_chars={"issue": 200}),
        RequestFeatures(input_chars={"issue": 4_000}, prompt_tokens=900),
        RequestFeatures(input_chars={"issue": 4_000}, prompt_tokens=900, prompt_text="prompt 0 of w-1-a3"),
    ]
    answers = 0
    for subtask, model in CELLS:
        for features in requests:
            expected = before.estimate("w", subtask, model, features)
            assert after.estimate("w", subtask, model, features) == expected
            assert after.success_probability(subtask, model, features) == before.success_probability(
                subtask, model, features
            )
            answers += expected is not None
    assert answers == len(CELLS) * len(requests), "every recorded cell has an opinion"


async def test_saves_racing_on_one_workflow_take_distinct_versions(db_url: str) -> None:
    savers = 6
    await _history(db_url, runs=3)
    artifact = _fitted(db_url)
    engine = make_engine(db_url)
    start = threading.Barrier(savers)
    versions: list[int | None] = []
    errors: list[BaseException] = []

    def save() -> None:
        start.wait()
        try:
            versions.append(save_artifact(engine, artifact).version)
        except BaseException as error:  # the assertion below reports it
            errors.append(error)

    threads = [threading.Thread(target=save) for _ in range(savers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        engine.dispose()
    assert errors == []
    assert sorted(v for v in versions if v is not None) == list(range(1, savers + 1))


def test_a_database_before_the_table_holds_no_artifact(sqlite_url: str) -> None:
    upgrade(sqlite_url, "0007")
    assert load_artifact(sqlite_url, "w") is None
    assert list_artifacts(sqlite_url) == []


def test_an_unreadable_body_is_a_storage_error_that_says_to_train_again(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                sa.insert(EstimatorArtifactRow).values(
                    workflow="w", version=1, created_at=START, body='{"format_version": 99}'
                )
            )
        with pytest.raises(StorageError, match=r"`w` version 1 .*budgetflow train --workflow w"):
            load_artifact(engine, "w")
    finally:
        engine.dispose()
