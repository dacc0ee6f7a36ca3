"""The policy names `budgetflow run --policy` accepts: what each does, and whether it fits the workflow.

`budgetflow policies` prints `DESCRIPTIONS`; a test keeps it in step with the
registry, so a new policy cannot ship without its line. `check_policy` runs
before a run starts: an unknown name, a malformed `fixed:`/`sequential_` form or
a model that neither the catalog nor the workflow has is a `ConfigError` with a
did-you-mean, instead of a run that silently uses another model.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.catalog import Catalog
from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.workflow import Workflow

__all__ = ["DESCRIPTIONS", "FORMS", "check_policy"]

DESCRIPTIONS: Mapping[str, str] = {
    "mcpp": "the default planner: Monte Carlo rollouts of the rest of the run choose each ready"
    " subtask's model, samples and max_tokens to maximise P(complete in budget and time)",
    "mcpp_full": "mcpp without racing: every candidate gets the same number of rollouts (slower,"
    " the reference method)",
    "mcpp_defer": "mcpp that may also choose to wait (start nothing for a subtask) at a decision",
    "mcpp_no_max_tokens": "mcpp that never chooses a tighter max_tokens than the default cap",
    "always_cheapest": "every ready subtask on its cheapest model, one sample, retried on failure",
    "always_strongest": "every ready subtask on its most reliable model, one sample, retried on failure",
    "threshold_router": "the cheapest model whose estimated success is at least 0.7, else the most"
    " reliable one (RouteLLM-style)",
    "direct_router": "first attempt on the cheapest model if its estimated success on this input is"
    " at least 0.7, else on the dearest; after a failure, the dearest (RouteLLM-style cascade)",
    "dual_mirror_descent": "budget pacing: trades each subtask's success against its cost at a price"
    " that rises when spending runs ahead of the budget; picks model and samples",
    "split_uniform": "splits the budget equally over the subtasks at the start; each runs once on"
    " the samples its share buys, never retried",
    "split_dirichlet": "like split_uniform with random (Dirichlet) shares",
    "split_latency": "like split_uniform with shares in proportion to expected latency",
    "split_success": "like split_uniform with more budget where success is less likely",
    "split_critical_path": "like split_uniform with shares in proportion to the longest expected path"
    " through each subtask",
}
"""One line per registered policy, for `budgetflow policies`."""

FORMS: Mapping[str, str] = {
    "fixed:MODEL:K": "every subtask on MODEL with K parallel samples, retried on failure (a subtask"
    " that does not list MODEL runs on its first model); K defaults to 1",
    "sequential_K:MODEL": "the same as fixed:MODEL:K",
}
"""The parameterised forms, for `budgetflow policies`."""


def check_policy(name: str, workflow: Workflow, catalog: Catalog) -> list[str]:
    """Check that policy `name` exists and fits `workflow`; return notes worth telling the user.

    Raises:
        ConfigError: an unknown name (with did-you-mean), a malformed `fixed:` or
            `sequential_` form, or a model that is not in the catalog or that no
            subtask of the workflow lists.
    """
    from orchestrator.catalog import NO_MODEL
    from policies.registry import make_policy, policy_names

    if not name.startswith(("fixed:", "sequential_")):
        if name not in policy_names():
            make_policy(name)  # raises the registry's ConfigError, with did-you-mean
        return []
    model = getattr(make_policy(name), "model", None)  # parses the form (ConfigError if malformed)
    if not isinstance(model, str):
        return []
    used = sorted({m for sub in workflow.subtasks.values() for m in sub.models} - {NO_MODEL})
    if model not in catalog:
        raise ConfigError(
            f"policy `{name}` names model `{model}`, which is not in the catalog"
            f"{did_you_mean(model, used or catalog.models)}; models of workflow `{workflow.name}`:"
            f" {', '.join(f'`{m}`' for m in used)}"
        )
    if model not in used:
        raise ConfigError(
            f"policy `{name}` names model `{model}`, which no subtask of workflow `{workflow.name}`"
            f" lists{did_you_mean(model, used)}; its subtasks use {', '.join(f'`{m}`' for m in used)}"
        )
    others = [
        s.name for s in workflow.subtasks.values() if model not in s.models and NO_MODEL not in s.models
    ]
    if not others:
        return []
    shown = ", ".join(f"`{s}`" for s in others[:5]) + (
        f" and {len(others) - 5} more" if len(others) > 5 else ""
    )
    does, run, their = ("does", "runs", "its") if len(others) == 1 else ("do", "run", "their")
    return [f"policy `{name}`: {shown} {does} not list `{model}` and {run} on {their} first model instead"]
