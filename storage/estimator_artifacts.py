"""The learned estimators in the database, versioned per workflow: 1, 2, 3...

`budgetflow train` fits an `EstimatorArtifact` and saves it here; a run of the
workflow loads the newest one (`load_artifact`) as its estimator. Each save adds a
version and never replaces one, so a run's beliefs can always be traced to the
artifact it loaded, and an older version can still be loaded by number.

The version is taken in the statement that stores the artifact (`INSERT ... SELECT
max(version) + 1`), and a unique index on (workflow, version) refuses a second
artifact with the same number: when two saves of one workflow race, the loser's
insert fails and it takes the next number. The body is the artifact's JSON
(`EstimatorArtifact.to_json`) with the version left out; the row's `version` column
is the one truth, set on the artifact when it is loaded.

Like `storage.tokens`, the functions block, take a database URL (an engine made and
disposed per call) or an `Engine` to reuse, and do not migrate: call
`storage.migrate.upgrade` before saving. A database whose schema predates the table
holds no artifact to the readers.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from orchestrator.errors import ConfigError, StorageError
from storage._engine import make_engine, storage_error
from storage.learned_estimator import EstimatorArtifact
from storage.models import EstimatorArtifactRow

__all__ = ["list_artifacts", "load_artifact", "save_artifact"]

_TABLE: Final = EstimatorArtifactRow.__table__
_SAVE_TRIES = 8
"""Saves of one workflow racing for the same version: each loser retries with the next number."""


@contextlib.contextmanager
def _engine(target: str | URL | Engine) -> Iterator[Engine]:
    """`target` as an engine, disposed at the end when it was made here."""
    if isinstance(target, Engine):
        yield target
        return
    engine = make_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def save_artifact(target: str | URL | Engine, artifact: EstimatorArtifact) -> EstimatorArtifact:
    """Store `artifact` as the next version of its workflow; return it with that version.

    Its own `version`, if any, is ignored: the store numbers artifacts.

    Raises:
        StorageError: the database cannot be written.
    """
    body = dataclasses.replace(artifact, version=None).to_json()
    c = _TABLE.c
    with _engine(target) as engine:
        for attempt in range(_SAVE_TRIES):
            following = (
                sa.select(
                    sa.literal(artifact.workflow, sa.String()).label("workflow"),
                    (sa.func.coalesce(sa.func.max(c.version), 0) + 1).label("version"),
                    sa.literal(artifact.created_at, c.created_at.type).label("created_at"),
                    sa.literal(body, sa.Text()).label("body"),
                )
                .select_from(_TABLE)
                .where(c.workflow == artifact.workflow)
            )
            insert = (
                sa.insert(EstimatorArtifactRow)
                .from_select(["workflow", "version", "created_at", "body"], following)
                .returning(c.version)
            )
            try:
                with engine.begin() as connection:
                    version = connection.execute(insert).scalar_one()
            except IntegrityError:
                if attempt + 1 == _SAVE_TRIES:
                    raise StorageError(
                        f"could not store an estimator of `{artifact.workflow}`: {_SAVE_TRIES} other saves"
                        " of the same workflow took the next version number first; try again"
                    ) from None
                continue
            except SQLAlchemyError as error:
                raise storage_error("store an estimator in", engine, error) from error
            return dataclasses.replace(artifact, version=int(version))
    raise StorageError("unreachable")  # pragma: no cover - the loop returns or raises


def load_artifact(
    target: str | URL | Engine, workflow: str, version: int | None = None
) -> EstimatorArtifact | None:
    """The artifact `version` of `workflow` (the newest when `None`), or `None` when there is none.

    Raises:
        StorageError: the database cannot be read, or the stored body is not an artifact.
    """
    c = _TABLE.c
    query = _select().where(c.workflow == workflow)
    query = (
        query.order_by(c.version.desc()).limit(1) if version is None else query.where(c.version == version)
    )
    rows = _read(target, query)
    return _artifact(rows[0]) if rows else None


def list_artifacts(target: str | URL | Engine, workflow: str | None = None) -> list[EstimatorArtifact]:
    """The stored artifacts (of `workflow`, or of every workflow), by workflow, newest version first.

    Raises:
        StorageError: the database cannot be read, or a stored body is not an artifact.
    """
    c = _TABLE.c
    query = _select().order_by(c.workflow, c.version.desc())
    if workflow is not None:
        query = query.where(c.workflow == workflow)
    return [_artifact(row) for row in _read(target, query)]


def _select() -> sa.Select[Any]:
    c = _TABLE.c
    return sa.select(c.workflow, c.version, c.body)


def _read(target: str | URL | Engine, query: sa.Select[Any]) -> list[sa.Row[Any]]:
    """The rows of `query`; none from a database whose schema predates the table."""
    with _engine(target) as engine:
        try:
            with engine.connect() as connection:
                if not sa.inspect(connection).has_table(EstimatorArtifactRow.__tablename__):
                    return []
                return list(connection.execute(query).all())
        except SQLAlchemyError as error:
            raise storage_error("read estimators from", engine, error) from error


def _artifact(row: sa.Row[Any]) -> EstimatorArtifact:
    try:
        artifact = EstimatorArtifact.from_json(row.body)
    except ConfigError as error:
        raise StorageError(
            f"estimator `{row.workflow}` version {row.version} is stored in a form this budgetflow cannot"
            f" read ({error}); train a new one with `budgetflow train --workflow {row.workflow}`"
        ) from None
    return dataclasses.replace(artifact, version=int(row.version))
