"""budgetflow's metrics through a real Prometheus, and the Grafana board's queries on them.

Prometheus is Debian's package (`scripts/ensure_services.sh` installs it), run by each
test on a free loopback port with its own storage and the shipped config pointed at a
budgetflow process on loopback, scraping every 250 ms; it is stopped by its PID.

* The board: `benchmarks.board_load` serves `/metrics` while it runs the example
  workflows on the simulated backend and a workflow on a vLLM pool of two stand-in
  replicas (real HTTP, a real `PoolRouter`; one replica answers some requests with HTTP
  500). Then every query of every panel of the shipped dashboard is evaluated through
  Prometheus' HTTP API over the load's time range and must return a number, so a metric
  renamed (or a label dropped) without the board following fails here.
* The command: `budgetflow run --metrics-port` is scraped while its run goes, and its
  outcome reaches Prometheus (it waits for a last scrape).
* `promtool check config` accepts the shipped config.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest

from benchmarks._prometheus import PROMETHEUS_CONFIG, Process, PrometheusServer, board_queries, free_port
from tests.pool.replica_stub import StubReplica, serve_replica
from tests.servers import OwnRedis

StartPrometheus = Callable[[Sequence[str]], PrometheusServer]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[StartPrometheus]:
    """Start Prometheus scraping the given `host:port` targets every 250 ms; stopped at teardown."""
    if shutil.which("prometheus") is None:
        pytest.skip("`prometheus` is not installed; `bash scripts/ensure_services.sh` (as root) installs it")
    servers: list[PrometheusServer] = []

    def start(targets: Sequence[str]) -> PrometheusServer:
        root = tmp_path / f"prometheus-{len(servers)}"
        root.mkdir()
        server = PrometheusServer(root, targets=targets, scrape_interval="250ms")
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


Spawn = Callable[..., Process]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start budgetflow processes; any still running at teardown is killed."""
    started: list[Process] = []

    def start(*argv: str) -> Process:
        process = Process(*argv)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


_LOAD_S = 8.0


@pytest.fixture
def replicas() -> Iterator[tuple[StubReplica, StubReplica]]:
    """Two stand-in vLLM replicas with prefix caches; the first fails every third request of its
    first dozen with a 500."""
    every_third: list[str | int] = ["ok", "ok", 500]
    flaky = [*(every_third * 4), "ok"]
    with ExitStack() as stack:
        a = stack.enter_context(serve_replica(StubReplica(script=flaky, prefix_cache=True)))
        b = stack.enter_context(serve_replica(StubReplica(script=["ok"], prefix_cache=True)))
        yield a, b


@pytest.mark.timeout(90)
def test_every_panel_of_the_board_returns_data_from_a_real_prometheus(
    prometheus: StartPrometheus,
    spawn: Spawn,
    replicas: tuple[StubReplica, StubReplica],
    own_redis: Callable[..., OwnRedis],
) -> None:
    board_redis = own_redis("--save", "", "--appendonly", "no")  # the load's shared team budget
    port = free_port()
    server = prometheus([f"127.0.0.1:{port}"])
    started = time.time()
    load = spawn(
        "benchmarks.board_load",
        "--metrics-port",
        str(port),
        "--seconds",
        str(_LOAD_S),
        "--round-s",
        "2",
        "--pool-model",
        "stub-model",
        "--redis-url",
        board_redis.url,
        "--pool-replicas",
        *(r.base_url for r in replicas),
    )
    code, out, err = load.finish(timeout_s=75)
    ended = time.time()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    # Prometheus saw the process before its first run and after its last
    assert summary["first_scrape"] is True and summary["final_scrape"] is True, summary
    outcomes = summary["outcomes"]
    assert outcomes.get("pool-summaries: completed", 0) > 0, outcomes
    assert outcomes.get("code-pipeline: deadline_exceeded", 0) > 0, outcomes
    assert any(k.startswith("code-pipeline (shared budget)") for k in outcomes), outcomes
    target = server.targets()[0]
    assert target["labels"]["job"] == "budgetflow", target

    span = int(ended - started) + 2
    queries = board_queries(rate_interval="4s", time_range=f"{span}s")
    assert len(queries) >= 25
    empty = []
    hit_rates: list[float] = []
    for query in queries:
        series = server.query_range(query.expr, start=started, end=ended + 1, step_s=0.5)
        if not any(s.finite() for s in series):
            empty.append(f"{query.panel} [{query.ref_id}]: {query.expr}")
        if query.panel.startswith("Prefix-cache hit rate"):
            hit_rates += [v for s in series for _, v in s.finite()]
    assert empty == [], "panels without data:\n" + "\n".join(empty)
    # the pool workflow's sections share the outline's prompt: the replicas' caches hit
    assert hit_rates and max(hit_rates) > 0.5 and all(0.0 <= v <= 1.0 for v in hit_rates), hit_rates


@pytest.mark.timeout(90)
def test_budgetflow_run_metrics_reach_prometheus_with_the_runs_outcome(
    prometheus: StartPrometheus, spawn: Spawn, tmp_path: Path
) -> None:
    port = free_port()
    server = prometheus([f"127.0.0.1:{port}"])
    started = time.time()
    run = spawn(
        "budgetflow",
        "run",
        "examples/code_pipeline.py",
        "--metrics-port",
        str(port),
        "--time-scale",
        "0.2",
        "--no-progress",
        "--db",
        f"sqlite:///{tmp_path / 'runs.db'}",
    )
    code, out, err = run.finish(timeout_s=75)
    ended = time.time()
    assert code == 0, err
    assert f"metrics: http://127.0.0.1:{port}/metrics" in out
    assert "waiting up to 30 s for a last scrape" in out

    def values(expr: str) -> dict[str, float]:
        """The last finite value of each series of `expr`, by its `outcome` / `model` / `type`."""
        found = {}
        for series in server.query_range(expr, start=started, end=ended + 1, step_s=0.25):
            points = series.finite()
            if points:
                key = (
                    series.labels.get("outcome")
                    or series.labels.get("model")
                    or series.labels.get("type", "")
                )
                found[key] = points[-1][1]
        return found

    assert values('budgetflow_runs_total{workflow="code-pipeline", policy="mcpp"}')["completed"] == 1
    assert values("budgetflow_runs_in_progress")[""] == 0  # back to zero after the run
    assert max(values("max_over_time(budgetflow_runs_in_progress[1m])").values()) == 1  # seen while it ran
    spent = values('budgetflow_spend_usd_total{workflow="code-pipeline"}')
    assert spent["mini"] > 0 and set(spent) <= {"mini", "4o"}
    tokens = values('sum by (type) (budgetflow_tokens_total{workflow="code-pipeline"})')
    assert tokens["input"] > 0 and tokens["output"] > 0


def test_promtool_accepts_the_shipped_config() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("`promtool` is not installed; `bash scripts/ensure_services.sh` (as root) installs it")
    out = subprocess.run(
        ["promtool", "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout
