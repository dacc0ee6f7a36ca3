"""The `budgetflow` command line and settings: the edge where configuration is read."""

from budgetflow.cli import main
from budgetflow.settings import Settings, load_settings

__all__ = ["Settings", "load_settings", "main"]
