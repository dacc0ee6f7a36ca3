"""budgetflow package."""
