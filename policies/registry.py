"""Policies by name, for `run(..., policy="...")` and the CLI."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.plan import Policy
from policies.baselines import AlwaysCheapest, AlwaysStrongest, FixedModel
from policies.budget_splits import (
    StaticSplit,
    critical_path_weights,
    dirichlet_weights,
    latency_weights,
    success_weights,
    uniform_weights,
)
from policies.direct_router import DirectRouter
from policies.feasibility import MAX_SAMPLES
from policies.mcpp import MCPP, MCPPConfig
from policies.pacing import DualMirrorDescent, ThresholdRouter
from policies.rollout import warm_up

__all__ = ["PolicyFactory", "make_policy", "policy_names", "register"]

PolicyFactory = Callable[[int], Policy]


def _fixed(spec: str) -> PolicyFactory:
    # "fixed:MODEL:K" -> FixedModel(model=MODEL, samples=K)
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1]:
        raise ConfigError(f"policy `{spec}` is not of the form `fixed:MODEL` or `fixed:MODEL:K`")
    try:
        k = int(parts[2]) if len(parts) == 3 else 1
    except ValueError:
        raise ConfigError(f"policy `{spec}`: K must be a whole number, got `{parts[2]}`") from None
    if not 1 <= k <= MAX_SAMPLES:
        raise ConfigError(f"policy `{spec}`: K must be between 1 and {MAX_SAMPLES}, got {k}")
    return lambda seed: FixedModel(model=parts[1], samples=k, name=spec)


def _sequential(spec: str) -> PolicyFactory:
    # "sequential_K:MODEL" -> the named alias of "fixed:MODEL:K"
    head, _, model = spec.partition(":")
    k = head.removeprefix("sequential_")
    if not model or not k.isdigit():
        raise ConfigError(
            f"policy `{spec}` is not of the form `sequential_K:MODEL`, e.g. `sequential_4:small`"
        )
    factory = _fixed(f"fixed:{model}:{k}")
    return lambda seed: _renamed(factory(seed), spec)


def _renamed(policy: Policy, name: str) -> Policy:
    policy.name = name
    return policy


_FACTORIES: dict[str, PolicyFactory] = {
    "always_cheapest": lambda seed: AlwaysCheapest(),
    "always_strongest": lambda seed: AlwaysStrongest(),
    "mcpp": lambda seed: _ready(MCPP(config=MCPPConfig(seed=seed), name="mcpp")),
    "mcpp_full": lambda seed: _ready(MCPP(config=MCPPConfig(seed=seed, racing=False), name="mcpp_full")),
    # ablations: MCPP with the choice to defer, or without choosing a tighter max_tokens
    "mcpp_defer": lambda seed: _ready(
        MCPP(config=MCPPConfig(seed=seed, allow_defer=True), name="mcpp_defer")
    ),
    "mcpp_no_max_tokens": lambda seed: _ready(
        MCPP(config=MCPPConfig(seed=seed, choose_max_tokens=False), name="mcpp_no_max_tokens")
    ),
    "split_uniform": lambda seed: StaticSplit(weights=uniform_weights, name="split_uniform", seed=seed),
    "split_dirichlet": lambda seed: StaticSplit(weights=dirichlet_weights, name="split_dirichlet", seed=seed),
    "split_latency": lambda seed: StaticSplit(weights=latency_weights, name="split_latency", seed=seed),
    "split_success": lambda seed: StaticSplit(weights=success_weights, name="split_success", seed=seed),
    "split_critical_path": lambda seed: StaticSplit(
        weights=critical_path_weights, name="split_critical_path", seed=seed
    ),
    "threshold_router": lambda seed: ThresholdRouter(),
    "direct_router": lambda seed: DirectRouter(),
    "dual_mirror_descent": lambda seed: DualMirrorDescent(),
}


def _ready(policy: MCPP) -> MCPP:
    # Compile (or load) the rollout kernel before the run's clock starts, not in its first decision.
    warm_up()
    return policy


def register(name: str, factory: PolicyFactory) -> None:
    """Make a policy available by name (used by policy modules)."""
    _FACTORIES[name] = factory


def policy_names() -> list[str]:
    """Names accepted by `make_policy`, sorted (plus the `fixed:MODEL:K` and `sequential_K:MODEL` forms)."""
    return sorted(_FACTORIES)


def make_policy(name: str, *, seed: int = 0) -> Policy:
    """Build the policy called `name`, seeded with `seed`."""
    if name.startswith("fixed:"):
        return _fixed(name)(seed)
    if name.startswith("sequential_"):
        return _sequential(name)(seed)
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown policy `{name}`{did_you_mean(name, _FACTORIES)}; choose one of "
            + ", ".join(f"`{n}`" for n in policy_names())
            + ", or `fixed:MODEL:K` / `sequential_K:MODEL`"
        )
    return factory(seed)
