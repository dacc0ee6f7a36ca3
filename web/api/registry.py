"""The workflows the HTTP API may run, registered by module path from the settings.

A request names a workflow by its name only; the module behind it was chosen by whoever
configured the server (`api_workflows` in `budgetflow.toml`, `BUDGETFLOW_API_WORKFLOWS`,
`budgetflow serve --workflow`). Nothing is ever imported from a path a request gives.

A module follows the convention of workflow files (`budgetflow.loader`): it defines
`workflow`, and optionally `catalog`, `inputs`, `budget_usd` and `deadline_s`. Its
catalog is routed as `budgetflow run` routes it: a model whose provider has no API key
here is served by the simulated backend under the same name and prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from budgetflow.loader import LoadedWorkflow, catalog_for, load_workflow_module, route_catalog
from budgetflow.settings import Settings
from orchestrator.catalog import NO_MODEL, Catalog
from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.workflow import Workflow

__all__ = ["RegisteredWorkflow", "WorkflowRegistry"]


@dataclass(frozen=True, kw_only=True)
class RegisteredWorkflow:
    """A workflow the API may run, with the catalog it runs on here."""

    module: str
    """The module it was loaded from."""
    workflow: Workflow
    """The workflow."""
    catalog: Catalog
    """Its catalog as routed on this server (simulated models under their own names and prices)."""
    simulated: tuple[str, ...]
    """Catalog models served by the simulated backend here (no API key or vLLM URL)."""
    inputs: Mapping[str, Any] = field(default_factory=dict)
    """Default run inputs."""
    budget_usd: Decimal | None = None
    """Default budget; `None`: a submission must give one."""
    deadline_s: float | None = None
    """Default deadline; `None`: none."""

    @property
    def name(self) -> str:
        """The workflow's name, by which requests choose it."""
        return self.workflow.name

    @property
    def models(self) -> list[str]:
        """The catalog models its subtasks may use, sorted."""
        return sorted({m for s in self.workflow.subtasks.values() for m in s.models} - {NO_MODEL})

    @classmethod
    def of(cls, loaded: LoadedWorkflow, settings: Settings, *, module: str) -> RegisteredWorkflow:
        """Register what a workflow module defines, its catalog priced and routed for `settings`.

        Raises:
            ConfigError: no catalog, or a price litellm does not know.
            WorkflowError: the workflow does not fit its catalog.
        """
        catalog = catalog_for(loaded, settings)
        if any(not m.priced for m in catalog.models.values()):
            catalog = catalog.resolve_prices()
        loaded.workflow.validate(catalog=catalog)
        routed, simulated = route_catalog(catalog, settings)
        return cls(
            module=module,
            workflow=loaded.workflow,
            catalog=routed,
            simulated=tuple(simulated),
            inputs=dict(loaded.inputs),
            budget_usd=loaded.budget_usd,
            deadline_s=loaded.deadline_s,
        )


class WorkflowRegistry:
    """Registered workflows by name."""

    def __init__(self, workflows: Iterable[RegisteredWorkflow] = ()) -> None:
        """Register `workflows`; two with one name are a `ConfigError`."""
        self._by_name: dict[str, RegisteredWorkflow] = {}
        for item in workflows:
            known = self._by_name.get(item.name)
            if known is not None:
                raise ConfigError(
                    f"workflow `{item.name}` is registered twice, from `{known.module}` and `{item.module}`;"
                    " give each workflow its own name or register one module"
                )
            self._by_name[item.name] = item

    @classmethod
    def from_modules(cls, modules: Sequence[str], settings: Settings) -> WorkflowRegistry:
        """Import each module (`examples.code_pipeline`) and register its workflow.

        Raises:
            ConfigError: a module cannot be imported or defines no workflow, two share a name.
            WorkflowError: a workflow does not fit its catalog.
        """
        return cls(
            RegisteredWorkflow.of(load_workflow_module(module), settings, module=module) for module in modules
        )

    def get(self, name: str) -> RegisteredWorkflow:
        """The workflow called `name`.

        Raises:
            KeyError: none is; the message lists the registered names.
        """
        found = self._by_name.get(name)
        if found is None:
            names = ", ".join(f"`{n}`" for n in sorted(self._by_name)) or "none"
            raise KeyError(
                f"no workflow `{name}` is registered{did_you_mean(name, self._by_name)}; registered: {names}"
                " (`GET /workflows`; the server's `api_workflows` setting registers more)"
            )
        return found

    def __iter__(self) -> Iterator[RegisteredWorkflow]:
        """The workflows, by name."""
        return iter(sorted(self._by_name.values(), key=lambda w: w.name))

    def __len__(self) -> int:
        """How many are registered."""
        return len(self._by_name)
