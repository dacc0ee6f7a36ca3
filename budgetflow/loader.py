"""Loading a workflow file: a Python module defining `workflow` (and optionally more).

A workflow file may define:

- `workflow` (required): an `orchestrator.Workflow`;
- `catalog`: an `orchestrator.Catalog` (else `--catalog` / `BUDGETFLOW_CATALOG` must name one);
- `inputs`: a dict of run inputs (overridden key by key by `--input k=v`);
- `budget_usd`, `deadline_s`: defaults for `--budget` / `--deadline`.

`prepare` is the one validation `budgetflow validate` and `budgetflow run` share:
the catalog, the inputs (the file's, overridden by `--input`), the DAG and, for a
run, the policy name, with hints that say what to type.

When a model's provider has no API key in the environment, it is served by
the simulated backend with the same name and prices (said clearly in the
CLI and stored with the run). With `BUDGETFLOW_VLLM_URL`, models whose
litellm string is `hosted_vllm/...` are sent to that server.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

from budgetflow.settings import Settings
from orchestrator.catalog import SIMULATED_PREFIX, Catalog
from orchestrator.errors import ConfigError, WorkflowError
from orchestrator.workflow import RunLimits, Workflow

__all__ = [
    "LoadedWorkflow",
    "Prepared",
    "load_workflow_file",
    "load_workflow_module",
    "prepare",
    "route_catalog",
]


@dataclass(frozen=True, kw_only=True)
class LoadedWorkflow:
    """What a workflow file defines."""

    path: Path
    """The file."""
    workflow: Workflow
    """Its workflow."""
    catalog: Catalog | None
    """Its catalog, if it has one."""
    inputs: Mapping[str, Any]
    """Its default inputs."""
    budget_usd: Decimal | None
    """Its default budget."""
    deadline_s: float | None
    """Its default deadline."""


def load_workflow_file(path: str | Path) -> LoadedWorkflow:
    """Import the file and pick out its workflow; clear errors for every way it can be wrong."""
    file = Path(path)
    if not file.exists():
        raise ConfigError(f"workflow file `{file}` does not exist; check the path")
    if file.is_dir() or file.suffix != ".py":
        raise ConfigError(
            f"workflow file `{file}` is not a Python file; give a `.py` file defining `workflow`"
        )
    name = f"_budgetflow_workflow_{abs(hash(file.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import `{file}`")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent = str(file.resolve().parent)
    added = parent not in sys.path
    if added:
        sys.path.insert(0, parent)
    try:
        spec.loader.exec_module(module)
    except (WorkflowError, ConfigError):
        raise
    except SystemExit as exc:
        raise ConfigError(
            f"workflow file `{file}` called `sys.exit({exc.code!r})` while loading; a workflow file"
            " only defines `workflow` (and optionally `catalog`, `inputs`, ...)"
        ) from None
    except SyntaxError as exc:
        raise ConfigError(
            f"workflow file `{file}` has a syntax error at line {exc.lineno}: {exc.msg}"
        ) from exc
    except Exception as exc:
        raise ConfigError(f"importing workflow file `{file}` raised {type(exc).__name__}: {exc}") from exc
    finally:
        if added:
            sys.path.remove(parent)
    return _defined(module, file, where=f"workflow file `{file}`")


def load_workflow_module(name: str) -> LoadedWorkflow:
    """Import the module `name` (`examples.code_pipeline`) and pick out its workflow, as for a file.

    This is how the HTTP API registers the workflows it may run: by module path, from its
    settings, never from a path a request names.
    """
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(
            f"`{name}` is not a Python module path; use dotted names, e.g. `examples.code_pipeline`"
        )
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"workflow module `{name}` cannot be imported ({exc}); check the name and that its package"
            " is on `PYTHONPATH`"
        ) from None
    except (WorkflowError, ConfigError):
        raise
    except SystemExit as exc:
        raise ConfigError(f"workflow module `{name}` called `sys.exit({exc.code!r})` while loading") from None
    except Exception as exc:
        raise ConfigError(f"importing workflow module `{name}` raised {type(exc).__name__}: {exc}") from exc
    path = Path(module.__file__ or name)
    return _defined(module, path, where=f"workflow module `{name}`")


def _defined(module: ModuleType, path: Path, *, where: str) -> LoadedWorkflow:
    """What a loaded workflow module defines, checked; `where` names it in messages."""
    workflow = getattr(module, "workflow", None)
    if not isinstance(workflow, Workflow):
        found = ", ".join(n for n, v in vars(module).items() if isinstance(v, Workflow)) or "none"
        raise ConfigError(
            f"{where} must define `workflow = Workflow(...)` at top level (workflows found: {found})"
        )
    catalog = getattr(module, "catalog", None)
    if catalog is not None and not isinstance(catalog, Catalog):
        raise ConfigError(
            f"`catalog` in `{path}` must be an `orchestrator.Catalog`, not {type(catalog).__name__}"
        )
    inputs = getattr(module, "inputs", {}) or {}
    if not isinstance(inputs, Mapping):
        raise ConfigError(f"`inputs` in `{path}` must be a dict, not {type(inputs).__name__}")
    bad_keys = [k for k in inputs if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"`inputs` in `{path}` must have input names as keys, got {bad_keys!r}")
    budget = getattr(module, "budget_usd", None)
    deadline = getattr(module, "deadline_s", None)
    return LoadedWorkflow(
        path=path,
        workflow=workflow,
        catalog=catalog,
        inputs=dict(inputs),
        budget_usd=None if budget is None else RunLimits.check_budget(budget, name=f"budget_usd` in `{path}"),
        deadline_s=RunLimits.check_deadline(deadline, name=f"deadline_s` in `{path}"),
    )


@dataclass(frozen=True, kw_only=True)
class Prepared:
    """A workflow file checked and ready to run."""

    loaded: LoadedWorkflow
    """What the file defines."""
    catalog: Catalog
    """The catalog the run uses (`--catalog` / `BUDGETFLOW_CATALOG`, else the file's)."""
    inputs: Mapping[str, Any]
    """The run inputs: the file's, overridden by `--input`."""
    notes: tuple[str, ...]
    """Things worth telling the user before the run (e.g. a policy's fallbacks)."""


def prepare(
    loaded: LoadedWorkflow,
    settings: Settings,
    *,
    inputs: Mapping[str, str],
    policy: str | None = None,
) -> Prepared:
    """Everything `budgetflow run` checks before it spends anything; `budgetflow validate` runs it too.

    Raises:
        ConfigError: no catalog, a bad catalog file, or a policy that does not fit.
        WorkflowError: the workflow is invalid for this catalog and these inputs.
    """
    catalog = catalog_for(loaded, settings)
    merged = {**loaded.inputs, **inputs}
    loaded.workflow.validate(catalog=catalog, inputs=merged, how_to_pass=_how_to_pass(loaded.path))
    notes: list[str] = []
    if policy is not None:
        from budgetflow.policy_names import check_policy

        notes = check_policy(policy, loaded.workflow, catalog)
    return Prepared(loaded=loaded, catalog=catalog, inputs=merged, notes=tuple(notes))


def catalog_for(loaded: LoadedWorkflow, settings: Settings) -> Catalog:
    """The catalog file from the settings, else the workflow file's `catalog`."""
    if settings.catalog_path is not None:
        return Catalog.from_file(settings.catalog_path)
    if loaded.catalog is None:
        raise ConfigError(
            f"workflow file `{loaded.path}` defines no `catalog`; define one there or pass --catalog FILE"
        )
    return loaded.catalog


def _how_to_pass(path: Path) -> Callable[[Sequence[str]], str]:
    def advice(names: Sequence[str]) -> str:
        flags = " ".join(f"`--input {name}=VALUE`" for name in names)
        them = "it" if len(names) == 1 else "them"
        return f"pass {flags} or add {them} to the `inputs` dict of `{path}`"

    return advice


def route_catalog(catalog: Catalog, settings: Settings) -> tuple[Catalog, list[str]]:
    """Send each model where it can really go; return the catalog and the simulated model names.

    A model is simulated when its provider has no key (and it is not a local vLLM model with
    a URL). Its name and prices stay, so budgets mean the same.
    """
    models = []
    simulated: list[str] = []
    for spec in catalog.models.values():
        if spec.simulated:
            simulated.append(spec.name)
            models.append(spec)
            continue
        if spec.provider == "hosted_vllm" and (spec.api_base or settings.vllm_url or spec.pool):
            api = spec.api_base or (None if spec.pool else settings.vllm_url)
            models.append(spec.model_copy(update={"api_base": api}))
            continue
        if spec.provider in settings.provider_keys:
            models.append(spec)
            continue
        simulated.append(spec.name)
        models.append(spec.model_copy(update={"litellm_model": f"{SIMULATED_PREFIX}{spec.name}"}))
    return Catalog.of(*models, pools=tuple(catalog.pools.values())), simulated
