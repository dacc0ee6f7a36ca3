"""`NamedCheck`: the base of every built-in check: a readable name and crash handling."""

from __future__ import annotations

from abc import ABC, abstractmethod

from orchestrator.agent import AttemptContext, AttemptOutput, CheckResult
from orchestrator.errors import BudgetflowError, CheckError

__all__ = ["NamedCheck"]


class NamedCheck(ABC):
    """A check with a name, whose crashes become `CheckError`.

    Subclasses implement `judge`. Calling the check runs `judge` and turns any
    exception it raises into a `CheckError` naming the check and the subtask,
    so the executor records the attempt as an error (a bug in the check) rather
    than as a failed attempt. budgetflow's own errors pass through unchanged,
    as they would from an agent: run-time ones (the budget refusing a judge's
    call, the deadline, a provider failure) and user mistakes (a judge template
    naming a variable nobody provides), which end the run with their message.
    """

    def __init__(self, name: str) -> None:
        """Name the check, e.g. ``"regex('diff --git')"``; shown in messages and the CLI."""
        self.name = name

    @abstractmethod
    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        """The verdict on `output`; may raise (the caller wraps the error)."""

    async def __call__(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        """Run `judge`, turning a crash into `CheckError`.

        Raises:
            CheckError: the check raised, or returned something other than a `CheckResult`.
        """
        try:
            result = await self.judge(output, ctx)
        except BudgetflowError:
            raise
        except Exception as exc:
            raise CheckError(
                f"check `{self.name}` crashed on subtask `{ctx.subtask}` (attempt"
                f" `{ctx.attempt_id}`): {type(exc).__name__}: {exc}; fix the check (the attempt"
                " is recorded as an error, not as a failure)"
            ) from exc
        if not isinstance(result, CheckResult):
            raise CheckError(
                f"check `{self.name}` returned {type(result).__name__} on subtask"
                f" `{ctx.subtask}`; a check must return a `CheckResult`"
            )
        return result

    def __repr__(self) -> str:
        return self.name
