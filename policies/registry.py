"""Policies by name, for `run(..., policy="...")` and the CLI."""

from __future__ import annotations

from collections.abc import Callable

from orchestrator.errors import ConfigError, did_you_mean
from orchestrator.plan import Policy
from policies.baselines import AlwaysCheapest, AlwaysStrongest, FixedModel

__all__ = ["make_policy", "policy_names"]

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
    if k < 1:
        raise ConfigError(f"policy `{spec}`: K must be >= 1")
    return lambda seed: FixedModel(model=parts[1], samples=k, name=spec)


_FACTORIES: dict[str, PolicyFactory] = {
    "always_cheapest": lambda seed: AlwaysCheapest(),
    "always_strongest": lambda seed: AlwaysStrongest(),
}


def register(name: str, factory: PolicyFactory) -> None:
    """Make a policy available by name (used by policy modules)."""
    _FACTORIES[name] = factory


def policy_names() -> list[str]:
    """Names accepted by `make_policy`, sorted (plus the `fixed:MODEL:K` form)."""
    return sorted(_FACTORIES)


def make_policy(name: str, *, seed: int = 0) -> Policy:
    """Build the policy called `name`, seeded with `seed`."""
    if name.startswith("fixed:"):
        return _fixed(name)(seed)
    factory = _FACTORIES.get(name)
    if factory is None:
        raise ConfigError(
            f"unknown policy `{name}`{did_you_mean(name, _FACTORIES)}; choose one of "
            + ", ".join(f"`{n}`" for n in policy_names())
            + ", or `fixed:MODEL:K`"
        )
    return factory(seed)
