"""`python -m budgetflow`."""

from budgetflow.cli import run_cli

run_cli()
