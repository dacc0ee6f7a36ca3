"""A real Prometheus for checking and charting the Grafana board, and the board's queries.

`PrometheusServer` runs the `prometheus` binary (Debian's package; `scripts/ensure_services.sh`
installs it) on a free loopback port with its own storage directory and the shipped
config (`deploy/prometheus/prometheus.yml`) pointed at given targets; it is stopped by
its PID. `board_queries` reads every panel's PromQL from the shipped dashboard and fills
in Grafana's variables, so what is checked and drawn is what Grafana would ask. `Process`
runs a budgetflow module (such as `benchmarks.board_load`) for Prometheus to scrape.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

__all__ = [
    "DASHBOARD",
    "PROMETHEUS_CONFIG",
    "BoardQuery",
    "Process",
    "PrometheusServer",
    "Series",
    "board_queries",
    "free_port",
]

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "budgetflow.json"
"""The provisioned Grafana board."""
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
"""The shipped Prometheus config."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, kw_only=True)
class BoardQuery:
    """One PromQL query of one panel."""

    panel: str
    """The panel's title."""
    ref_id: str
    """The query's letter within the panel."""
    expr: str
    """PromQL, with Grafana's variables filled in."""
    legend: str
    """The panel's legend format."""


def board_queries(
    dashboard: Path = DASHBOARD, *, rate_interval: str, time_range: str, workflow: str = ".*"
) -> list[BoardQuery]:
    """Every panel's queries, with `$__rate_interval`, `$__range` and `$workflow` filled in."""
    board = json.loads(dashboard.read_text())
    queries: list[BoardQuery] = []

    def walk(panels: Sequence[Mapping[str, Any]]) -> None:
        for panel in panels:
            walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                expr = (
                    str(target["expr"])
                    .replace("$__rate_interval", rate_interval)
                    .replace("$__range", time_range)
                    .replace("$workflow", workflow)
                )
                queries.append(
                    BoardQuery(
                        panel=str(panel["title"]),
                        ref_id=str(target["refId"]),
                        expr=expr,
                        legend=str(target.get("legendFormat", "")),
                    )
                )

    walk(board["panels"])
    return queries


@dataclass(frozen=True, kw_only=True)
class Series:
    """One series of a range query."""

    labels: Mapping[str, str]
    """Its labels."""
    points: tuple[tuple[float, float], ...]
    """(unix time, value) pairs; NaN where the expression had no number."""

    def finite(self) -> list[tuple[float, float]]:
        """The points with a finite value."""
        return [(t, v) for t, v in self.points if math.isfinite(v)]


class Process:
    """A budgetflow process (`python -m ...`) run from the repository root, its output collected."""

    def __init__(self, *argv: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BUDGETFLOW_", "OPENAI_", "UV"))}
        env |= {"PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", "COLUMNS": "100"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self._out), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line)

    def finish(self, timeout_s: float) -> tuple[int, str, str]:
        """Wait for the exit (killing it after `timeout_s`); its code, stdout and stderr."""
        try:
            code = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            self._close()
        return code, "".join(self._out), "".join(self._err)

    def kill(self) -> None:
        """Stop it if it still runs (teardown)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._close()

    def _close(self) -> None:
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


class PrometheusServer:
    """`prometheus` on 127.0.0.1 and a free port, scraping `targets` with the shipped config."""

    def __init__(
        self,
        root: Path,
        *,
        targets: Sequence[str],
        scrape_interval: str = "250ms",
        binary: str = "prometheus",
    ) -> None:
        """Args:
        root: a directory of its own (config, storage, log).
        targets: `host:port` of the processes serving `/metrics`.
        scrape_interval: how often to scrape them (a Prometheus duration).
        binary: the `prometheus` executable.
        """
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(
                f"`{binary}` is not installed; run `bash scripts/ensure_services.sh` as root"
                " (it installs Debian's `prometheus` package)"
            )
        self.binary = found
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        """Its HTTP API."""
        config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
        config["global"]["scrape_interval"] = scrape_interval
        config["global"]["evaluation_interval"] = scrape_interval
        job = next(j for j in config["scrape_configs"] if j["job_name"] == "budgetflow")
        job["scrape_interval"] = scrape_interval
        job["scrape_timeout"] = scrape_interval
        job["static_configs"] = [{"targets": list(targets)}]
        self.config = root / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start it and wait until it is ready."""
        argv = [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        with (self.root / "prometheus.log").open("ab") as log:
            self._process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus was not ready within {timeout_s:g} s:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        """What it logged."""
        path = self.root / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with their health and last error."""
        data = self._get("/api/v1/targets")
        return list(data["activeTargets"])

    def query_range(self, expr: str, *, start: float, end: float, step_s: float) -> list[Series]:
        """Evaluate `expr` from `start` to `end` (unix seconds) every `step_s`."""
        data = self._get(
            "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step_s}
        )
        return [
            Series(
                labels=dict(item["metric"]),
                points=tuple((float(t), float(v)) for t, v in item["values"]),
            )
            for item in data["result"]
        ]

    def _get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10.0)
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(f"prometheus answered {response.status_code} to {path} {params}: {body}")
        return body["data"]

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
