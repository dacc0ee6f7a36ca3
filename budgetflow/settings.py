"""Settings, read once at the edge (the CLI, the web app factory).

Precedence: command-line argument > environment variable > settings file >
default. The settings file is TOML: `./budgetflow.toml`, or the path in
`BUDGETFLOW_CONFIG`. This is the only module that reads `os.environ`.

| setting        | environment                 | file key         | default                           |
|----------------|-----------------------------|------------------|-----------------------------------|
| database_url   | `BUDGETFLOW_DATABASE_URL`   | `database_url`   | `sqlite:///.budgetflow/runs.db`   |
| catalog_path   | `BUDGETFLOW_CATALOG`        | `catalog`        | the workflow file's `catalog`     |
| record_content | `BUDGETFLOW_RECORD_CONTENT` | `record_content` | `true`                            |
| vllm_url       | `BUDGETFLOW_VLLM_URL`       | `vllm_url`       | none                              |
| redis_url      | `BUDGETFLOW_REDIS_URL`      | `redis_url`      | none (in-process ledger)          |
| provider keys  | `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ... (litellm's names)                    |
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError

__all__ = ["PROVIDER_KEY_VARS", "Settings", "load_settings"]

PROVIDER_KEY_VARS: Mapping[str, str] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "groq": "GROQ_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
}
"""Environment variable holding each provider's API key."""

_DEFAULT_DB = "sqlite:///.budgetflow/runs.db"


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything configurable, resolved."""

    database_url: str = _DEFAULT_DB
    """Where runs are recorded."""
    catalog_path: Path | None = None
    """A catalog file overriding the workflow's own catalog."""
    record_content: bool = True
    """Store prompt and response text."""
    vllm_url: str | None = None
    """A vLLM server for local models (`hosted_vllm/...`)."""
    redis_url: str | None = None
    """Redis for a shared ledger."""
    provider_keys: Mapping[str, str] = field(default_factory=dict)
    """API keys found, by provider."""


def _bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"`{name}` = `{value}` is not a boolean; use true or false")


def load_settings(overrides: Mapping[str, Any] | None = None, *, cwd: Path | None = None) -> Settings:
    """Resolve settings from `overrides` (CLI), the environment, the settings file, defaults."""
    env = os.environ
    base = cwd or Path.cwd()
    file_path = Path(env["BUDGETFLOW_CONFIG"]) if env.get("BUDGETFLOW_CONFIG") else base / "budgetflow.toml"
    from_file: dict[str, Any] = {}
    if file_path.is_file():
        try:
            from_file = tomllib.loads(file_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file `{file_path}` is not valid TOML: {exc}") from exc
    elif env.get("BUDGETFLOW_CONFIG"):
        raise ConfigError(f"`BUDGETFLOW_CONFIG` points to `{file_path}`, which does not exist")
    unknown = set(from_file) - {"database_url", "catalog", "record_content", "vllm_url", "redis_url"}
    if unknown:
        raise ConfigError(
            f"settings file `{file_path}` has unknown keys {sorted(unknown)}; known: database_url,"
            " catalog, record_content, vllm_url, redis_url"
        )
    given = dict(overrides or {})

    def pick(key: str, env_name: str, file_key: str) -> Any:
        if given.get(key) is not None:
            return given[key]
        if env.get(env_name):
            return env[env_name]
        return from_file.get(file_key)

    database_url = pick("database_url", "BUDGETFLOW_DATABASE_URL", "database_url") or _DEFAULT_DB
    catalog = pick("catalog_path", "BUDGETFLOW_CATALOG", "catalog")
    record = pick("record_content", "BUDGETFLOW_RECORD_CONTENT", "record_content")
    if isinstance(record, str):
        record = _bool(record, "record_content")
    keys = {provider: env[var] for provider, var in PROVIDER_KEY_VARS.items() if env.get(var)}
    return Settings(
        database_url=str(database_url),
        catalog_path=None if catalog is None else Path(str(catalog)),
        record_content=True if record is None else bool(record),
        vllm_url=pick("vllm_url", "BUDGETFLOW_VLLM_URL", "vllm_url"),
        redis_url=pick("redis_url", "BUDGETFLOW_REDIS_URL", "redis_url"),
        provider_keys=keys,
    )
