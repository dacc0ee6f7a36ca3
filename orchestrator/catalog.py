"""The model catalog: every model a workflow may name, declared once.

A model has a short name used in workflows (``"small"``), the litellm model
string that reaches it (``"openai/gpt-4o-mini"``, ``"hosted_vllm/llama"``,
``"budgetflow-sim/small"``), prices per million input and output tokens, a
context window, and optionally a latency profile and a vLLM pool.

Prices not given are looked up in litellm's cost map when the catalog is
resolved (``Catalog.resolve_prices``); local and simulated models must be
priced explicitly because litellm does not know them.
"""

from __future__ import annotations

import json
import tomllib
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import ConfigError, did_you_mean

__all__ = ["SIMULATED_PREFIX", "Catalog", "LatencyProfile", "ModelSpec", "PoolSpec"]

SIMULATED_PREFIX = "budgetflow-sim/"
"""litellm model strings starting with this are served by the simulated backend."""

_NANO_PER_USD = 1_000_000_000


class LatencyProfile(BaseModel):
    """How fast a model answers, used by the simulator when no samples are known."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ttft_s: float = Field(ge=0)
    """Time to first token, seconds."""
    tokens_per_s: float = Field(gt=0)
    """Decode speed after the first token."""


class PoolSpec(BaseModel):
    """A pool of vLLM replicas serving one model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """Pool name, referenced by `ModelSpec.pool`."""
    served_model: str
    """The model name vLLM serves (``--served-model-name``)."""
    replicas: tuple[str, ...] = Field(min_length=1)
    """Base URLs of the replicas, e.g. ``http://127.0.0.1:8001``."""
    kv_capacity_tokens: int | None = Field(default=None, gt=0)
    """KV cache capacity per replica in tokens; ``None`` reads it from the replica."""
    block_size_tokens: int = Field(default=16, gt=0)
    """KV block size used to hash prompt prefixes."""
    max_in_flight_per_replica: int | None = Field(default=None, gt=0)
    """Requests one replica may hold at once; ``None`` means no limit."""


class ModelSpec(BaseModel):
    """One model a workflow may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    """Short name used in workflows."""
    litellm_model: str = Field(min_length=1)
    """The litellm model string."""
    input_price_per_mtok: Decimal | None = Field(default=None, ge=0)
    """USD per million input tokens; ``None``: take it from litellm's cost map."""
    output_price_per_mtok: Decimal | None = Field(default=None, ge=0)
    """USD per million output tokens; ``None``: take it from litellm's cost map."""
    cached_input_price_per_mtok: Decimal | None = Field(default=None, ge=0)
    """USD per million cached input tokens; ``None``: same as input."""
    context_window: int = Field(default=128_000, gt=0)
    """Maximum prompt + output tokens."""
    latency: LatencyProfile | None = None
    """Optional latency profile."""
    api_base: str | None = None
    """Endpoint for self-hosted models (when not pooled)."""
    pool: str | None = None
    """Name of the vLLM pool serving this model, if any."""
    tier: Literal["cheap", "strong", "other"] = "other"
    """Informal tier, shown in the dashboard."""

    @field_validator("name")
    @classmethod
    def _name_is_identifier_like(cls, value: str) -> str:
        if any(ch.isspace() for ch in value):
            raise ValueError(f"model name `{value}` contains white space; use e.g. `{value.split()[0]}`")
        return value

    @property
    def simulated(self) -> bool:
        """Whether the simulated backend serves this model."""
        return self.litellm_model.startswith(SIMULATED_PREFIX)

    @property
    def provider(self) -> str:
        """Provider part of the litellm model string (``openai``, ``hosted_vllm``, ...)."""
        return self.litellm_model.split("/", 1)[0] if "/" in self.litellm_model else "openai"

    @property
    def priced(self) -> bool:
        """Whether both prices are known."""
        return self.input_price_per_mtok is not None and self.output_price_per_mtok is not None

    def input_nano_per_token(self) -> int:
        """Input price in nano-USD per token (exact for prices with up to 3 decimals)."""
        return self._nano_prices[0]

    def output_nano_per_token(self) -> int:
        """Output price in nano-USD per token."""
        return self._nano_prices[1]

    def cached_nano_per_token(self) -> int:
        """Cached-input price in nano-USD per token."""
        return self._nano_prices[2]

    @cached_property
    def _nano_prices(self) -> tuple[int, int, int]:
        # computed once per spec: the ledger asks for prices on every reservation
        inp = _nano_per_token(self, self.input_price_per_mtok, "input")
        out = _nano_per_token(self, self.output_price_per_mtok, "output")
        cached = (
            inp
            if self.cached_input_price_per_mtok is None
            else _nano_per_token(self, self.cached_input_price_per_mtok, "cached input")
        )
        return inp, out, cached

    def cost_nano(self, *, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> int:
        """Exact cost of a call in nano-USD."""
        uncached = max(0, input_tokens - cached_tokens)
        return (
            uncached * self.input_nano_per_token()
            + min(cached_tokens, input_tokens) * self.cached_nano_per_token()
            + output_tokens * self.output_nano_per_token()
        )


def _nano_per_token(spec: ModelSpec, price: Decimal | None, which: str) -> int:
    if price is None:
        raise ConfigError(
            f"model `{spec.name}` has no {which} price; give `{which.replace(' ', '_')}_price_per_mtok`"
            " in the catalog (litellm does not know it)"
        )
    nano = price * _NANO_PER_USD / Decimal(1_000_000)
    return int(nano.to_integral_value(rounding="ROUND_CEILING"))


class Catalog(BaseModel):
    """All models and pools known to a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelSpec] = Field(default_factory=dict)
    """Models by name."""
    pools: dict[str, PoolSpec] = Field(default_factory=dict)
    """vLLM pools by name."""

    @classmethod
    def of(cls, *models: ModelSpec, pools: tuple[PoolSpec, ...] = ()) -> Catalog:
        """Build a catalog from model specs, checking names are unique and pools exist."""
        by_name: dict[str, ModelSpec] = {}
        for spec in models:
            if spec.name in by_name:
                raise ConfigError(f"model `{spec.name}` is declared twice; give each model one entry")
            by_name[spec.name] = spec
        pool_map = {p.name: p for p in pools}
        for spec in models:
            if spec.pool is not None and spec.pool not in pool_map:
                raise ConfigError(
                    f"model `{spec.name}` names pool `{spec.pool}`, which is not declared"
                    f"{did_you_mean(spec.pool, pool_map)}; add it under `pools`"
                )
        return cls(models=by_name, pools=pool_map)

    @classmethod
    def from_file(cls, path: str | Path) -> Catalog:
        """Load a catalog from TOML, YAML or JSON with `models` (and optional `pools`) lists."""
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"catalog file `{file}` does not exist; check the path")
        text = file.read_text()
        try:
            data: Any
            if file.suffix == ".toml":
                data = tomllib.loads(text)
            elif file.suffix in {".yaml", ".yml"}:
                data = yaml.safe_load(text)
            elif file.suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(
                    f"catalog file `{file}` has suffix `{file.suffix}`; use .toml, .yaml or .json"
                )
        except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
            raise ConfigError(f"catalog file `{file}` is not valid {file.suffix[1:]}: {exc}") from exc
        if not isinstance(data, dict) or "models" not in data:
            raise ConfigError(f"catalog file `{file}` needs a top-level `models` list")
        try:
            models = [ModelSpec.model_validate(m) for m in data["models"]]
            pools = tuple(PoolSpec.model_validate(p) for p in data.get("pools", []))
        except ValidationError as exc:
            raise ConfigError(f"catalog file `{file}` is invalid:\n{exc}") from exc
        return cls.of(*models, pools=pools)

    def get(self, name: str) -> ModelSpec:
        """The model named `name`; a `ConfigError` suggesting the closest name otherwise."""
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(
                f"model `{name}` is not in the catalog{did_you_mean(name, self.models)};"
                f" known models: {', '.join(f'`{m}`' for m in sorted(self.models)) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self.models

    def resolve_prices(self) -> Catalog:
        """Fill missing prices from litellm's cost map; `ConfigError` for models it does not know.

        Imports litellm (slow): call it only when a run really starts.
        """
        missing = [m for m in self.models.values() if not m.priced]
        if not missing:
            return self
        from orchestrator._litellm import litellm_module

        litellm = litellm_module()
        resolved = dict(self.models)
        for spec in missing:
            entry = litellm.model_cost.get(spec.litellm_model) or litellm.model_cost.get(
                spec.litellm_model.split("/", 1)[-1]
            )
            if not entry or "input_cost_per_token" not in entry:
                raise ConfigError(
                    f"model `{spec.name}` (`{spec.litellm_model}`) has no price and litellm's cost map"
                    " does not know it; set `input_price_per_mtok` and `output_price_per_mtok`"
                )
            update: dict[str, Decimal] = {}
            if spec.input_price_per_mtok is None:
                update["input_price_per_mtok"] = Decimal(str(entry["input_cost_per_token"])) * 10**6
            if spec.output_price_per_mtok is None:
                update["output_price_per_mtok"] = Decimal(str(entry.get("output_cost_per_token", 0))) * 10**6
            resolved[spec.name] = spec.model_copy(update=update)
        return Catalog(models=resolved, pools=dict(self.pools))
