"""compose.yaml is well-formed; `docker compose config` checks it too where the plugin exists."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _compose_plugin() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_compose_services_and_dependencies() -> None:
    spec = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = spec["services"]
    assert {"redis", "postgres", "demo"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"service `{name}` has no image or build"
        for dep in service.get("depends_on", {}):
            assert dep in services, f"service `{name}` depends on unknown `{dep}`"
    url = services["demo"]["environment"]["BUDGETFLOW_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed here")
def test_docker_compose_config_accepts_it() -> None:
    out = subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
