"""Workflows: a DAG of subtasks, each with an agent, the models it may use, and a check.

```python
wf = Workflow("fix-bug", inputs=["issue"])
plan = wf.subtask("plan", LLMAgent(prompt="Plan a fix for: {issue}"), models=["small", "large"])
patch = wf.subtask("patch", LLMAgent(prompt="{plan}\\nWrite the patch."), after=[plan],
                   models=["small", "large"], check=checks.regex(r"diff --git"))
```

Mistakes that can be seen at once (a duplicate name, an empty model list)
raise `WorkflowError` from `subtask`; the rest (cycles, unknown dependencies,
unknown models, template variables nobody provides) from `validate`, which
lists every problem found, each with what to do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.agent import Agent, Check
from orchestrator.catalog import Catalog
from orchestrator.errors import ConfigError, WorkflowError, did_you_mean
from orchestrator.estimates import AttemptEstimate
from orchestrator.plan import DagView

__all__ = ["Ancestry", "RunLimits", "Subtask", "SubtaskRef", "Workflow"]

T = TypeVar("T")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class SubtaskRef(Generic[T]):
    """A handle on a subtask, for `after=[...]` and typed access to its output."""

    name: str
    """The subtask's name."""

    def output(self, outputs: Mapping[str, Any]) -> T:
        """This subtask's output from an attempt's `ctx.outputs`."""
        value: T = outputs[self.name]
        return value


@dataclass(frozen=True, kw_only=True)
class Subtask:
    """One node of the workflow."""

    name: str
    """Unique name within the workflow."""
    agent: Agent
    """Makes each attempt."""
    after: tuple[str, ...]
    """Names of the subtasks whose outputs this one needs."""
    models: tuple[str, ...]
    """Catalog models this subtask may run on, cheapest first by convention."""
    check: Check | None = None
    """Judges each attempt; `None` accepts every attempt that returns."""
    estimates: Mapping[str, AttemptEstimate] = field(default_factory=dict)
    """Prior beliefs per model (success, output tokens, latency)."""
    max_attempts: int | None = None
    """Give up (run fails) after this many attempts; `None` means no limit."""
    max_tokens: int | None = None
    """Ceiling on every call's output tokens; a policy may choose less, never more."""
    max_errors: int = 3
    """Give up (run fails) after this many attempts end in an error rather than a verdict.

    An error is an agent that raised, a provider error that outlived its retries, or a call
    whose reservation did not fit: errors repeat, so retrying them forever only burns time."""


class RunLimits(BaseModel):
    """A run's hard limits, validated."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    budget_usd: Decimal = Field(gt=0)
    """Hard dollar budget; spend never exceeds it."""
    deadline_s: float | None = Field(default=None, gt=0)
    """Seconds from the start; `None` means no deadline."""

    @field_validator("budget_usd", mode="before")
    @classmethod
    def _decimal_from_float(cls, value: object) -> object:
        return Decimal(str(value)) if isinstance(value, float) else value

    @classmethod
    def checked(cls, budget_usd: Decimal | float | str, deadline_s: float | None) -> RunLimits:
        """Validate, turning pydantic's message into a `ConfigError` that says what to do."""
        try:
            return cls(budget_usd=Decimal(str(budget_usd)), deadline_s=deadline_s)
        except ValidationError as exc:
            problems = "; ".join(
                f"`{'.'.join(str(p) for p in e['loc'])}` = {e.get('input')!r}: {e['msg']}"
                for e in exc.errors()
            )
            raise ConfigError(
                f"invalid run limits: {problems}; give a positive budget in USD"
                " (e.g. 0.40) and a positive deadline in seconds (or none)"
            ) from None


class Workflow:
    """A DAG of subtasks, built in Python."""

    def __init__(self, name: str, *, inputs: Iterable[str] | None = None) -> None:
        """Start an empty workflow.

        Args:
            name: shown in the CLI and stored with each run.
            inputs: names of the run inputs the templates may use; `None` checks
                them against the inputs given at run time instead.
        """
        if not name or not name.strip():
            raise WorkflowError('a workflow needs a non-empty name, e.g. `Workflow("fix-bug")`')
        self.name = name
        self.inputs: frozenset[str] | None = None if inputs is None else frozenset(inputs)
        self._subtasks: dict[str, Subtask] = {}

    def subtask(
        self,
        name: str,
        agent: Agent,
        *,
        models: Sequence[str],
        after: Iterable[SubtaskRef[Any] | str] = (),
        check: Check | None = None,
        estimates: Mapping[str, AttemptEstimate] | None = None,
        max_attempts: int | None = None,
        max_tokens: int | None = None,
        max_errors: int = 3,
    ) -> SubtaskRef[Any]:
        """Add a subtask and return a handle for `after=` and typed output access."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise WorkflowError(
                f"subtask name `{name}` is not valid; use letters, digits, `_` or `-`,"
                " starting with a letter or `_`"
            )
        if name in self._subtasks:
            raise WorkflowError(
                f"subtask `{name}` is defined twice in workflow `{self.name}`; give each subtask a"
                " unique name"
            )
        if isinstance(models, str):
            raise WorkflowError(
                f"subtask `{name}`: `models` must be a list of model names, not the string"
                f' `{models}`; write models=["{models}"]'
            )
        model_list = tuple(models)
        if not model_list:
            raise WorkflowError(
                f"subtask `{name}` has an empty model list; give at least one catalog model,"
                ' e.g. models=["small"]'
            )
        if len(set(model_list)) != len(model_list):
            raise WorkflowError(f"subtask `{name}` lists a model twice in {list(model_list)}")
        if max_attempts is not None and max_attempts < 1:
            raise WorkflowError(f"subtask `{name}`: max_attempts must be >= 1, got {max_attempts}")
        if max_tokens is not None and max_tokens < 1:
            raise WorkflowError(f"subtask `{name}`: max_tokens must be >= 1, got {max_tokens}")
        if max_errors < 1:
            raise WorkflowError(f"subtask `{name}`: max_errors must be >= 1, got {max_errors}")
        deps = tuple(dep.name if isinstance(dep, SubtaskRef) else dep for dep in after)
        if name in deps:
            raise WorkflowError(f"subtask `{name}` depends on itself; remove it from `after`")
        est = dict(estimates or {})
        for model in est:
            if model not in model_list:
                raise WorkflowError(
                    f"subtask `{name}` has estimates for model `{model}`, which is not in its"
                    f" models {list(model_list)}{did_you_mean(model, model_list)}"
                )
        self._subtasks[name] = Subtask(
            name=name,
            agent=agent,
            after=deps,
            models=model_list,
            check=check,
            estimates=est,
            max_attempts=max_attempts,
            max_tokens=max_tokens,
            max_errors=max_errors,
        )
        return SubtaskRef(name)

    @property
    def subtasks(self) -> Mapping[str, Subtask]:
        """Subtasks by name, in definition order (read-only)."""
        return MappingProxyType(self._subtasks)

    def __len__(self) -> int:
        return len(self._subtasks)

    def validate(self, *, catalog: Catalog | None = None, inputs: Mapping[str, Any] | None = None) -> None:
        """Check the whole DAG; raise one `WorkflowError` listing every problem."""
        problems: list[str] = []
        if not self._subtasks:
            problems.append(f"workflow `{self.name}` has no subtasks; add one with `wf.subtask(...)`")
        for sub in self._subtasks.values():
            for dep in sub.after:
                if dep not in self._subtasks:
                    problems.append(
                        f"subtask `{sub.name}` depends on `{dep}`, which does not exist"
                        f"{did_you_mean(dep, self._subtasks)}"
                    )
            if catalog is not None:
                for model in sub.models:
                    if model not in catalog:
                        problems.append(
                            f"subtask `{sub.name}` uses model `{model}`, which is not in the catalog"
                            f"{did_you_mean(model, catalog.models)}; known models:"
                            f" {', '.join(f'`{m}`' for m in sorted(catalog.models))}"
                        )
        cycle = self._find_cycle()
        if cycle:
            problems.append(
                "the dependencies form a cycle: "
                + " -> ".join(f"`{n}`" for n in cycle)
                + "; remove one of these edges"
            )
        available_inputs = (
            self.inputs if self.inputs is not None else (frozenset(inputs) if inputs is not None else None)
        )
        if inputs is not None and self.inputs is not None:
            missing = sorted(self.inputs - set(inputs))
            if missing:
                problems.append(
                    f"run inputs are missing {', '.join(f'`{m}`' for m in missing)}, which workflow"
                    f" `{self.name}` declares; pass them with inputs={{...}}"
                )
        if not cycle and not any(d not in self._subtasks for s in self._subtasks.values() for d in s.after):
            ancestry = Ancestry({n: sub.after for n, sub in self._subtasks.items()})
            for sub in self._subtasks.values():
                for var in sorted(sub.agent.template_variables()):
                    if ancestry.is_ancestor(var, of=sub.name):
                        continue
                    if available_inputs is not None and var in available_inputs:
                        continue
                    if available_inputs is None and var not in self._subtasks:
                        continue  # inputs unknown yet: checked again at run time
                    hint = (
                        f"add `{var}` to `after=` of `{sub.name}`"
                        if var in self._subtasks
                        else f"pass `{var}` as a run input or declare it in `inputs=`"
                        f"{did_you_mean(var, set(self._subtasks) | set(available_inputs or ()))}"
                    )
                    problems.append(
                        f"subtask `{sub.name}` uses template variable `{{{var}}}`, which no"
                        f" ancestor or input provides; {hint}"
                    )
        if problems:
            if len(problems) == 1:
                raise WorkflowError(problems[0])
            raise WorkflowError(
                f"workflow `{self.name}` has {len(problems)} problems:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )

    def ancestors(self, name: str) -> list[str]:
        """All subtasks `name` transitively depends on."""
        seen: dict[str, None] = {}
        stack = list(self._subtasks[name].after)
        while stack:
            dep = stack.pop()
            if dep in seen or dep not in self._subtasks:
                continue
            seen[dep] = None
            stack.extend(self._subtasks[dep].after)
        return list(seen)

    def topological_order(self) -> tuple[str, ...]:
        """Subtask names, parents before children (definition order among equals)."""
        order: list[str] = []
        done: set[str] = set()
        pending = list(self._subtasks)
        while pending:
            progressed = False
            for name in list(pending):
                if all(dep in done for dep in self._subtasks[name].after):
                    order.append(name)
                    done.add(name)
                    pending.remove(name)
                    progressed = True
            if not progressed:
                raise WorkflowError(f"workflow `{self.name}` is not a DAG; run `validate()` for details")
        return tuple(order)

    def dag_view(self) -> DagView:
        """The shape the planner sees."""
        order = self.topological_order()
        return DagView(
            subtasks=order,
            parents={n: self._subtasks[n].after for n in order},
            models={n: self._subtasks[n].models for n in order},
        )

    def _find_cycle(self) -> list[str] | None:
        color: dict[str, int] = {}
        path: list[str] = []

        def visit(node: str) -> list[str] | None:
            color[node] = 1
            path.append(node)
            for dep in self._subtasks[node].after:
                if dep not in self._subtasks:
                    continue
                if color.get(dep) == 1:
                    start = path.index(dep)
                    return [*path[start:], dep]
                if dep not in color:
                    found = visit(dep)
                    if found:
                        return found
            path.pop()
            color[node] = 2
            return None

        for name in self._subtasks:
            if name not in color:
                found = visit(name)
                if found:
                    # dependencies point child -> parent; show it in execution order
                    return list(reversed(found))
        return None


class Ancestry:
    """Who depends on whom, answered lazily: a whole ancestor set is built only when asked for.

    `is_ancestor` walks up from the subtask and stops at the first match, which for a
    template variable naming a direct parent is one step; full sets are cached.
    """

    def __init__(self, parents: Mapping[str, Sequence[str]]) -> None:
        self._parents = parents
        self._sets: dict[str, frozenset[str]] = {}

    def is_ancestor(self, candidate: str, of: str) -> bool:
        """Whether `of` depends, directly or not, on `candidate`."""
        if candidate not in self._parents or candidate == of:
            return False
        if of in self._sets:
            return candidate in self._sets[of]
        seen: set[str] = set()
        stack = list(self._parents[of])
        while stack:
            node = stack.pop()
            if node == candidate:
                return True
            if node in seen or node not in self._parents:
                continue
            seen.add(node)
            stack.extend(self._parents[node])
        return False

    def of(self, name: str) -> frozenset[str]:
        """All ancestors of `name` (cached)."""
        found = self._sets.get(name)
        if found is None:
            acc: set[str] = set()
            stack = list(self._parents[name])
            while stack:
                node = stack.pop()
                if node in acc or node not in self._parents:
                    continue
                acc.add(node)
                stack.extend(self._parents[node])
            found = self._sets[name] = frozenset(acc)
        return found
