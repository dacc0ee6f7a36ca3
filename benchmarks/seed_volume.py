"""A database at real volume, for timing the API and the dashboard: many runs, a million calls.

```
.venv/bin/python benchmarks/seed_volume.py [--database-url URL] [--runs 10000] [--calls-per-run 100]
    [--detail-calls 2000] [--seed 0] [--reset]
```

Builds (or reuses) a budgetflow database holding exactly `--runs` runs and
`--runs × --calls-per-run` rows in `calls`, one of the runs (the *detail run*, whose id
is printed) holding exactly `--detail-calls` of them. Default: a SQLite file,
`.budgetflow/bench/volume.db`; `--database-url postgresql+psycopg://...` seeds PostgreSQL.

What the rows look like, drawn from a numpy `Generator` seeded with `--seed` (the same
seed and sizes give the same database, but for `started_at`, which is spread over the
30 days before seeding):

- six workflows (the examples' `code-pipeline`, `research-qa`, `hard-step`, `local-model`,
  and `doc-review`, `support-triage`) in stages of parallel subtasks; the fan-out stages of
  `research-qa` and `doc-review` widen with the run, which is how a run gets to 2,000 calls;
- policies `mcpp`, `always_cheapest`, `always_strongest`, `split_critical_path`,
  `threshold_router`, `dual_mirror_descent`, with the decision records each writes;
- catalog models from four providers at their list prices (`mini`, `4o`, `haiku`, `sonnet`,
  `flash`, and `local`, a vLLM pool of three replicas with prefix-cache hits);
- outcomes: about 80% `completed`, the rest `budget_exhausted`, `deadline_exceeded`,
  `failed`, `cancelled` and `abandoned`, with subtasks, attempts and calls that end so;
- per run, a number of calls drawn from a log-normal (mean `--calls-per-run`); each attempt
  is an agent span with one or more model calls under it (`parent_call_id`), some of them
  errors followed by a retry; batches of samples, a winner per completed subtask, siblings
  that finished late or were cancelled; prompts and responses for 90% of the runs
  (the others recorded with `--no-content`), 15% of the runs on the simulated backend.

The rows of a run are drawn in `benchmarks/_volume_rows.py`. Money adds up: a call costs
its tokens at the model's prices, an attempt, a subtask and a run cost the sum of their
calls. Rows go in with SQLAlchemy Core `executemany`, in chunks,
after `storage.migrate.upgrade`; then `storage.run_rollups.rebuild_rollups` fills the
dashboard's pre-aggregates. A table `bench_volume_seed` records the parameters: a later
call with the same ones reuses the database (seeding a million calls takes minutes) as long
as it was seeded less than `--max-age-hours` ago (the dashboard's windows end now).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from benchmarks._volume_rows import DETAIL_SHAPE, OUTCOMES, POLICIES, SHAPES, Buffers, RunBuilder, normalised
from orchestrator.records import Outcome
from storage._engine import make_engine, parse_database_url, redact, sqlite_path
from storage.migrate import head_revision, upgrade
from storage.models import Attempt, Base, Call, PlanDecision, Run, SubtaskExecution

__all__ = ["DEFAULT_URL", "Seeded", "VolumeSpec", "main", "seed_volume"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL: Final = f"sqlite:///{ROOT / '.budgetflow' / 'bench' / 'volume.db'}"
"""Where the volume database goes unless `--database-url` says otherwise (git ignores it)."""
_GENERATOR: Final = 1
"""Bump when the shapes below change, so that an older seeded database is not reused."""
_CHUNK_CALLS: Final = 50_000


class SeedError(Exception):
    """The database cannot be seeded as asked."""


@dataclass(frozen=True, kw_only=True)
class VolumeSpec:
    """What to seed."""

    runs: int = 10_000
    """Runs, the detail run included."""
    calls_per_run: int = 100
    """Mean rows in `calls` per run; the database holds exactly `runs × calls_per_run`."""
    detail_calls: int = 2_000
    """Rows in `calls` of the detail run."""
    seed: int = 0
    """Seed of the numpy generator."""
    days: float = 30.0
    """Runs start within this many days before seeding."""

    @property
    def calls(self) -> int:
        """Rows in `calls`, over all runs."""
        return self.runs * self.calls_per_run

    def check(self) -> None:
        """Raise `SeedError` when the sizes cannot be met (every run needs an agent span and a call)."""
        if self.runs < 1:
            raise SeedError(f"`runs` must be at least 1, got {self.runs}")
        if self.detail_calls < 2:
            raise SeedError(f"`detail_calls` must be at least 2, got {self.detail_calls}")
        rest = self.calls - self.detail_calls
        if rest < 2 * (self.runs - 1) or (self.runs == 1 and rest != 0):
            raise SeedError(
                f"{self.runs} runs × {self.calls_per_run} calls leave {rest} calls for the {self.runs - 1}"
                f" runs besides the detail run's {self.detail_calls}; each needs at least 2: raise"
                " `calls_per_run` or lower `detail_calls`"
            )


@dataclass(frozen=True, kw_only=True)
class Seeded:
    """A seeded database."""

    database_url: str
    """Its URL (password hidden)."""
    spec: VolumeSpec
    """What it holds."""
    detail_run_id: str
    """The run with exactly `spec.detail_calls` calls."""
    anchor: datetime
    """When it was seeded: runs started in the `spec.days` before."""
    seconds: float
    """How long seeding took (then, when reused)."""
    reused: bool
    """Whether an earlier seeding was reused."""
    rollups: int | None
    """Runs whose pre-aggregates were rebuilt; `None` when `storage.run_rollups` is absent."""


# --- Seeding -----------------------------------------------------------------------------------

_META = sa.Table(
    "bench_volume_seed",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("detail_run_id", sa.String(64), nullable=False),
    sa.Column("anchor", sa.String(40), nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("rollups", sa.Integer, nullable=True),
)
"""One row: what this database was seeded with (written last, so only a whole seeding is reused)."""

Progress = Callable[[str], None]


def _params(spec: VolumeSpec) -> str:
    return json.dumps({**asdict(spec), "generator": _GENERATOR, "schema": head_revision()}, sort_keys=True)


def _engine(url: str) -> Engine:
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":

        def fast(dbapi_connection: Any, _record: object) -> None:
            cursor = dbapi_connection.cursor()
            # A throw-away benchmark database: a large page cache, and commits that wait for the
            # WAL only (the defaults, FULL sync, are for databases that must survive power loss).
            cursor.execute("PRAGMA cache_size=-400000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        sa.event.listen(engine, "connect", fast)
    return engine


def _reusable(engine: Engine, spec: VolumeSpec, max_age: timedelta) -> tuple[Seeded | None, str | None]:
    """The earlier seeding to reuse, else why not (`None`: the database holds no runs)."""
    inspector = sa.inspect(engine)
    if not inspector.has_table(_META.name):
        if not inspector.has_table(Run.__tablename__):
            return None, None
        with engine.connect() as connection:
            if connection.scalar(sa.select(sa.func.count()).select_from(Run)) == 0:
                return None, None
        return None, "foreign"
    with engine.connect() as connection:
        row = connection.execute(sa.select(_META)).first()
    if row is None:
        return None, "an unfinished seeding"
    if row.params != _params(spec):
        return None, f"other parameters ({row.params})"
    anchor = datetime.fromisoformat(row.anchor)
    if datetime.now(UTC) - anchor > max_age:
        return None, f"seeded at {anchor:%Y-%m-%d %H:%M} UTC, more than {max_age} ago"
    return (
        Seeded(
            database_url=redact(engine.url),
            spec=spec,
            detail_run_id=row.detail_run_id,
            anchor=anchor,
            seconds=row.seconds,
            reused=True,
            rollups=row.rollups,
        ),
        None,
    )


def _clear(url: str) -> None:
    engine = make_engine(url)
    path = sqlite_path(engine.url)
    try:
        if path is None:
            with engine.begin() as connection:
                _META.drop(connection, checkfirst=True)
                Base.metadata.drop_all(connection)
                connection.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()
    if path is not None:
        for suffix in ("", "-wal", "-shm", ".migrate-lock"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)


def _insert(engine: Engine, out: Buffers) -> None:
    with engine.begin() as connection:
        for model, rows in (
            (Run, out.runs),
            (SubtaskExecution, out.subtasks),
            (Attempt, out.attempts),
            (Call, out.calls),
            (PlanDecision, out.decisions),
        ):
            if rows:
                connection.execute(sa.insert(model.__table__), rows)  # type: ignore[arg-type]
                rows.clear()


def _rollups(engine: Engine, progress: Progress) -> int | None:
    try:
        from storage.run_rollups import rebuild_rollups
    except ImportError:
        progress("storage.run_rollups.rebuild_rollups is not there yet: no pre-aggregates rebuilt")
        return None
    progress("rebuilding the dashboard's pre-aggregates (storage.run_rollups.rebuild_rollups) ...")
    return int(rebuild_rollups(engine))


def _counts(connection: Connection, detail_run_id: str) -> tuple[int, int, int]:
    runs = connection.scalar(sa.select(sa.func.count()).select_from(Run)) or 0
    calls = connection.scalar(sa.select(sa.func.count()).select_from(Call)) or 0
    detail = connection.scalar(sa.select(sa.func.count()).where(Call.run_id == detail_run_id)) or 0
    return int(runs), int(calls), int(detail)


def _generate(engine: Engine, spec: VolumeSpec, anchor: datetime, progress: Progress) -> str:
    """Insert every run; the detail run's id."""
    rng = np.random.default_rng(spec.seed)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < spec.runs:
        run_id = rng.bytes(6).hex()
        if run_id not in seen:
            seen.add(run_id)
            ids.append(run_id)
    detail = int(rng.integers(spec.runs))
    others = spec.runs - 1
    calls = [spec.detail_calls] * spec.runs
    if others:
        spare = spec.calls - spec.detail_calls - 2 * others
        drawn = 2 + rng.multinomial(spare, normalised(rng.lognormal(0, 0.6, others)))
        calls = [*drawn[:detail].tolist(), spec.detail_calls, *drawn[detail:].tolist()]
    shapes = {s.name: s for s in SHAPES}
    shape_of = rng.choice(len(SHAPES), spec.runs, p=normalised(np.array([s.weight for s in SHAPES])))
    policy_of = rng.choice(list(POLICIES), spec.runs, p=list(POLICIES.values()))
    outcomes = list(OUTCOMES)
    outcome_of = rng.choice(len(outcomes), spec.runs, p=list(OUTCOMES.values()))
    ago = np.sort(rng.uniform(0, spec.days * 86_400, spec.runs))[::-1] + 3_600
    content_of = rng.random(spec.runs) >= 0.1
    simulated_of = rng.random(spec.runs) < 0.15
    out = Buffers()
    builder = RunBuilder(rng, out)
    t0 = time.perf_counter()
    written = 0
    for i, run_id in enumerate(ids):
        is_detail = i == detail
        builder.build(
            run_id=run_id,
            shape=shapes[DETAIL_SHAPE] if is_detail else SHAPES[int(shape_of[i])],
            calls=calls[i],
            outcome=Outcome.COMPLETED if is_detail else outcomes[int(outcome_of[i])],
            policy="mcpp" if is_detail else str(policy_of[i]),
            started_at=anchor - timedelta(seconds=float(ago[i])),
            content=True if is_detail else bool(content_of[i]),
            simulated=False if is_detail else bool(simulated_of[i]),
        )
        if len(out.calls) >= _CHUNK_CALLS or i == spec.runs - 1:
            written += len(out.calls)
            _insert(engine, out)
            elapsed = time.perf_counter() - t0
            left = elapsed / written * (spec.calls - written)
            progress(
                f"  {i + 1:>7,}/{spec.runs:,} runs  {written:>10,}/{spec.calls:,} calls"
                f"  {elapsed:6.1f} s  (~{left:.0f} s left)"
            )
    return ids[detail]


def seed_volume(
    url: str = DEFAULT_URL,
    spec: VolumeSpec | None = None,
    *,
    reset: bool = False,
    max_age_hours: float = 24.0,
    progress: Progress = print,
) -> Seeded:
    """Seed the database at `url` as `spec` says, or reuse an earlier seeding with the same parameters.

    Args:
        url: database URL (a SQLite file's directory is created).
        spec: sizes and seed; default `VolumeSpec()` (10,000 runs, 1,000,000 calls).
        reset: delete runs this tool did not seed (otherwise such a database is refused).
        max_age_hours: reuse a seeding at most this old (the dashboard's windows end now).
        progress: called with a line of progress now and then.

    Raises:
        SeedError: impossible sizes, or the database holds runs of its own and `reset` is off.
    """
    spec = spec or VolumeSpec()
    spec.check()
    path = sqlite_path(parse_database_url(url))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = _engine(url)
    try:
        found, why = _reusable(engine, spec, timedelta(hours=max_age_hours))
    finally:
        engine.dispose()
    if found is not None:
        progress(
            f"reusing {found.database_url}: seeded {found.anchor:%Y-%m-%d %H:%M} UTC with the same parameters"
        )
        return found
    if why == "foreign" and not reset:
        raise SeedError(
            f"database `{redact(url)}` holds runs this benchmark did not seed; pass `--reset` to delete"
            " them, or give another `--database-url`"
        )
    if why is not None:
        progress(f"seeding afresh: the database held {why}")
        _clear(url)
    t0 = time.perf_counter()
    anchor = datetime.now(UTC).replace(microsecond=0)
    engine = _engine(url)
    try:
        upgrade(engine)
        progress(
            f"seeding {redact(url)}: {spec.runs:,} runs, {spec.calls:,} calls"
            f" (detail run: {spec.detail_calls:,}), seed {spec.seed}"
        )
        detail_run_id = _generate(engine, spec, anchor, progress)
        rollups = _rollups(engine, progress)
        with engine.begin() as connection:
            counts = _counts(connection, detail_run_id)
            if counts != (spec.runs, spec.calls, spec.detail_calls):
                raise SeedError(f"seeded {counts} (runs, calls, detail run's calls), not what was asked")
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        if engine.dialect.name == "postgresql":
            # What autovacuum would do soon after a bulk load: planner statistics.
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.exec_driver_sql("ANALYZE")
        seconds = time.perf_counter() - t0
        with engine.begin() as connection:
            _META.create(connection, checkfirst=True)
            connection.execute(sa.delete(_META))
            connection.execute(
                sa.insert(_META).values(
                    id=1,
                    params=_params(spec),
                    detail_run_id=detail_run_id,
                    anchor=anchor.isoformat(),
                    seconds=seconds,
                    rollups=rollups,
                )
            )
    finally:
        engine.dispose()
    progress(f"seeded in {seconds:.0f} s; detail run: {detail_run_id}")
    return Seeded(
        database_url=redact(url),
        spec=spec,
        detail_run_id=detail_run_id,
        anchor=anchor,
        seconds=seconds,
        reused=False,
        rollups=rollups,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The seeding options (shared with `bench_pages.py`)."""
    default = VolumeSpec()
    parser.add_argument("--database-url", default=DEFAULT_URL, help="SQLite (default) or PostgreSQL URL")
    parser.add_argument("--runs", type=int, default=default.runs, help="runs, the detail run included")
    parser.add_argument(
        "--calls-per-run", type=int, default=default.calls_per_run, help="mean rows in `calls` per run"
    )
    parser.add_argument(
        "--detail-calls", type=int, default=default.detail_calls, help="calls of the detail run"
    )
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--max-age-hours", type=float, default=24.0, help="reuse a seeding at most this old")
    parser.add_argument("--reset", action="store_true", help="delete runs this tool did not seed")


def spec_from(args: argparse.Namespace) -> VolumeSpec:
    """The `VolumeSpec` the parsed options ask for."""
    return VolumeSpec(
        runs=args.runs, calls_per_run=args.calls_per_run, detail_calls=args.detail_calls, seed=args.seed
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Seed (or reuse) and print the detail run's id; 2 when the sizes or the database do not fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        seeded = seed_volume(
            args.database_url, spec_from(args), reset=args.reset, max_age_hours=args.max_age_hours
        )
    except SeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(seeded.detail_run_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
