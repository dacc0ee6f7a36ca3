"""A chart of the Grafana board's queries, drawn from a real Prometheus scraping a real load.

```
.venv/bin/python -m benchmarks.board_chart [--out docs/observability_board.png] \\
    [--json benchmarks/results/board.json] [--seconds 60]
```

It starts two stand-in vLLM replicas (the first answers every fifth of its first hundred
requests with HTTP 500), Prometheus (`benchmarks._prometheus.PrometheusServer`: its own
temporary directory, a free loopback port, the shipped config, stopped by its PID at the
end, also on error) and `benchmarks.board_load` serving `/metrics` on another free port:
the example workflows on the simulated backend plus a workflow on the two replicas,
rounds every `--round-s` seconds for `--seconds` seconds, with a redis-server of its own
for the runs under a shared team budget (when `redis-server` is installed). Once the load has exited (it
waits for a last scrape), every query of every panel of the shipped board
(`deploy/grafana/dashboards/budgetflow.json`) is evaluated with `query_range` from just
before the first run to the end, `--points` steps, with Grafana's variables filled in as Grafana
would (`$__rate_interval` = max(4 x scrape interval, step + scrape interval), `$__range`
= the whole span, `$workflow` = all).

The figure follows the board's layout (its rows and grid): one small chart per panel,
titled like the panel, one line per series, labelled with the panel's legend format;
quantiles of one label share a colour and differ by line style; at most `--max-series`
label sets per chart (the largest; for a ratio, the longest present), the rest counted in
the legend's title. The bar
gauge is drawn as bars of its value at the end. A JSON summary (per panel and query:
the expression, the number of series, the last value of each) goes to `--json`, a table
to the terminal. Exits 1 when a query of a panel returned no data.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.table import Table

from benchmarks._prometheus import (
    DASHBOARD,
    BoardQuery,
    Process,
    PrometheusServer,
    Series,
    board_queries,
    free_port,
)
from tests.pool.replica_stub import StubReplica, serve_replica
from tests.servers import REDIS_SERVER, OwnRedis

__all__ = ["Drawn", "Panel", "main", "read_board"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "observability_board.png"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "board.json"

_SHORT_UNITS = {
    "Budget thresholds crossed": "crossings per {window}",
    "Run outcomes": "runs per {window}",
    "Runs in progress": "runs",
    "Tokens per second by type": "tokens/s",
    "Load per replica": "requests",
    "Replicas up and failures": "replicas; failures/s",
}
"""Y-axis labels of the panels whose unit is Grafana's unit-less `short` ({window}: `$__rate_interval`)."""
_TABLE_UNITS = {"currencyUSD": "USD", "percentunit": "ratio", "reqps": "/s", "short": "-"}
_STYLES = ("-", "--", ":", "-.")
"""Line style of a panel's first, second, ... query (when its queries share label sets)."""


@dataclass(frozen=True, kw_only=True)
class Panel:
    """A panel of the board: where it sits and what it asks."""

    title: str
    kind: str
    """Grafana's panel type (`timeseries`, `bargauge`, ...)."""
    unit: str
    """Grafana's unit of its values (`currencyUSD`, `s`, `percentunit`, `reqps`, `short`)."""
    section: str
    """The title of the row it is in."""
    x: int
    y: int
    w: int
    h: int
    queries: list[BoardQuery] = field(default_factory=list)


def read_board(queries: Sequence[BoardQuery], dashboard: Path = DASHBOARD) -> list[Panel]:
    """The board's panels in its order (top to bottom, left to right), each with its queries."""
    board = json.loads(dashboard.read_text())
    panels: list[Panel] = []
    section = ""

    def walk(items: Sequence[Mapping[str, Any]]) -> None:
        nonlocal section
        for item in sorted(items, key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"])):
            if item.get("type") == "row":
                section = str(item["title"])
                walk(item.get("panels", []))
                continue
            grid = item["gridPos"]
            title = str(item["title"])
            panels.append(
                Panel(
                    title=title,
                    kind=str(item.get("type", "timeseries")),
                    unit=str(item.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")),
                    section=section,
                    x=int(grid["x"]),
                    y=int(grid["y"]),
                    w=int(grid["w"]),
                    h=int(grid["h"]),
                    queries=[q for q in queries if q.panel == title],
                )
            )

    walk(board["panels"])
    return panels


_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def _short(value: str) -> str:
    """A label value as the legend shows it (a replica's URL without its scheme)."""
    return value.removeprefix("http://").removeprefix("https://")


def legend(query: BoardQuery, labels: Mapping[str, str]) -> str:
    """The series' name as Grafana's legend shows it (the query's legend format filled in)."""
    if query.legend:
        return _LEGEND_LABEL.sub(lambda m: _short(labels.get(m.group(1), "")), query.legend).strip()
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(labels.items())) or query.ref_id


@dataclass(frozen=True, kw_only=True)
class Drawn:
    """One series of one query of a panel, as evaluated."""

    query: BoardQuery
    name: str
    """Its legend text."""
    key: str
    """What its colour follows: its label set, or its name when it has no labels."""
    series: Series

    def last(self) -> float | None:
        """Its last finite value."""
        points = self.series.finite()
        return points[-1][1] if points else None

    def weight(self, unit: str) -> tuple[float, float]:
        """How much it says, to rank it: a ratio by how long it has a value and then how far it
        moves; anything else by how much of the chart it fills (its values' magnitudes summed)."""
        values = [v for _, v in self.series.finite()]
        if not values:
            return (0.0, 0.0)
        if unit == "percentunit":
            return (float(len(values)), max(values) - min(values))
        return (sum(abs(v) for v in values), 0.0)


def evaluate(
    server: PrometheusServer, panels: Sequence[Panel], *, start: float, end: float, step_s: float
) -> dict[str, list[Drawn]]:
    """Every query of every panel over [start, end], by panel title."""
    drawn: dict[str, list[Drawn]] = {}
    for panel in panels:
        found: list[Drawn] = []
        for query in panel.queries:
            for series in server.query_range(query.expr, start=start, end=end, step_s=step_s):
                labels = dict(series.labels)
                labels.pop("__name__", None)
                name = legend(query, labels)
                key = json.dumps(sorted(labels.items())) if labels else name
                found.append(Drawn(query=query, name=name, key=key, series=series))
        drawn[panel.title] = found
    return drawn


def _empty(panel: Panel, drawn: Sequence[Drawn]) -> list[BoardQuery]:
    """The panel's queries that returned no finite value."""
    return [q for q in panel.queries if not any(d.query == q and d.series.finite() for d in drawn)]


def _money(value: float, _: object = None) -> str:
    if value == 0:
        return "$0"
    digits = max(0, 1 - math.floor(math.log10(abs(value))))
    return f"${value:,.{digits}f}"


def _axis_label(panel: Panel, window: str = "") -> str:
    if panel.unit == "currencyUSD":
        return "USD per hour" if "per hour" in panel.title else "USD"
    return {
        "s": "seconds",
        "percentunit": "ratio",
        "reqps": "per second",
    }.get(panel.unit) or _SHORT_UNITS.get(panel.title, "").format(window=window)


def _value_formatter(unit: str) -> Any:
    from matplotlib import ticker

    if unit == "currencyUSD":
        return ticker.FuncFormatter(_money)
    if unit == "percentunit":
        return ticker.PercentFormatter(1.0, decimals=0)
    if unit == "s":
        return ticker.EngFormatter(unit="s", places=None, sep=" ")
    return ticker.FuncFormatter(_count)


def _count(value: float, _: object = None) -> str:
    """A plain number, thousands as `k` (20k tokens/s)."""
    return f"{value / 1000:.3g}k" if abs(value) >= 1000 else f"{value:.3g}"


def _draw_lines(
    axis: Any,
    panel: Panel,
    drawn: Sequence[Drawn],
    *,
    start: float,
    end: float,
    max_series: int,
    colors: Sequence[Any],
) -> None:
    weights: dict[str, tuple[float, float]] = {}
    for d in drawn:
        a, b = weights.get(d.key, (0.0, 0.0))
        w = d.weight(panel.unit)
        weights[d.key] = (a + w[0], b + w[1])
    keys = sorted(weights, key=lambda k: (-weights[k][0], -weights[k][1], k))
    shown = keys[:max_series]
    refs = [q.ref_id for q in panel.queries]
    # Queries that share label sets (p50 / p95 of a model) differ by line style; else all solid.
    by_key: dict[str, set[str]] = {}
    for d in drawn:
        by_key.setdefault(d.key, set()).add(d.query.ref_id)
    styled = any(len(r) > 1 for r in by_key.values())
    for d in sorted(drawn, key=lambda d: (shown.index(d.key) if d.key in shown else 0, d.query.ref_id)):
        if d.key not in shown:
            continue
        xs = [t - start for t, _ in d.series.points]
        ys = [v for _, v in d.series.points]
        axis.plot(
            xs,
            ys,
            color=colors[shown.index(d.key) % len(colors)],
            ls=_STYLES[refs.index(d.query.ref_id) % len(_STYLES)] if styled else "-",
            lw=1.3,
            label=d.name,
        )
        # A value seen at one step only (between gaps) would draw nothing as a line.
        finite = [i for i, y in enumerate(ys) if math.isfinite(y)]
        lone = [
            i
            for i in finite
            if not (i > 0 and math.isfinite(ys[i - 1])) and not (i + 1 < len(ys) and math.isfinite(ys[i + 1]))
        ]
        if lone:
            axis.plot(
                [xs[i] for i in lone],
                [ys[i] for i in lone],
                ls="none",
                marker=".",
                ms=3,
                color=colors[shown.index(d.key) % len(colors)],
            )
    omitted = len(keys) - len(shown)
    if drawn:
        entries = len(axis.get_legend_handles_labels()[1])
        wide = panel.w > 12
        axis.legend(
            fontsize=6.5,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0) if wide else None,
            framealpha=0.75,
            ncols=1 if wide or entries <= 4 else (2 if entries <= 8 else 3),
            title=f"+{omitted} more not drawn" if omitted else None,
            title_fontsize=6.5,
            handlelength=2.2,
            borderaxespad=0.3,
        )
    axis.yaxis.set_major_formatter(_value_formatter(panel.unit))
    if panel.unit == "percentunit":
        low = min((v for d in drawn if d.key in shown for _, v in d.series.finite()), default=0.0)
        axis.set_ylim(min(0.0, low) - 0.03, 1.28)  # room for the legend above 100%
    else:
        values = [v for d in drawn if d.key in shown for _, v in d.series.finite()]
        low, high = min([0.0, *values]), max([0.0, *values])
        if high <= low:  # all zero: a flat line at the bottom of [0, 1]
            high = 1.0
        axis.set_ylim(low - 0.03 * (high - low), high + 0.4 * (high - low))  # room for the legend
    axis.set_xlim(0, end - start)
    axis.set_xlabel("seconds since the first run started", fontsize=7)


def _draw_bars(
    axis: Any, panel: Panel, drawn: Sequence[Drawn], *, max_series: int, colors: Sequence[Any]
) -> None:
    bars = sorted(((d.name, d.last() or 0.0) for d in drawn), key=lambda b: -b[1])[:max_series]
    names = [b[0] for b in bars][::-1]
    values = [b[1] for b in bars][::-1]
    ys = list(range(len(names)))
    axis.barh(ys, values, color=[colors[i % len(colors)] for i in range(len(names))][::-1], height=0.5)
    axis.xaxis.set_major_formatter(_value_formatter(panel.unit))
    for y, name, value in zip(ys, names, values, strict=True):
        label = _money(value) if panel.unit == "currencyUSD" else f"{value:.3g}"
        axis.text(value, y, f" {label}", va="center", fontsize=7.5)
        axis.text(0, y + 0.3, name, va="bottom", fontsize=7.5)
    axis.set_yticks([])
    axis.set_ylim(-0.5, len(names) - 0.1)
    axis.set_xlim(0, max(values, default=1.0) * 1.25 or 1.0)
    axis.set_xlabel(f"{_axis_label(panel)}, at the end of the range", fontsize=7)


def draw(
    panels: Sequence[Panel],
    drawn: Mapping[str, Sequence[Drawn]],
    *,
    start: float,
    end: float,
    window: str,
    subtitle: str,
    path: Path,
    max_series: int,
    width_in: float = 16.0,
    dpi: int = 110,
) -> None:
    """One figure laid out like the board: its rows as headings, its panels on its grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["text.parse_math"] = False  # `$` in labels is money, not TeX
    colors = list(matplotlib.color_sequences["tab10"])
    # Lines of the board: the panels sharing a `y`, under the heading of their row.
    lines: list[tuple[str | None, list[Panel]]] = []
    section: str | None = None
    for panel in panels:
        if lines and lines[-1][1][0].y == panel.y:
            lines[-1][1].append(panel)
            continue
        heading = panel.section if panel.section != section else None
        section = panel.section
        lines.append((heading, [panel]))
    # Inches: margins, a row heading, a panel's title above it, its axes, its tick labels below.
    top_in, bottom_in, left_in, right_in, gap_in = 1.2, 0.15, 0.65, 0.15, 0.8
    heading_in, title_in, axes_in, under_in = 0.5, 0.3, 2.15, 0.55
    legend_in = 2.3  # right of a full-width panel, for its legend
    height_in = (
        top_in
        + bottom_in
        + sum(
            (heading_in if heading is not None else 0.0) + title_in + axes_in + under_in
            for heading, _ in lines
        )
    )
    fig = plt.figure(figsize=(width_in, height_in))
    unit_in = (width_in - left_in - right_in + gap_in) / 24

    def box(x_in: float, y_top_in: float, w_in: float, h_in: float) -> tuple[float, float, float, float]:
        """A figure-relative (left, bottom, width, height) from inches measured from the top."""
        return (x_in / width_in, 1 - (y_top_in + h_in) / height_in, w_in / width_in, h_in / height_in)

    y_in = top_in
    for heading, line in lines:
        if heading is not None:
            fig.text(
                left_in / width_in - 0.03,
                1 - (y_in + heading_in * 0.75) / height_in,
                heading,
                fontsize=13,
                fontweight="bold",
            )
            y_in += heading_in
        y_in += title_in
        for panel in line:
            w_in = panel.w * unit_in - gap_in - (legend_in if panel.w > 12 else 0.0)
            axis = fig.add_axes(box(left_in + panel.x * unit_in, y_in, w_in, axes_in))
            series = drawn.get(panel.title, [])
            if panel.kind == "bargauge":
                _draw_bars(axis, panel, series, max_series=max_series, colors=colors)
            else:
                lines_max = max_series + 2 if panel.w > 12 else max_series
                _draw_lines(axis, panel, series, start=start, end=end, max_series=lines_max, colors=colors)
                axis.set_ylabel(_axis_label(panel, window), fontsize=7.5)
            if not series:
                axis.text(0.5, 0.5, "no data", ha="center", color="red", transform=axis.transAxes)
            axis.set_title(panel.title, fontsize=10, loc="left")
            axis.tick_params(labelsize=7)
            axis.grid(alpha=0.3)
        y_in += axes_in + under_in
    title = "budgetflow's Grafana board, every panel's queries on a real Prometheus"
    fig.text(0.5, 1 - 0.12 / height_in, title, ha="center", va="top", fontsize=15)
    fig.text(0.5, 1 - 0.45 / height_in, subtitle, ha="center", va="top", fontsize=9.5, color="0.25")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png")
    plt.close(fig)
    # A 256-colour palette: a fifth of the size, no visible difference for line charts.
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)


@contextmanager
def stand_in_replicas(flaky_requests: int = 100) -> Iterator[tuple[StubReplica, StubReplica]]:
    """Two stand-in vLLM replicas; the first fails every fifth of its first `flaky_requests` with a 500."""
    every_fifth: list[str | int] = ["ok", "ok", "ok", "ok", 500]
    flaky = [*(every_fifth * (flaky_requests // 5)), "ok"]
    with ExitStack() as stack:
        a = stack.enter_context(serve_replica(StubReplica(script=flaky, prefix_cache=True)))
        b = stack.enter_context(serve_replica(StubReplica(script=["ok"], prefix_cache=True)))
        yield a, b


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")


def summary(panels: Sequence[Panel], drawn: Mapping[str, Sequence[Drawn]]) -> list[dict[str, Any]]:
    """Per panel and query: the expression, the number of series, the last value of each."""
    out = []
    for panel in panels:
        queries = []
        for query in panel.queries:
            mine = [d for d in drawn.get(panel.title, []) if d.query == query]
            queries.append(
                {
                    "ref_id": query.ref_id,
                    "expr": query.expr,
                    "legend": query.legend,
                    "series": len(mine),
                    "with_data": sum(1 for d in mine if d.series.finite()),
                    "last": {d.name: _round(d.last()) for d in sorted(mine, key=lambda d: d.name)},
                }
            )
        out.append(
            {
                "section": panel.section,
                "title": panel.title,
                "type": panel.kind,
                "unit": panel.unit,
                "queries": queries,
            }
        )
    return out


def _table(panels: Sequence[Panel], drawn: Mapping[str, Sequence[Drawn]]) -> Table:
    table = Table(title="the board's panels on a real Prometheus")
    table.add_column("panel", no_wrap=True)
    table.add_column("unit", no_wrap=True)
    table.add_column("series", no_wrap=True)
    table.add_column("data", no_wrap=True)
    section = None
    for panel in panels:
        if panel.section != section:
            if section is not None:
                table.add_section()
            section = panel.section
            table.add_row(f"[bold]{section}[/]", "", "", "")
        mine = drawn.get(panel.title, [])
        per_query = " ".join(f"{q.ref_id}:{sum(1 for d in mine if d.query == q)}" for q in panel.queries)
        empty = _empty(panel, mine)
        status = "[green]ok[/]" if not empty else "[red]NONE[/]"
        unit = _TABLE_UNITS.get(panel.unit, panel.unit)
        table.add_row(f"  {panel.title}", unit, per_query, status)
    return table


def _duration(seconds: float) -> str:
    """A Prometheus duration of at least `seconds` (whole milliseconds)."""
    ms = math.ceil(round(seconds * 1000, 6))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load, query Prometheus, draw and write; 1 when a panel's query had no data."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the PNG to write")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="the JSON summary to write")
    parser.add_argument("--seconds", type=float, default=60.0, help="start rounds of runs for this long")
    parser.add_argument("--round-s", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--scrape-interval-s", type=float, default=1.0, help="Prometheus' scrape interval")
    parser.add_argument("--points", type=int, default=150, help="steps of each range query")
    parser.add_argument("--max-series", type=int, default=6, help="label sets drawn per chart at most")
    parser.add_argument(
        "--no-pool", action="store_true", help="no pool workflow (the pool's panels then have no data)"
    )
    args = parser.parse_args(argv)
    console = Console()
    began = time.monotonic()

    def say(message: str) -> None:
        elapsed = time.monotonic() - began
        console.print(f"[dim]{elapsed:6.1f} s[/]  {message}", highlight=False, soft_wrap=True)

    scrape = _duration(args.scrape_interval_s)
    with tempfile.TemporaryDirectory(prefix="board-chart-") as tmp, ExitStack() as stack:
        pool: list[str] = []
        if not args.no_pool:
            pool = [r.base_url for r in stack.enter_context(stand_in_replicas())]
            say(f"stand-in vLLM replicas: {', '.join(pool)}")
        redis_url: list[str] = []
        if REDIS_SERVER.exists():
            (Path(tmp) / "redis").mkdir()
            redis = OwnRedis(Path(tmp) / "redis", "--save", "", "--appendonly", "no")
            redis.start_now()
            stack.callback(redis.kill)
            redis_url = ["--redis-url", redis.url]
            say(f"redis-server on {redis.url} (the shared team budget)")
        port = free_port()
        server = PrometheusServer(Path(tmp), targets=[f"127.0.0.1:{port}"], scrape_interval=scrape)
        stack.callback(server.stop)
        server.start()
        say(f"prometheus ({server.binary}) on {server.url}, scraping 127.0.0.1:{port} every {scrape}")
        spawned = time.time()
        load = Process(
            "benchmarks.board_load",
            "--metrics-port",
            str(port),
            "--seconds",
            f"{args.seconds:g}",
            "--round-s",
            f"{args.round_s:g}",
            *(["--pool-model", "stub-model", "--pool-replicas", *pool] if pool else []),
            *redis_url,
        )
        stack.callback(load.kill)
        say(f"benchmarks.board_load: rounds of runs every {args.round_s:g} s for {args.seconds:g} s ...")
        code, out, err = load.finish(timeout_s=args.seconds + 180)
        ended = time.time()
        if code != 0:
            console.print(f"[red]benchmarks.board_load exited with {code}[/]\n{err[-3000:]}")
            return 1
        load_summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        say(
            f"load done: {load_summary['runs']} runs, {load_summary['scrapes']} scrapes;"
            f" outcomes {load_summary['outcomes']}"
        )
        if not load_summary.get("final_scrape"):
            console.print("[red]Prometheus did not scrape the load after its last run[/]")
            return 1
        running = server.query_range(
            "sum(budgetflow_runs_in_progress) > 0",
            start=spawned,
            end=ended,
            step_s=args.scrape_interval_s / 4,
        )
        first = min((t for s in running for t, _ in s.finite()), default=spawned)
        start = first - 2 * args.scrape_interval_s  # the first scrape that saw a run, and one before
        end = ended + args.scrape_interval_s
        step_s = round((end - start) / args.points, 3)
        rate_interval = _duration(max(4 * args.scrape_interval_s, step_s + args.scrape_interval_s))
        time_range = f"{math.ceil(end - start)}s"
        queries = board_queries(rate_interval=rate_interval, time_range=time_range)
        panels = read_board(queries)
        say(
            f"evaluating {len(queries)} queries of {len(panels)} panels over {end - start:.0f} s,"
            f" step {step_s:g} s, $__rate_interval={rate_interval}, $__range={time_range}"
        )
        drawn = evaluate(server, panels, start=start, end=end, step_s=step_s)
        server.stop()
        say("prometheus stopped")

    empty = [(p, q) for p in panels for q in _empty(p, drawn.get(p.title, []))]
    pool_note = (
        " and of a workflow on a pool of two stand-in vLLM replicas\n(one fails some requests at first;"
        " the stand-ins cache prompt prefixes in 16-token blocks, as vLLM does)\n"
        if pool
        else " (no pool workflow)\n"
    )
    subtitle = (
        f"benchmarks.board_load for {args.seconds:g} s: {load_summary['runs']} runs of the example workflows"
        f" (simulated models){pool_note}"
        f"Prometheus scraping every {scrape}; the shipped board's queries with step {step_s:g} s,"
        f" $__rate_interval = {rate_interval}, $workflow = All; dashed / dotted: a higher quantile"
        " of the same series"
    )
    say(f"drawing {args.out}")
    draw(
        panels,
        drawn,
        start=start,
        end=end,
        window=rate_interval,
        subtitle=subtitle,
        path=args.out,
        max_series=args.max_series,
    )
    report = {
        "command": " ".join(["-m benchmarks.board_chart", *(argv if argv is not None else sys.argv[1:])]),
        "dashboard": str(DASHBOARD.relative_to(ROOT)),
        "load": load_summary,
        "window": {
            "span_s": round(end - start, 1),
            "step_s": step_s,
            "scrape_interval": scrape,
            "rate_interval": rate_interval,
            "range": time_range,
        },
        "queries": len(queries),
        "queries_without_data": [f"{p.title} [{q.ref_id}]" for p, q in empty],
        "panels": summary(panels, drawn),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    say(f"written: {args.json}")
    console.print(_table(panels, drawn))
    console.print(f"done in {time.monotonic() - began:.0f} s")
    if empty:
        console.print(
            "[red]panels whose queries returned no data (the board promises every panel has data):[/]\n"
            + "\n".join(f"  {p.title} [{q.ref_id}]: {q.expr}" for p, q in empty)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
