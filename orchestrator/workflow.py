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

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.agent import Agent, Check
from orchestrator.catalog import NO_MODEL, Catalog
from orchestrator.errors import ConfigError, WorkflowError, did_you_mean
from orchestrator.estimates import AttemptEstimate
from orchestrator.plan import DagView

__all__ = [
    "MAX_BUDGET_USD",
    "MAX_DEADLINE_S",
    "MIN_BUDGET_USD",
    "Ancestry",
    "RunLimits",
    "Subtask",
    "SubtaskRef",
    "Workflow",
]

T = TypeVar("T")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
"""A subtask name, matched whole (`fullmatch`: `$` would let a trailing newline through)."""
_CYCLE_SHOWN = 12
"""Longest cycle a message spells out in full."""


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
    """Catalog models this subtask may run on, cheapest first by convention (`(NO_MODEL,)` for a
    subtask that listed none: its agent is plain code and may not call a model)."""
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


MIN_BUDGET_USD = Decimal("0.000000001")
"""The smallest budget: one nano-dollar, the unit the ledger counts in."""
MAX_BUDGET_USD = Decimal(1_000_000)
"""The largest budget a run accepts; more is taken for a typo."""
MAX_DEADLINE_S = 365 * 24 * 3600.0
"""The longest deadline a run accepts (a year); for no deadline give none."""

_BUDGET_HINT = "give a positive budget in USD, e.g. 0.40"
_DEADLINE_HINT = "give a positive deadline in seconds, e.g. 90 (or none for no deadline)"


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
        """Validate both limits (see `check_budget`, `check_deadline`); `ConfigError` says what to give."""
        return cls(budget_usd=cls.check_budget(budget_usd), deadline_s=cls.check_deadline(deadline_s))

    @staticmethod
    def check_budget(value: object, *, name: str = "budget_usd") -> Decimal:
        """A budget as an exact `Decimal`, or a `ConfigError` naming `name` and the value.

        A budget is a finite number of USD from one nano-dollar (the ledger's unit) up to
        `MAX_BUDGET_USD`; floats are read through their shortest text, so 0.1 is 0.1.
        """
        if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
            raise ConfigError(f"`{name}` = {value!r} is not an amount in USD; {_BUDGET_HINT}")
        text = str(value).strip()
        try:
            amount = Decimal(text.removeprefix("$"))
        except (InvalidOperation, ValueError):
            raise ConfigError(f"`{name}` = `{text}` is not an amount in USD; {_BUDGET_HINT}") from None
        if not amount.is_finite():
            raise ConfigError(f"`{name}` = `{text}` is not a finite amount; {_BUDGET_HINT}")
        if amount <= 0:
            raise ConfigError(f"`{name}` = `{text}` is not positive; {_BUDGET_HINT}")
        if amount < MIN_BUDGET_USD:
            raise ConfigError(
                f"`{name}` = `{text}` is below one nano-dollar ({MIN_BUDGET_USD:f} USD), the smallest"
                f" amount the ledger counts; {_BUDGET_HINT}"
            )
        if amount > MAX_BUDGET_USD:
            raise ConfigError(
                f"`{name}` = `{text}` is above the largest budget a run accepts ({MAX_BUDGET_USD} USD);"
                f" {_BUDGET_HINT}"
            )
        return amount

    @staticmethod
    def check_deadline(value: object, *, name: str = "deadline_s") -> float | None:
        """A deadline in seconds (`None`: no deadline), or a `ConfigError` naming `name` and the value."""
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
            raise ConfigError(f"`{name}` = {value!r} is not a number of seconds; {_DEADLINE_HINT}")
        text = str(value).strip()
        try:
            seconds = float(text)
        except (ValueError, OverflowError):
            raise ConfigError(f"`{name}` = `{text}` is not a number of seconds; {_DEADLINE_HINT}") from None
        if not math.isfinite(seconds):
            raise ConfigError(f"`{name}` = `{text}` is not a finite number of seconds; {_DEADLINE_HINT}")
        if seconds <= 0:
            raise ConfigError(f"`{name}` = `{text}` is not positive; {_DEADLINE_HINT}")
        if seconds > MAX_DEADLINE_S:
            raise ConfigError(
                f"`{name}` = `{text}` is longer than a year ({MAX_DEADLINE_S:g} s), the longest deadline"
                f" a run accepts; {_DEADLINE_HINT}"
            )
        return seconds


class Workflow:
    """A DAG of subtasks, built in Python."""

    def __init__(self, name: str, *, inputs: Iterable[str] | None = None) -> None:
        """Start an empty workflow.

        Args:
            name: shown in the CLI and stored with each run.
            inputs: names of the run inputs the templates may use; `None` checks
                them against the inputs given at run time instead.
        """
        if not isinstance(name, str) or not name.strip():
            raise WorkflowError(
                f'a workflow needs a non-empty name, e.g. `Workflow("fix-bug")`; got {name!r}'
            )
        if any(not ch.isprintable() for ch in name):
            raise WorkflowError(
                f"workflow name {name!r} contains a control character (a newline, a tab, ...);"
                " use a name that prints on one line"
            )
        if inputs is not None:
            if isinstance(inputs, str):
                raise WorkflowError(
                    f"workflow `{name}`: `inputs` must be a list of names, not the string `{inputs}`;"
                    f' write inputs=["{inputs}"]'
                )
            try:
                inputs = list(inputs)
            except TypeError:
                raise WorkflowError(
                    f"workflow `{name}`: `inputs` must be a list of names, got {type(inputs).__name__}"
                ) from None
            bad = [i for i in inputs if not isinstance(i, str) or not i]
            if bad:
                raise WorkflowError(
                    f"workflow `{name}`: `inputs` must hold input names (non-empty strings), got {bad!r}"
                )
        self.name = name
        self.inputs: frozenset[str] | None = None if inputs is None else frozenset(inputs)
        self._subtasks: dict[str, Subtask] = {}

    def subtask(
        self,
        name: str,
        agent: Agent,
        *,
        models: Sequence[str] = (),
        after: Iterable[SubtaskRef[Any] | str] = (),
        check: Check | None = None,
        estimates: Mapping[str, AttemptEstimate] | None = None,
        max_attempts: int | None = None,
        max_tokens: int | None = None,
        max_errors: int = 3,
    ) -> SubtaskRef[Any]:
        """Add a subtask and return a handle for `after=` and typed output access."""
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise WorkflowError(
                f"subtask name {_quoted(name)} is not valid; use letters, digits, `_` or `-`,"
                " starting with a letter or `_`"
            )
        if name in self._subtasks:
            raise WorkflowError(
                f"subtask `{name}` is defined twice in workflow `{self.name}`; give each subtask a"
                " unique name"
            )
        _check_agent(name, agent)
        model_list = _model_list(name, models, agent)
        if check is not None and not callable(check):
            raise WorkflowError(
                f"subtask `{name}`: `check` must be a check such as `checks.regex(...)`, got"
                f" {type(check).__name__} {check!r}"
            )
        for flag, value in (("max_attempts", max_attempts), ("max_tokens", max_tokens)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise WorkflowError(f"subtask `{name}`: {flag} must be a whole number >= 1, got {value!r}")
        if not isinstance(max_errors, int) or isinstance(max_errors, bool) or max_errors < 1:
            raise WorkflowError(
                f"subtask `{name}`: max_errors must be a whole number >= 1, got {max_errors!r}"
            )
        deps = _dependencies(name, after)
        if name in deps:
            raise WorkflowError(f"subtask `{name}` depends on itself; remove it from `after`")
        est = _estimates(name, estimates, model_list)
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

    def validate(
        self,
        *,
        catalog: Catalog | None = None,
        inputs: Mapping[str, Any] | None = None,
        how_to_pass: Callable[[Sequence[str]], str] | None = None,
    ) -> None:
        """Check the whole DAG; raise one `WorkflowError` listing every problem.

        Args:
            catalog: check that every model is in it.
            inputs: the run inputs; `None` leaves undeclared inputs to be checked at run time.
            how_to_pass: for messages about missing run inputs: how to pass the named inputs
                where the workflow is run (the CLI says `--input NAME=VALUE`); default
                `inputs={...}`.
        """
        problems: list[str] = []
        if not self._subtasks:
            problems.append(f"workflow `{self.name}` has no subtasks; add one with `wf.subtask(...)`")
        for sub in self._subtasks.values():
            for dep in sub.after:
                if dep not in self._subtasks:
                    problems.append(
                        f"subtask `{sub.name}` depends on {_quoted(dep)}, which does not exist"
                        f"{did_you_mean(dep, self._subtasks)}"
                    )
            if catalog is not None:
                for model in sub.models:
                    if model not in catalog:
                        problems.append(
                            f"subtask `{sub.name}` uses model {_quoted(model)}, which is not in the catalog"
                            f"{did_you_mean(model, catalog.models)}; known models:"
                            f" {', '.join(f'`{m}`' for m in sorted(catalog.models))}"
                        )
        cycle = self._find_cycle()
        if cycle:
            shown = [f"`{n}`" for n in cycle]
            if len(shown) > _CYCLE_SHOWN:
                left = len(shown) - _CYCLE_SHOWN
                shown = [*shown[: _CYCLE_SHOWN - 2], f"... ({left} more)", *shown[-2:]]
            problems.append(
                "the dependencies form a cycle: " + " -> ".join(shown) + "; remove one of these edges"
            )
        available_inputs = (
            self.inputs if self.inputs is not None else (frozenset(inputs) if inputs is not None else None)
        )
        if inputs is not None and self.inputs is not None:
            missing = sorted(self.inputs - set(inputs))
            if missing:
                advice = "pass them with inputs={...}" if how_to_pass is None else how_to_pass(missing)
                problems.append(
                    f"run inputs are missing {', '.join(f'`{m}`' for m in missing)}, which workflow"
                    f" `{self.name}` declares; {advice}"
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
                    hint = self._variable_hint(sub.name, var, inputs, how_to_pass)
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

    def _variable_hint(
        self,
        subtask: str,
        var: str,
        inputs: Mapping[str, Any] | None,
        how_to_pass: Callable[[Sequence[str]], str] | None,
    ) -> str:
        """What to do about a template variable that nothing provides."""
        if var in self._subtasks:
            return f"add `{var}` to `after=` of `{subtask}`"
        if self.inputs is not None and inputs is not None and var in inputs:
            return (
                f"`{var}` is given as a run input, but workflow `{self.name}` declares only"
                f" {', '.join(f'`{i}`' for i in sorted(self.inputs)) or 'no inputs'}; add `{var}` to"
                f" `inputs=[...]` of `Workflow({self.name!r}, ...)`"
            )
        known = set(self._subtasks) | set(self.inputs or ()) | set(inputs or ())
        if self.inputs is not None:
            passing = "pass it as a run input" if how_to_pass is None else how_to_pass([var])
            return (
                f"declare `{var}` in `inputs=[...]` of `Workflow({self.name!r}, ...)` and {passing}"
                f"{did_you_mean(var, known)}"
            )
        passing = f"pass `{var}` as a run input" if how_to_pass is None else how_to_pass([var])
        return f"{passing} or declare it in `inputs=`{did_you_mean(var, known)}"

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
        """Subtask names, parents before children (definition order among equals).

        The order is that of sweeping the definitions again and again, taking each subtask
        whose parents are all taken: a subtask's sweep is the latest of its parents' (one
        more when a parent is defined after it), and names sort by (sweep, definition).
        Computed in one pass over the edges, so a long chain defined child-first costs no
        more than one defined parent-first.
        """
        index = {name: i for i, name in enumerate(self._subtasks)}
        waiting = {name: len(sub.after) for name, sub in self._subtasks.items()}
        children: dict[str, list[str]] = {name: [] for name in self._subtasks}
        for name, sub in self._subtasks.items():
            for dep in sub.after:
                if dep not in children:
                    raise WorkflowError(
                        f"workflow `{self.name}`: subtask `{name}` depends on {_quoted(dep)}, which does"
                        " not exist; run `validate()` for details"
                    )
                children[dep].append(name)
        sweep = dict.fromkeys(self._subtasks, 0)
        queue = [name for name, n in waiting.items() if n == 0]
        taken = 0
        while taken < len(queue):
            name = queue[taken]
            taken += 1
            for child in children[name]:
                sweep[child] = max(sweep[child], sweep[name] + (index[name] > index[child]))
                waiting[child] -= 1
                if waiting[child] == 0:
                    queue.append(child)
        if len(queue) != len(self._subtasks):
            raise WorkflowError(f"workflow `{self.name}` is not a DAG; run `validate()` for details")
        return tuple(sorted(queue, key=lambda n: (sweep[n], index[n])))

    def dag_view(self) -> DagView:
        """The shape the planner sees."""
        order = self.topological_order()
        return DagView(
            subtasks=order,
            parents={n: self._subtasks[n].after for n in order},
            models={n: self._subtasks[n].models for n in order},
        )

    def _find_cycle(self) -> list[str] | None:
        # Depth-first search with an explicit stack: a chain of any length, no recursion limit.
        color: dict[str, int] = {}
        for root in self._subtasks:
            if root in color:
                continue
            color[root] = 1
            path = [root]
            stack = [iter(self._subtasks[root].after)]
            while stack:
                dep = next(stack[-1], None)
                if dep is None:
                    color[path.pop()] = 2
                    stack.pop()
                    continue
                if dep not in self._subtasks:
                    continue
                if color.get(dep) == 1:
                    found = [*path[path.index(dep) :], dep]
                    # dependencies point child -> parent; show it in execution order
                    return list(reversed(found))
                if dep not in color:
                    color[dep] = 1
                    path.append(dep)
                    stack.append(iter(self._subtasks[dep].after))
        return None


def _check_agent(subtask: str, agent: object) -> None:
    """An agent has `template_variables()` and an async `attempt(ctx)`."""
    if isinstance(agent, type) or not callable(getattr(agent, "attempt", None)):
        raise WorkflowError(
            f"subtask `{subtask}`: the agent must be an agent object such as `LLMAgent(prompt=...)` or"
            f" `FunctionAgent(fn)`, got {agent!r}"
        )
    if not callable(getattr(agent, "template_variables", None)):
        raise WorkflowError(
            f"subtask `{subtask}`: agent {type(agent).__name__} has no `template_variables()`; an agent"
            " says which template variables it reads (an empty set if none)"
        )


def _model_list(subtask: str, models: object, agent: object) -> tuple[str, ...]:
    if isinstance(models, str):
        raise WorkflowError(
            f"subtask `{subtask}`: `models` must be a list of model names, not the string"
            f' `{models}`; write models=["{models}"]'
        )
    if not isinstance(models, Iterable):
        raise WorkflowError(
            f"subtask `{subtask}`: `models` must be a list of catalog model names, got {models!r}"
        )
    model_list = tuple(models)
    if not model_list:
        if getattr(agent, "needs_model", False):
            raise WorkflowError(
                f"subtask `{subtask}`: its agent calls a model, but `models` is empty; give at least"
                ' one catalog model, e.g. models=["small"]'
            )
        return (NO_MODEL,)  # plain code: runs once per batch, free, and may not call a model
    if NO_MODEL in model_list:
        raise WorkflowError(
            f"subtask `{subtask}`: `{NO_MODEL}` is what a subtask without models runs on; leave"
            " `models` out instead of naming it"
        )
    bad = [m for m in model_list if not isinstance(m, str) or not m]
    if bad:
        raise WorkflowError(
            f"subtask `{subtask}`: `models` must hold catalog model names, got {bad!r}"
            f" in {list(model_list)!r}"
        )
    if len(set(model_list)) != len(model_list):
        raise WorkflowError(f"subtask `{subtask}` lists a model twice in {list(model_list)}")
    return model_list


def _dependencies(subtask: str, after: object) -> tuple[str, ...]:
    if isinstance(after, str | SubtaskRef):
        shown = after.name if isinstance(after, SubtaskRef) else after
        raise WorkflowError(
            f"subtask `{subtask}`: `after` must be a list, not a single subtask; write after=[{shown}]"
        )
    if not isinstance(after, Iterable):
        raise WorkflowError(
            f"subtask `{subtask}`: `after` must be a list of subtasks (their handles or names), got {after!r}"
        )
    deps: list[str] = []
    for dep in after:
        name = dep.name if isinstance(dep, SubtaskRef) else dep
        if not isinstance(name, str):
            raise WorkflowError(
                f"subtask `{subtask}`: `after` holds {dep!r}; give the handles `wf.subtask(...)` returned"
                " or subtask names"
            )
        deps.append(name)
    return tuple(deps)


def _estimates(subtask: str, estimates: object, model_list: tuple[str, ...]) -> dict[str, AttemptEstimate]:
    if estimates is None:
        return {}
    if not isinstance(estimates, Mapping):
        raise WorkflowError(
            f"subtask `{subtask}`: `estimates` must map model names to `AttemptEstimate`s, got"
            f" {type(estimates).__name__}"
        )
    est: dict[str, AttemptEstimate] = {}
    for model, value in estimates.items():
        if model not in model_list:
            close = did_you_mean(model, model_list) if isinstance(model, str) else ""
            raise WorkflowError(
                f"subtask `{subtask}` has estimates for model {_quoted(model)}, which is not in its"
                f" models {list(model_list)}{close}"
            )
        if not isinstance(value, AttemptEstimate):
            raise WorkflowError(
                f"subtask `{subtask}`: the estimate for model `{model}` must be an `AttemptEstimate`"
                f" (e.g. `AttemptEstimate(success_prob=0.8, ...)`), got {value!r}"
            )
        est[model] = value
    return est


def _quoted(value: object) -> str:
    """A name for a message: in backticks when it prints as itself, else as a Python literal."""
    return f"`{value}`" if isinstance(value, str) and value.isprintable() else repr(value)


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
