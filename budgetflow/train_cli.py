"""`budgetflow train`: fit the learned estimator from the recorded runs and store it, versioned.

For each workflow (one, or every workflow with recorded runs) the recorded attempts
become training examples (`storage.training_data`), `storage.learned_estimator` fits
an `EstimatorArtifact` on them with a held-out share to measure it, and
`storage.estimator_artifacts` stores it as the workflow's next version, which the
workflow's runs then load by default (`budgetflow.services`). Prints one row per
workflow: its version, the data behind it and the held-out metrics. Fits 80 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from budgetflow._format import command, plural
from budgetflow.export import parse_since
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from storage.learned_estimator import EstimatorArtifact

__all__ = ["EmbedderName", "artifact_window", "feature_summary", "show_artifacts", "train"]

EmbedderName = Literal["hashing", "none"]
"""What embeds the recorded prompts for the estimator: the built-in hashing embedder, or nothing."""


@dataclass(frozen=True, kw_only=True)
class _Choice:
    """Which runs the examples come from, as the options chose them."""

    since: datetime | None
    max_runs: int | None
    include_simulated: bool
    only_simulated: bool

    @property
    def which(self) -> str:
        if self.only_simulated:
            return "simulated"
        return "real and simulated" if self.include_simulated else "real"


def train(
    settings: Settings,
    console: Console,
    *,
    workflow: str | None,
    since: str | None,
    max_runs: int | None,
    include_simulated: bool,
    only_simulated: bool,
    embedder: EmbedderName,
    holdout: float,
    seed: int,
) -> int:
    """The `train` command: fit, store and report one artifact per workflow; return the exit code.

    Raises:
        ConfigError: a bad date, no database, an unknown workflow, or no attempts to learn from.
        StorageError: the database cannot be read or written.
    """
    from budgetflow.show import missing_database
    from storage import queries
    from storage._engine import make_engine, redact
    from storage.estimator_artifacts import save_artifact
    from storage.learned_estimator import HashingEmbedder, fit_estimator
    from storage.migrate import upgrade
    from storage.training_data import iter_examples

    choice = _Choice(
        since=parse_since(since) if since is not None else None,
        max_runs=max_runs,
        include_simulated=include_simulated,
        only_simulated=only_simulated,
    )
    if include_simulated and only_simulated:
        raise ConfigError("--include-simulated and --only-simulated contradict each other; choose one")
    url = settings.database_url
    missing = missing_database(url)
    if missing is not None:
        raise ConfigError(
            f"no runs recorded in `{missing}` (the file does not exist), so there is nothing to train on;"
            f" record some with `{command(settings, 'run', 'PATH.py')}` or pass the database with --db URL"
        )
    engine = make_engine(url)
    try:
        known = queries.workflow_names(engine)
        if not known:
            raise ConfigError(
                f"no runs recorded in `{redact(url)}`, so there is nothing to train on; record some with"
                f" `{command(settings, 'run', 'PATH.py')}` or pass the database with --db URL"
            )
        if workflow is not None and workflow not in known:
            listed = ", ".join(f"`{w}`" for w in known)
            raise ConfigError(
                f"no runs of workflow `{workflow}` in `{redact(url)}`{did_you_mean(workflow, known)};"
                f" workflows with runs: {listed}"
            )
        chosen = [workflow] if workflow is not None else known
        embed = HashingEmbedder() if embedder == "hashing" else None
        trained: list[EstimatorArtifact] = []
        skipped: list[str] = []
        upgrade(engine)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as progress:
            for name in chosen:
                task = progress.add_task(f"reading runs of `{name}`", total=None)

                def advanced(done: int, total: int, task: TaskID = task) -> None:
                    progress.update(task, completed=done, total=total)

                examples = list(
                    iter_examples(
                        engine,
                        workflow=name,
                        since=choice.since,
                        max_runs=choice.max_runs,
                        include_simulated=choice.include_simulated,
                        only_simulated=choice.only_simulated,
                        embedder=embed,
                        progress=advanced,
                    )
                )
                if not examples:
                    progress.remove_task(task)
                    skipped.append(name)
                    continue
                progress.update(task, description=f"fitting `{name}` on {plural(len(examples), 'attempt')}")
                artifact = fit_estimator(
                    examples, workflow=name, embedder=embed, holdout_fraction=holdout, seed=seed
                )
                trained.append(save_artifact(engine, artifact))
                progress.remove_task(task)
    finally:
        engine.dispose()
    if not trained:
        where = f"`{workflow}`" if workflow is not None else "any workflow"
        hint = "" if include_simulated or only_simulated else "; add --include-simulated for simulated runs"
        raise ConfigError(
            f"no attempts of {choice.which} runs of {where} match, so nothing was trained{hint}"
        )
    console.print(
        f"trained {plural(len(trained), 'estimator')} from {choice.which} runs; "
        + ("runs of this workflow now plan with it:" if len(trained) == 1 else "runs now plan with them:"),
        highlight=False,
    )
    console.print(_metrics_table(trained))
    for artifact in trained:
        console.print(_details(artifact), highlight=False)
    if skipped:
        console.print(
            f"not trained (no attempts of {choice.which} runs match): {', '.join(f'`{w}`' for w in skipped)}",
            highlight=False,
        )
    console.print(
        "AUROC, Brier, ECE: held-out success predictions (ECE: calibration error); tok MAE: mean"
        " absolute error of output tokens; p90 tok/lat: share of held-out attempts at or under the"
        " predicted 90th percentile of tokens and of latency (0.90 is calibrated). docs/learning.md",
        style="dim",
        highlight=False,
    )
    return 0


def show_artifacts(settings: Settings, console: Console, *, workflow: str | None) -> int:
    """The `estimates artifacts` command: the stored estimators, newest version first; the exit code.

    Raises:
        StorageError: the database cannot be read.
    """
    from budgetflow.show import missing_database
    from storage._engine import redact
    from storage.estimator_artifacts import list_artifacts

    url = settings.database_url
    missing = missing_database(url)
    stored = [] if missing is not None else list_artifacts(url, workflow)
    if not stored:
        which = f"workflow `{workflow}`" if workflow is not None else "any workflow"
        console.print(
            f"no trained estimator of {which} in `{missing or redact(url)}`; runs plan from the pooled"
            f" estimates of recorded runs. Train one with `{command(settings, 'train')}`",
            highlight=False,
        )
        return 0
    console.print(_metrics_table(stored, created=True))
    latest = {a.workflow: a.version for a in reversed(stored)}
    newest = ", ".join(f"`{w}` v{v}" for w, v in sorted(latest.items()))
    console.print(f"runs load the newest: {newest}", style="dim", highlight=False)
    return 0


def artifact_window(artifact: EstimatorArtifact) -> str:
    """The runs it was fitted on: how many, their start times and whether simulated ones counted."""
    data = artifact.data
    first, last = _minute(data.first_run_started_at), _minute(data.last_run_started_at)
    span = first if first == last else f"{first} to {last}"
    kind = "real and simulated" if data.include_simulated else "real"
    return f"{plural(data.runs, f'{kind} run')} started {span} UTC"


def _minute(moment: datetime | None) -> str:
    return "?" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _details(artifact: EstimatorArtifact) -> str:
    from storage.learned_estimator import MIN_HOLDOUT_RUNS

    m = artifact.metrics
    held = (
        f"{plural(m.n_holdout_runs, 'run')} held out ({plural(m.n_holdout, 'verdict')})"
        if m.n_holdout_runs
        else f"none held out (that needs --holdout above 0 and {MIN_HOLDOUT_RUNS} runs or more)"
    )
    return (
        f"`{artifact.workflow}` v{artifact.version}: {artifact_window(artifact)}; {held};"
        f" features: {feature_summary(artifact)}"
    )


def feature_summary(artifact: EstimatorArtifact) -> str:
    """Its features in a few words: each input's size, the prompt's tokens, the embedding's principal
    directions."""
    named = [f for f in artifact.features if not f.startswith("embedding_pc:")]
    shown = [f"{f.removeprefix('input_chars:')} chars" if f.startswith("input_chars:") else f for f in named]
    directions = len(artifact.features) - len(named)
    if directions:
        plural = "s" if directions > 1 else ""
        shown.append(f"{artifact.embedder or 'an'} embedding ({directions} principal direction{plural})")
    return ", ".join(shown) or "none (the model, subtask and cell rates alone)"


def _metrics_table(artifacts: Sequence[EstimatorArtifact], *, created: bool = False) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("workflow", overflow="fold")
    table.add_column("v", justify="right")
    if created:
        table.add_column("trained", justify="right")
    table.add_column("runs", justify="right")
    table.add_column("attempts", justify="right")
    table.add_column("AUROC", justify="right")
    table.add_column("Brier", justify="right")
    table.add_column("ECE", justify="right")
    table.add_column("tok MAE", justify="right")
    table.add_column("p90 tok/lat", justify="right")
    for artifact in artifacts:
        m = artifact.metrics
        row = [artifact.workflow, str(artifact.version)]
        if created:
            row.append(artifact.created_at.astimezone(UTC).strftime("%Y-%m-%d"))
        row += [
            f"{artifact.data.runs:,}",
            f"{artifact.data.examples:,}",
            _number(m.auroc, "{:.2f}"),
            _number(m.brier, "{:.3f}"),
            _number(m.ece, "{:.3f}"),
            _number(m.output_tokens_mae, "{:,.0f}"),
            f"{_number(m.output_tokens_p90_coverage, '{:.2f}')}/{_number(m.latency_p90_coverage, '{:.2f}')}",
        ]
        table.add_row(*row)
    return table


def _number(value: float | None, form: str) -> str:
    """`value` formatted, or `-` when it could not be measured (too few held-out attempts)."""
    return "-" if value is None or value != value else form.format(value)
