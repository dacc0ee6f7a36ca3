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
| metrics_port   | `BUDGETFLOW_METRICS_PORT`   | `metrics_port`   | none (no `/metrics`)              |
| metrics_host   | `BUDGETFLOW_METRICS_HOST`   | `metrics_host`   | `127.0.0.1`                       |
| session_secret | `BUDGETFLOW_SESSION_SECRET` | `session_secret` | random per process                |
| api_workflows  | `BUDGETFLOW_API_WORKFLOWS`  | `api_workflows`  | none (the HTTP API runs nothing)  |
| workers        | `BUDGETFLOW_WORKERS`        | `workers`        | `false` (the API runs in process) |
| dbos_database_url | `BUDGETFLOW_DBOS_DATABASE_URL` | `dbos_database_url` | from `database_url` (see below) |
| team           | `BUDGETFLOW_TEAM`           | `team`           | none (no team budgets apply)      |
| provider keys  | `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ... (litellm's names)                    |

`workers = true` makes the HTTP API enqueue runs on DBOS for `budgetflow worker` processes
instead of running them itself (docs/scale-out.md). DBOS keeps its queue in `dbos_database_url`:
by default the runs' PostgreSQL database (DBOS's tables in its own schema, `dbos`), or for
SQLite a file beside the runs' one (`runs.db` -> `runs.dbos.db`).

OpenTelemetry (off by default) is set by its own standard variables only:

| setting      | exporter from             | else `otlp` when one of these is set                         |
|--------------|---------------------------|--------------------------------------------------------------|
| tracing      | `OTEL_TRACES_EXPORTER`    | `OTEL_EXPORTER_OTLP_ENDPOINT`, `..._OTLP_TRACES_ENDPOINT`    |
| otel_metrics | `OTEL_METRICS_EXPORTER`   | `OTEL_EXPORTER_OTLP_ENDPOINT`, `..._OTLP_METRICS_ENDPOINT`   |

The exporter is `otlp`, `console` or `none` (off); `OTEL_SDK_DISABLED=true` turns both
off. OTLP goes over HTTP (`http/protobuf`, the only `OTEL_EXPORTER_OTLP_PROTOCOL`
accepted). The exporters read the other `OTEL_*` variables (endpoint, headers, timeout,
service name) themselves; see `budgetflow.tracing` and docs/observability.md.

Values are checked here, and a bad one is reported with where it came from
(the flag, the environment variable or the file key).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

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
_DEFAULT_METRICS_HOST = "127.0.0.1"
_FILE_KEYS = (
    "database_url",
    "catalog",
    "record_content",
    "vllm_url",
    "redis_url",
    "metrics_port",
    "metrics_host",
    "session_secret",
    "api_workflows",
    "workers",
    "dbos_database_url",
    "team",
)


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
    metrics_port: int | None = None
    """Serve Prometheus metrics on this port while workflows run (0: a free port); `None`: no metrics."""
    metrics_host: str = _DEFAULT_METRICS_HOST
    """The address `/metrics` listens on (loopback unless a scraper elsewhere needs it)."""
    session_secret: str | None = field(default=None, repr=False)
    """Key that signs the web app's session cookies (32+ characters); `None`: random per process."""
    api_workflows: tuple[str, ...] = ()
    """Modules whose `workflow` the HTTP API may run (`examples.code_pipeline`); comma-separated in
    the environment, a list in the file."""
    workers: bool = False
    """The HTTP API enqueues runs for `budgetflow worker` processes (DBOS) instead of running them."""
    dbos_database_url: str | None = None
    """DBOS's system database (its queue); `None`: derived from `database_url` (`dbos_url`)."""
    team: str | None = None
    """The team this process runs for: the `team:` shared budgets above its runs (docs/budgets.md)."""
    provider_keys: Mapping[str, str] = field(default_factory=dict)
    """API keys found, by provider."""
    tracing: Literal["otlp", "console"] | None = None
    """Where OpenTelemetry traces of runs go (`None`: tracing off), from `OTEL_*` variables."""
    otel_metrics: Literal["otlp", "console"] | None = None
    """Where the OpenTelemetry GenAI client metrics go (`None`: off), from `OTEL_*` variables."""
    via_uv: bool = False
    """Whether the CLI runs under `uv run` (its hints then say `uv run budgetflow ...`)."""


def _bool(value: str, source: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{source} = `{value}` is not a boolean; use true or false")


def load_settings(overrides: Mapping[str, Any] | None = None, *, cwd: Path | None = None) -> Settings:
    """Resolve settings from `overrides` (CLI), the environment, the settings file, defaults."""
    env = os.environ
    base = cwd or Path.cwd()
    file_path = Path(env["BUDGETFLOW_CONFIG"]) if env.get("BUDGETFLOW_CONFIG") else base / "budgetflow.toml"
    from_file: dict[str, Any] = {}
    if file_path.is_file():
        try:
            from_file = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"settings file `{file_path}` is not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"settings file `{file_path}` cannot be read ({exc.strerror})") from None
    elif env.get("BUDGETFLOW_CONFIG"):
        raise ConfigError(f"`BUDGETFLOW_CONFIG` points to `{file_path}`, which does not exist")
    unknown = set(from_file) - set(_FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"settings file `{file_path}` has unknown keys {sorted(unknown)}; known: {', '.join(_FILE_KEYS)}"
        )
    given = dict(overrides or {})

    def pick(key: str, env_name: str, file_key: str) -> tuple[Any, str]:
        """The value and where it came from (for messages)."""
        if given.get(key) is not None:
            return given[key], f"`{_FLAGS.get(key, key)}`"
        if env.get(env_name):
            return env[env_name], f"`{env_name}`"
        return from_file.get(file_key), f"`{file_key}` in `{file_path}`"

    database_url, _ = pick("database_url", "BUDGETFLOW_DATABASE_URL", "database_url")
    catalog, _ = pick("catalog_path", "BUDGETFLOW_CATALOG", "catalog")
    record, record_from = pick("record_content", "BUDGETFLOW_RECORD_CONTENT", "record_content")
    if isinstance(record, str):
        record = _bool(record, record_from)
    vllm_url, vllm_from = pick("vllm_url", "BUDGETFLOW_VLLM_URL", "vllm_url")
    redis_url, redis_from = pick("redis_url", "BUDGETFLOW_REDIS_URL", "redis_url")
    metrics_port, port_from = pick("metrics_port", "BUDGETFLOW_METRICS_PORT", "metrics_port")
    metrics_host, host_from = pick("metrics_host", "BUDGETFLOW_METRICS_HOST", "metrics_host")
    secret, secret_from = pick("session_secret", "BUDGETFLOW_SESSION_SECRET", "session_secret")
    api_workflows, workflows_from = pick("api_workflows", "BUDGETFLOW_API_WORKFLOWS", "api_workflows")
    workers, workers_from = pick("workers", "BUDGETFLOW_WORKERS", "workers")
    if isinstance(workers, str):
        workers = _bool(workers, workers_from)
    dbos_url, _ = pick("dbos_database_url", "BUDGETFLOW_DBOS_DATABASE_URL", "dbos_database_url")
    team, _ = pick("team", "BUDGETFLOW_TEAM", "team")
    keys = {provider: env[var] for provider, var in PROVIDER_KEY_VARS.items() if env.get(var)}
    tracing, otel_metrics = _otel_exporter(env, "traces"), _otel_exporter(env, "metrics")
    return Settings(
        database_url=str(database_url or _DEFAULT_DB),
        catalog_path=None if catalog is None else Path(str(catalog)),
        record_content=True if record is None else bool(record),
        vllm_url=_url(vllm_url, vllm_from, _VLLM_SCHEMES, "http://127.0.0.1:8000/v1"),
        redis_url=_url(redis_url, redis_from, _REDIS_SCHEMES, "redis://127.0.0.1:6379/0"),
        metrics_port=_port(metrics_port, port_from),
        metrics_host=_host(metrics_host, host_from),
        session_secret=_secret(secret, secret_from),
        api_workflows=_module_paths(api_workflows, workflows_from),
        workers=bool(workers),
        dbos_database_url=None if not dbos_url else str(dbos_url),
        team=str(team).strip() or None if team else None,
        provider_keys=keys,
        tracing=tracing,
        otel_metrics=otel_metrics,
        via_uv=bool(env.get("UV_RUN_RECURSION_DEPTH") or env.get("UV")),
    )


_FLAGS = {
    "database_url": "--db",
    "catalog_path": "--catalog",
    "record_content": "--no-content",
    "metrics_port": "--metrics-port",
    "metrics_host": "--metrics-host",
    "api_workflows": "--workflow",
    "workers": "--workers",
}
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_VLLM_SCHEMES = ("http", "https")


def _url(value: object, source: str, schemes: tuple[str, ...], example: str) -> str | None:
    """`value` when it is a URL with one of `schemes` and a place to go, else a `ConfigError`."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    parsed = urlsplit(text)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path.strip("/")):
        forms = ", ".join(f"`{s}://`" for s in schemes)
        raise ConfigError(f"{source} = `{text}` is not a URL starting with {forms}; use e.g. `{example}`")
    return text


def _port(value: object, source: str) -> int | None:
    """`value` as a TCP port (0 to 65535), `None` when not given, else a `ConfigError`."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) > 65535:
        raise ConfigError(f"{source} = `{text}` is not a TCP port; use a number from 0 to 65535, e.g. `9464`")
    return int(text)


def _host(value: object, source: str) -> str:
    """`value` as a listen address, the loopback default when not given."""
    if value is None:
        return _DEFAULT_METRICS_HOST
    text = str(value).strip()
    if not text or any(c.isspace() or c in "/?#" for c in text):
        raise ConfigError(
            f"{source} = `{value}` is not an address to listen on; use e.g. `127.0.0.1` or `0.0.0.0`"
        )
    return text


def _module_paths(value: object, source: str) -> tuple[str, ...]:
    """`value` (a comma-separated text or a list) as dotted module paths, in order, without repeats."""
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ConfigError(
            f"{source} must be module paths, e.g. `examples.code_pipeline,examples.hard_step`, not `{value}`"
        )
    paths: list[str] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        if not all(part.isidentifier() for part in item.split(".")):
            raise ConfigError(
                f"{source} names `{item}`, which is not a Python module path; use dotted names such as"
                " `examples.code_pipeline` (a file path is not accepted)"
            )
        if item not in paths:
            paths.append(item)
    return tuple(paths)


def _secret(value: object, source: str) -> str | None:
    """`value` as a session secret of at least `_MIN_SECRET_CHARS` characters, `None` when not given."""
    if value is None or value == "":
        return None
    text = str(value)
    if len(text) < _MIN_SECRET_CHARS:
        raise ConfigError(
            f"{source} is {len(text)} characters long; a session secret needs at least"
            f" {_MIN_SECRET_CHARS}; make one with"
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return text


_MIN_SECRET_CHARS = 32


def _otel_exporter(
    env: Mapping[str, str], signal: Literal["traces", "metrics"]
) -> Literal["otlp", "console"] | None:
    """Where OpenTelemetry sends `signal`, from its standard variables; `None` when off."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    upper = signal.upper()
    name = f"OTEL_{upper}_EXPORTER"
    chosen = env.get(name, "").strip().lower()
    if not chosen:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
        chosen = "otlp" if any(env.get(e) for e in endpoints) else "none"
    if chosen == "none":
        return None
    if chosen == "console":
        return "console"
    if chosen != "otlp":
        raise ConfigError(
            f"`{name}` = `{env.get(name)}` is not an exporter budgetflow ships; use `otlp`, `console`"
            " or `none`"
        )
    for var in (f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(var, "").strip()
        if protocol and protocol != "http/protobuf":
            raise ConfigError(
                f"`{var}` = `{protocol}`: budgetflow exports OTLP over HTTP only; set it to"
                " `http/protobuf` and point the endpoint at the receiver's OTLP/HTTP port (4318 for"
                " a collector, 6006 for Phoenix)"
            )
        if protocol:
            break
    return "otlp"
