"""How the CLI writes money, outcomes, counts and commands: one way, everywhere.

The run summary, `runs list`, `runs show`, `runs mark-abandoned` and the live
view all format through here, so a spend, an overrun or an outcome reads the
same wherever it appears.
"""

from __future__ import annotations

from decimal import Decimal

from rich.text import Text

from budgetflow.settings import Settings

__all__ = [
    "OUTCOME_STYLE",
    "command",
    "money",
    "outcome_text",
    "plural",
    "spend_text",
    "usd",
]

OUTCOME_STYLE = {
    "completed": "green",
    "running": "cyan",
    "budget_exhausted": "yellow",
    "deadline_exceeded": "yellow",
    "failed": "red",
    "cancelled": "magenta",
    "abandoned": "bold white on red",
    # subtask and attempt states
    "pending": "dim",
    "ready": "yellow",
    "passed": "green",
    "passed_late": "green",
    "error": "red",
    "not_started": "dim",
}
"""Style of each run outcome, subtask state and attempt status (unknown values: plain)."""


def usd(amount: Decimal) -> str:
    """A budget as given: `0.05` rather than `0.050000000`."""
    return format(amount.normalize(), "f")


def money(amount: Decimal | float) -> str:
    """A spend, to the micro-dollar: `$0.012345`."""
    return f"${amount:.6f}"


def spend_text(spent: Decimal, budget: Decimal, overrun: Decimal = Decimal(0)) -> Text:
    """`$0.600000 of $0.60 (100.0%)`, and the overrun when a provider billed above the budget."""
    share = f" ({spent / budget:.1%})" if budget > 0 else ""
    text = Text(f"{money(spent)} of ${usd(budget)}{share}")
    if overrun > 0:
        text.append(f" + {money(overrun)} OVERRUN", style="bold red")
        text.append(" billed above the budget", style="red")
    return text


def outcome_text(outcome: str, reason: str | None = None) -> Text:
    """An outcome (or state) in its style, with its reason after it."""
    text = Text(outcome, style=OUTCOME_STYLE.get(outcome, ""))
    if reason:
        text.append(f"  {reason}")
    return text


def plural(count: int, word: str, words: str | None = None) -> str:
    """`1 subtask`, `2 subtasks`."""
    return f"{count} {word if count == 1 else (words or word + 's')}"


def command(settings: Settings, *args: str) -> str:
    """A `budgetflow` command line the user can paste where they are.

    Under `uv run` (as after `make demo`) the `budgetflow` script is not on the
    shell's PATH, so the hint says `uv run budgetflow`; a non-default database is
    passed with `--db`, after the subcommand (it works there too).
    """
    parts = ["uv run budgetflow" if settings.via_uv else "budgetflow", *args]
    if settings.database_url != Settings().database_url:
        from storage._engine import redact  # a password is never printed

        parts += ["--db", redact(settings.database_url)]
    return " ".join(parts)
