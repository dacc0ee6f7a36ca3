"""`budgetflow estimates show`: what the recorded runs say about each (subtask, model).

One table per workflow: the learned (pooled) success probability next to the
workflow's declared prior (with `--workflow-file`), the pooled prior mean it was
shrunk toward and that prior's weight, the attempts behind it (passed, failed,
errors, censored) and the mean output tokens and latency, fitted as in
`storage.pooled_estimates`; when `budgetflow train` stored an estimator for the
workflow, its newest version's success per (subtask, model) too (`trained`), the
belief the workflow's runs start from. Fits 80 columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from budgetflow._format import command
from budgetflow.settings import Settings
from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.workflow import Workflow

if TYPE_CHECKING:
    from storage.learned_estimator import LearnedEstimator
    from storage.pooled_estimates import PooledCell

__all__ = ["show_estimates"]


def show_estimates(
    settings: Settings,
    console: Console,
    *,
    workflow: str | None,
    workflow_file: str | None,
    include_simulated: bool = False,
) -> int:
    """Print the pooled estimates per workflow, subtask and model; return the exit code.

    Raises:
        ConfigError: an unknown workflow, a workflow file that cannot be loaded or names
            another workflow than `workflow`.
        StorageError: the database cannot be read.
    """
    from budgetflow.show import missing_database
    from storage import queries
    from storage._engine import redact
    from storage.estimator_artifacts import load_artifact
    from storage.learned_estimator import LearnedEstimator
    from storage.pooled_estimates import pooled_estimates

    declared: Workflow | None = None
    if workflow_file is not None:
        from budgetflow.loader import load_workflow_file

        declared = load_workflow_file(workflow_file).workflow
        if workflow is not None and workflow != declared.name:
            raise ConfigError(
                f"--workflow `{workflow}` but `{workflow_file}` defines workflow `{declared.name}`;"
                " drop --workflow or give the matching file"
            )
        workflow = declared.name
    url = settings.database_url
    where = redact(url)
    missing = missing_database(url)
    known = [] if missing is not None else queries.workflow_names(url)
    if not known:
        if workflow is not None:
            raise ConfigError(
                f"no runs of workflow `{workflow}` in `{missing or where}`: the database has no runs;"
                f" record some with `{command(settings, 'run', 'PATH.py')}` or pass --db URL"
            )
        console.print(
            f"no runs recorded in `{missing or where}` yet, so nothing is learned; start one with"
            f" `{command(settings, 'run', 'PATH.py')}`",
            highlight=False,
        )
        return 0
    if workflow is not None and workflow not in known:
        listed = ", ".join(f"`{w}`" for w in known)
        raise ConfigError(
            f"no runs of workflow `{workflow}` in `{where}`{did_you_mean(workflow, known)}; workflows"
            f" with runs: {listed}"
        )
    pooled = pooled_estimates(url, workflow=workflow, max_runs=None, include_simulated=include_simulated)
    if not pooled.cells:
        console.print(
            f"no attempts recorded in `{where}` for {f'`{workflow}`' if workflow else 'any workflow'}"
            f"{'' if include_simulated else ' (real runs; add --include-simulated for simulated ones)'}",
            highlight=False,
        )
        return 0
    trained_versions: list[str] = []
    for name in sorted({c.workflow for c in pooled.cells}):
        cells: Sequence[PooledCell] = [c for c in pooled.cells if c.workflow == name]
        how = "estimated from the cells" if cells[0].strength_from_data else "default: too few cells"
        console.print(
            f"workflow `{name}`: prior strength k = {cells[0].strength:.1f} ({how})",
            highlight=False,
            style="bold",
        )
        artifact = load_artifact(url, name)
        trained = None if artifact is None else LearnedEstimator(artifact)
        if artifact is not None:
            trained_versions.append(f"`{name}` v{artifact.version}")
        console.print(
            _table(cells, declared if declared is not None and declared.name == name else None, trained)
        )
    console.print(
        "pooled: the prior mean from the model's and the subtask's rates; learned = (passes +"
        " k·pooled) / (verdicts + k); w = k / (verdicts + k), the pooled share. p/f/e/c: attempts"
        " passed/failed/errors/censored (cancelled); errors and censored are not verdicts, and"
        " latency counts censored ones as lower bounds (docs/learning.md)",
        style="dim",
        highlight=False,
    )
    if trained_versions:
        console.print(
            f"trained: the success that the newest estimator from `budgetflow train`"
            f" ({', '.join(trained_versions)}) gives a request at the training mean of each"
            " feature; the workflow's runs plan with it",
            style="dim",
            highlight=False,
        )
    return 0


def _table(cells: Sequence[PooledCell], declared: Workflow | None, trained: LearnedEstimator | None) -> Table:
    table = Table(box=None, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("subtask", overflow="fold")
    table.add_column("model", overflow="fold")
    if declared is not None:
        table.add_column("prior", justify="right")
    table.add_column("pooled", justify="right")
    table.add_column("learned", justify="right")
    if trained is not None:
        table.add_column("trained", justify="right")
    table.add_column("w", justify="right")
    table.add_column("p/f/e/c", justify="right")
    table.add_column("out tok", justify="right")
    table.add_column("latency", justify="right")
    for cell in cells:
        row = [cell.subtask, cell.model]
        if declared is not None:
            row.append(_prior(declared, cell.subtask, cell.model))
        row += [f"{cell.prior_mean:.2f}", f"{cell.success_prob:.2f}"]
        if trained is not None:
            row.append(_trained(trained, cell.subtask, cell.model))
        row += [
            f"{cell.shrinkage:.2f}",
            f"{cell.passes}/{cell.failures}/{cell.errors}/{cell.censored}",
            "-" if cell.output_tokens is None else f"{cell.output_tokens.mean:,.0f}",
            "-" if cell.latency_s is None else f"{cell.latency_s.mean:.1f}s",
        ]
        table.add_row(*row)
    return table


def _prior(workflow: Workflow, subtask: str, model: str) -> str:
    """The workflow's declared success prior for (subtask, model), or `-`."""
    found = workflow.subtasks.get(subtask)
    estimate = None if found is None else found.estimates.get(model)
    return "-" if estimate is None else f"{estimate.success_prob:.2f}"


def _trained(estimator: LearnedEstimator, subtask: str, model: str) -> str:
    """The trained estimator's success for (subtask, model) at the training mean of each feature, or `-`."""
    from orchestrator.estimator import RequestFeatures

    success = estimator.success_probability(subtask, model, RequestFeatures())
    return "-" if success is None else f"{success:.2f}"
