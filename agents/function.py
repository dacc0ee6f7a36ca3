"""`FunctionAgent`: plain async Python as a subtask.

```python
async def merge(ctx: AttemptContext) -> dict[str, str]:
    return {"plan": ctx.texts["plan"], "patch": ctx.texts["patch"]}

wf.subtask("merge", FunctionAgent(merge), after=[plan, patch])
```

A function subtask lists no models: it runs once per batch, costs nothing, and
`budgetflow run` and `runs show` show it as what it is, a function. Its return
value is handed to children as the subtask's output; its text form is the
value itself when it is a string, else `str(value)`. Returning an
`AttemptOutput` sets both (and any simulated verdict) explicitly.

A function may also call models through `ctx.chat`, like any agent: then give
the subtask `models=[...]` (the planner chooses among them, and each call is
budgeted and recorded); without models, `ctx.chat` raises `ConfigError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from agents._common import callable_name, is_async_callable
from orchestrator.agent import AttemptContext, AttemptOutput
from orchestrator.errors import WorkflowError

__all__ = ["FunctionAgent"]


class FunctionAgent:
    """Run an `async def fn(ctx)` as one attempt."""

    def __init__(self, fn: Callable[[AttemptContext], Awaitable[object]]) -> None:
        """Wrap `fn`.

        Args:
            fn: an async function (or async callable) taking the `AttemptContext`.

        Raises:
            WorkflowError: `fn` is not callable or not async.
        """
        if not callable(fn):
            raise WorkflowError(f"`FunctionAgent` needs an async function, got {type(fn).__name__} {fn!r}")
        if not is_async_callable(fn):
            name = callable_name(fn)
            raise WorkflowError(
                f"`FunctionAgent` got the sync function `{name}`; define it with `async def"
                f" {name}(ctx): ...` (the runtime is async; wrap blocking work in"
                " `await asyncio.to_thread(...)`)"
            )
        self.fn = fn

    def template_variables(self) -> frozenset[str]:
        """None: the function reads `ctx` directly."""
        return frozenset()

    async def attempt(self, ctx: AttemptContext) -> AttemptOutput:
        """Await the function and wrap its result."""
        value = await self.fn(ctx)
        if isinstance(value, AttemptOutput):
            return value
        return AttemptOutput(value=value, text=value if isinstance(value, str) else str(value))

    def __repr__(self) -> str:
        return f"FunctionAgent({callable_name(self.fn)})"
