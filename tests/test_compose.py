"""compose.yaml is well-formed; `docker compose config` checks it too where the plugin exists."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

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


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path of the service's bind mounts of repository files."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_prometheus_scrapes_the_process_that_serves_metrics() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    prometheus = services["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:v")  # a pinned release
    mounts = _mounts(prometheus)
    assert all(path.is_file() for path in mounts.values()), mounts
    config_arg = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = mounts[config_arg.split("=", 1)[1]]
    assert config_path == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert "127.0.0.1:9090:9090" in prometheus["ports"]
    config = yaml.safe_load(config_path.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "budgetflow")
    assert job["metrics_path"] == "/metrics"
    for target in (t for group in job["static_configs"] for t in group["targets"]):
        host, port = target.split(":")
        environment = services[host]["environment"]  # a service of the stack
        assert environment["BUDGETFLOW_METRICS_PORT"] == port
        assert environment["BUDGETFLOW_METRICS_HOST"] == "0.0.0.0"  # reachable from prometheus


def test_grafana_is_provisioned_with_the_prometheus_source_and_the_board() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    grafana = services["grafana"]
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


@pytest.mark.skipif(not _compose_plugin(), reason="the docker compose plugin is not installed here")
def test_docker_compose_config_accepts_it() -> None:
    out = subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
