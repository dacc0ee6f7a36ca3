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
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from orchestrator.errors import ConfigError, did_you_mean

__all__ = ["NO_MODEL", "SIMULATED_PREFIX", "Catalog", "LatencyProfile", "ModelSpec", "PoolSpec"]

SIMULATED_PREFIX = "budgetflow-sim/"
"""litellm model strings starting with this are served by the simulated backend."""

NO_MODEL = "no-model"
"""The model of a subtask that lists none (its agent is plain code): free, and it cannot be called.

Every catalog knows it (`Catalog.get`), none lists it (`Catalog.models`)."""

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
        words = value.split()
        if not words:
            raise ValueError("model name is blank; give a short name such as `small`")
        if len(words) > 1 or words[0] != value:
            raise ValueError(f"model name `{value}` contains white space; use e.g. `{'_'.join(words)}`")
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

    def hold_nano(self, *, input_tokens: int, max_tokens: int) -> int:
        """What the ledger holds before a call: its worst case, every input and output token at full price.

        Cached input is not discounted in the hold: whether the prefix is still cached is
        only known from the bill.
        """
        return input_tokens * self.input_nano_per_token() + max_tokens * self.output_nano_per_token()

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
            if spec.name == NO_MODEL:
                raise ConfigError(
                    f"model name `{NO_MODEL}` is reserved for subtasks that call no model; name the model"
                    " otherwise"
                )
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
        """Load a catalog from TOML, YAML or JSON with `models` (and optional `pools`) lists.

        Raises:
            ConfigError: naming the file, the entry (`models[2]`, with its name when it has
                one) and the field, for every way the file can be wrong.
        """
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"catalog file `{file}` does not exist; check the path")
        data = _read_catalog_file(file)
        unknown = sorted(set(data) - _TOP_LEVEL_KEYS, key=repr)
        if unknown:
            close = did_you_mean(str(unknown[0]), _TOP_LEVEL_KEYS)
            raise ConfigError(
                f"catalog file `{file}` has the unknown top-level key {_shown(unknown[0])}{close} (a"
                " catalog has `models`, a list of models, and optionally `pools`, a list of vLLM pools)"
            )
        if "models" not in data or data["models"] is None:
            raise ConfigError(
                f"catalog file `{file}` needs a top-level `models` list (`[[models]]` tables in TOML)"
            )
        raw_models = _entries(file, data, "models")
        if not raw_models:
            raise ConfigError(f"catalog file `{file}` lists no models; add at least one under `models`")
        raw_pools = _entries(file, data, "pools") if data.get("pools") is not None else []
        problems: list[str] = []
        models = [_validated(ModelSpec, "models", i, raw, problems) for i, raw in enumerate(raw_models)]
        pools = [_validated(PoolSpec, "pools", i, raw, problems) for i, raw in enumerate(raw_pools)]
        if problems:
            if len(problems) == 1:
                raise ConfigError(f"catalog file `{file}`: {problems[0]}")
            raise ConfigError(
                f"catalog file `{file}` has {len(problems)} problems:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        models_ok = [m for m in models if m is not None]
        pools_ok = tuple(p for p in pools if p is not None)
        try:
            return cls.of(*models_ok, pools=pools_ok)
        except ConfigError as exc:
            raise ConfigError(f"catalog file `{file}`: {exc}") from None

    def get(self, name: str) -> ModelSpec:
        """The model named `name`; a `ConfigError` suggesting the closest name otherwise."""
        if name == NO_MODEL:
            return _NO_MODEL_SPEC
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(
                f"model `{name}` is not in the catalog{did_you_mean(name, self.models)};"
                f" known models: {', '.join(f'`{m}`' for m in sorted(self.models)) or 'none'}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name == NO_MODEL or name in self.models

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


_TOP_LEVEL_KEYS = frozenset({"models", "pools"})
_SUFFIXES = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


def _read_catalog_file(file: Path) -> dict[Any, Any]:
    """The file's top-level mapping; `ConfigError` for unreadable, undecodable or unparsable files."""
    kind = _SUFFIXES.get(file.suffix)
    if kind is None:
        raise ConfigError(f"catalog file `{file}` has suffix `{file.suffix}`; use .toml, .yaml or .json")
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"catalog file `{file}` cannot be read ({exc.strerror}); check its permissions"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"catalog file `{file}` is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start});"
            " save it as UTF-8"
        ) from None
    try:
        data: Any
        if kind == "TOML":
            data = tomllib.loads(text)
        elif kind == "YAML":
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"catalog file `{file}` is not valid {kind.lower()}: {detail}") from None
    except RecursionError:
        raise ConfigError(
            f"catalog file `{file}` nests too deeply to be a catalog; check its structure"
        ) from None
    except (ValueError, OverflowError) as exc:  # e.g. an integer with thousands of digits
        detail = str(exc).split(";")[0]
        raise ConfigError(f"catalog file `{file}` holds a value that cannot be read ({detail})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"catalog file `{file}` needs a top-level `models` list (`[[models]]` tables in TOML),"
            f" got {_kind(data)}"
        )
    return data


def _entries(file: Path, data: dict[Any, Any], key: str) -> list[Any]:
    value = data[key]
    if not isinstance(value, list):
        table = f"`[[{key}]]` tables in TOML, a list in YAML or JSON"
        raise ConfigError(f"catalog file `{file}`: `{key}` must be a list ({table}), got {_kind(value)}")
    return value


_Spec = TypeVar("_Spec", ModelSpec, PoolSpec)


def _validated(
    spec_type: type[_Spec], key: str, index: int, raw: object, problems: list[str]
) -> _Spec | None:
    """One entry of `models` or `pools`, or `None` with its problems added (naming entry and field)."""
    named = raw.get("name") if isinstance(raw, dict) else None
    entry = f"`{key}[{index}]`" + (
        f" (`{named}`)" if isinstance(named, str) and named.strip() and named.isprintable() else ""
    )
    if not isinstance(raw, dict):
        problems.append(f"{entry} must be a table of fields (`name`, `litellm_model`, ...), got {_kind(raw)}")
        return None
    try:
        return spec_type.model_validate(raw)
    except ValidationError as exc:
        problems.extend(f"{entry}: {_problem(error, spec_type)}" for error in exc.errors())
    return None


def _problem(error: Any, spec_type: type[BaseModel]) -> str:
    """One pydantic error as 'field `x` = value: what is wrong; what to give'."""
    loc = ".".join(str(part) for part in error.get("loc", ()))
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        close = did_you_mean(str(error["loc"][-1]), spec_type.model_fields) if len(error["loc"]) == 1 else ""
        known = ", ".join(f"`{f}`" for f in spec_type.model_fields)
        return f"unknown field `{loc}`{close}; known fields: {known}"
    if kind == "missing":
        return f"the field `{loc}` is missing; give it"
    message = str(error.get("msg", "is invalid"))
    message = message[0].lower() + message[1:] if message else message
    message = message.removeprefix("value error, ")
    value = _preview(error.get("input"))
    return f"field `{loc}` = {value}: {message}"


def _preview(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    return "nothing (null)" if value is None else f"{type(value).__name__} {_preview(value)}"


def _shown(value: object) -> str:
    return f"`{value}`" if isinstance(value, str) and value.isprintable() else repr(value)


_NO_MODEL_SPEC = ModelSpec(
    name=NO_MODEL,
    litellm_model=f"budgetflow-none/{NO_MODEL}",
    input_price_per_mtok=Decimal(0),
    output_price_per_mtok=Decimal(0),
)
