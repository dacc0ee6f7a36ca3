"""Charts drawn on the server as inline SVG: no JavaScript library, no network, text escaped.

Each function returns `Markup` for a template: an `<svg class="chart" data-chart=NAME>`
with a `<title>` per mark (the browser's tooltip) and an empty-state message when there
is nothing to draw. Colours come from one palette, keyed by series name in order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

__all__ = [
    "PALETTE",
    "Bar",
    "FlameBox",
    "Lane",
    "Line",
    "bars",
    "cost_colour",
    "flame",
    "lines",
    "stacked_days",
    "timeline",
]

PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
"""Series colours, in order."""

_FONT = 'font-family="system-ui,sans-serif" font-size="11"'


def _svg(name: str, width: int, height: int, body: str, *, label: str) -> Markup:
    return Markup(
        f'<svg class="chart" data-chart="{escape(name)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" '
        f'role="img" aria-label="{escape(label)}" preserveAspectRatio="xMinYMin meet" {_FONT}>'
        f"{body}</svg>"
    )


def _empty(name: str, label: str, message: str = "nothing recorded yet") -> Markup:
    return Markup(
        f'<p class="empty" data-chart="{escape(name)}" aria-label="{escape(label)}">{escape(message)}</p>'
    )


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exponent
        if top >= value:
            return float(top)
    return float(10 ** (exponent + 1))


def _money(value: float) -> str:
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:.4g}"


def _legend(keys: Sequence[str], colours: Mapping[str, str], x: int, y: int) -> str:
    out = []
    for i, key in enumerate(keys):
        yy = y + i * 16
        out.append(
            f'<rect x="{x}" y="{yy}" width="10" height="10" fill="{colours[key]}"/>'
            f'<text x="{x + 14}" y="{yy + 9}">{escape(key)}</text>'
        )
    return "".join(out)


def _colours(keys: Sequence[str]) -> dict[str, str]:
    return {key: PALETTE[i % len(PALETTE)] for i, key in enumerate(keys)}


def stacked_days(
    name: str, label: str, rows: Sequence[tuple[date, str, float]], *, width: int = 640, height: int = 220
) -> Markup:
    """Daily totals as stacked bars, one colour per key (model, workflow), in dollars."""
    if not rows:
        return _empty(name, label)
    days = sorted({d for d, _, _ in rows})
    totals: dict[str, float] = {}
    for _, key, value in rows:
        totals[key] = totals.get(key, 0.0) + value
    keys = sorted(totals, key=lambda k: -totals[k])
    colours = _colours(keys)
    per_day: dict[date, dict[str, float]] = {d: {} for d in days}
    for d, key, value in rows:
        per_day[d][key] = per_day[d].get(key, 0.0) + value
    top = _nice_max(max(sum(v.values()) for v in per_day.values()))
    left, right, top_pad, bottom = 72, 150, 10, 24
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    slot = plot_w / len(days)
    bar_w = max(1.0, slot * 0.8)
    body = [_axis_y(left, top_pad, plot_w, plot_h, top, _money)]
    for i, d in enumerate(days):
        x = left + i * slot + (slot - bar_w) / 2
        y = float(top_pad + plot_h)
        for key in keys:
            value = per_day[d].get(key, 0.0)
            if value <= 0:
                continue
            h = value / top * plot_h
            y -= h
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(h, 0.5):.1f}" '
                f'fill="{colours[key]}"><title>{escape(f"{d}: {key} {_money(value)}")}</title></rect>'
            )
    for i in sorted({0, len(days) // 2, len(days) - 1}):
        x = left + i * slot + slot / 2
        body.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle">{days[i]:%b %d}</text>')
    body.append(_legend(keys[:10], colours, width - right + 12, top_pad))
    return _svg(name, width, height, "".join(body), label=label)


def _axis_y(left: int, top: int, plot_w: float, plot_h: float, vmax: float, fmt: object) -> str:
    out = []
    for i in range(5):
        value = vmax * i / 4
        y = top + plot_h - plot_h * i / 4
        text = fmt(value) if callable(fmt) else f"{value:g}"
        out.append(
            f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(text)}</text>'
        )
    return "".join(out)


@dataclass(frozen=True)
class Bar:
    """One horizontal bar: its label, length, the text shown after it, and optional colour."""

    label: str
    value: float
    text: str
    colour: str | None = None


def bars(
    name: str, label: str, items: Sequence[Bar], *, width: int = 640, vmax: float | None = None
) -> Markup:
    """Horizontal bars, one per item, labelled on the left and valued on the right."""
    if not items:
        return _empty(name, label)
    row, left, right = 22, 150, 120
    height = row * len(items) + 8
    top = vmax if vmax is not None else max(max(i.value for i in items), 1e-12)
    plot_w = width - left - right
    body = []
    for n, item in enumerate(items):
        y = 4 + n * row
        w = 0.0 if top <= 0 else max(0.0, item.value) / top * plot_w
        colour = item.colour or PALETTE[n % len(PALETTE)]
        body.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{escape(item.label)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{max(w, 1):.1f}" height="{row - 8}" fill="{colour}">'
            f"<title>{escape(f'{item.label}: {item.text}')}</title></rect>"
            f'<text x="{left + w + 6:.1f}" y="{y + 14}">{escape(item.text)}</text>'
        )
    return _svg(name, width, height, "".join(body), label=label)


@dataclass(frozen=True)
class Line:
    """One series of (x, y) points, drawn as steps or straight segments."""

    name: str
    points: Sequence[tuple[float, float]]
    colour: str
    dashed: bool = False
    step: bool = True


def lines(
    name: str,
    label: str,
    series: Sequence[Line],
    *,
    x_max: float,
    y_max: float,
    marks: Sequence[tuple[float, str]] = (),
    width: int = 640,
    height: int = 240,
) -> Markup:
    """Lines over run time (seconds), dollars up; `marks` are labelled vertical rules (a deadline)."""
    if not any(s.points for s in series):
        return _empty(name, label)
    left, right, top_pad, bottom = 72, 130, 10, 26
    plot_w, plot_h = width - left - right, height - top_pad - bottom
    x_top = max(x_max, 1e-9)
    y_top = _nice_max(y_max)

    def px(x: float) -> float:
        return left + min(max(x, 0.0), x_top) / x_top * plot_w

    def py(y: float) -> float:
        return top_pad + plot_h - min(max(y, 0.0), y_top) / y_top * plot_h

    body = [_axis_y(left, top_pad, plot_w, plot_h, y_top, _money)]
    for i in range(5):
        x = x_top * i / 4
        body.append(f'<text x="{px(x):.1f}" y="{height - 8}" text-anchor="middle">{x:.3g}s</text>')
    for x, text in marks:
        body.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top_pad}" y2="{top_pad + plot_h}" '
            f'stroke="#555" stroke-dasharray="4 3"/>'
            f'<text x="{px(x) - 3:.1f}" y="{top_pad + 10}" text-anchor="end">{escape(text)}</text>'
        )
    for s in series:
        if not s.points:
            continue
        coords: list[str] = []
        previous: tuple[float, float] | None = None
        for x, y in s.points:
            if s.step and previous is not None:
                coords.append(f"{px(x):.1f},{py(previous[1]):.1f}")
            coords.append(f"{px(x):.1f},{py(y):.1f}")
            previous = (x, y)
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        body.append(
            f'<polyline fill="none" stroke="{s.colour}" stroke-width="2"{dash} points="{" ".join(coords)}">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    legend = {s.name: s.colour for s in series}
    body.append(_legend(list(legend), legend, width - right + 12, top_pad))
    return _svg(name, width, height, "".join(body), label=label)


@dataclass(frozen=True)
class Lane:
    """One bar of the attempts timeline: a row label, start and end (run seconds), colour, tooltip."""

    row: str
    start: float
    end: float
    colour: str
    title: str
    ident: str


def timeline(name: str, label: str, lanes: Sequence[Lane], *, x_max: float, width: int = 900) -> Markup:
    """Attempts as bars on run time, one row per subtask and sample."""
    if not lanes:
        return _empty(name, label)
    rows: list[str] = []
    for lane in lanes:
        if lane.row not in rows:
            rows.append(lane.row)
    row_h, left, right, top_pad = 18, 170, 20, 6
    height = top_pad + row_h * len(rows) + 24
    plot_w = width - left - right
    x_top = max(x_max, 1e-9)

    def px(x: float) -> float:
        return left + min(max(x, 0.0), x_top) / x_top * plot_w

    body = []
    for i, row in enumerate(rows):
        y = top_pad + i * row_h
        body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{escape(row)}</text>')
    for lane in lanes:
        y = top_pad + rows.index(lane.row) * row_h
        x0, x1 = px(lane.start), px(lane.end)
        body.append(
            f'<rect data-attempt-id="{escape(lane.ident)}" x="{x0:.1f}" y="{y + 2}" '
            f'width="{max(x1 - x0, 2):.1f}" height="{row_h - 4}" rx="2" fill="{lane.colour}">'
            f"<title>{escape(lane.title)}</title></rect>"
        )
    for i in range(5):
        x = x_top * i / 4
        body.append(f'<text x="{px(x):.1f}" y="{height - 6}" text-anchor="middle">{x:.3g}s</text>')
    return _svg(name, width, height, "".join(body), label=label)


@dataclass(frozen=True)
class FlameBox:
    """One node of the flame view: depth, start and length on run time, cost, label, id."""

    depth: int
    start: float
    length: float
    cost_usd: float
    label: str
    ident: str


def cost_colour(cost: float, most: float) -> str:
    """Pale yellow (free) to deep red (the costliest node), on a square-root scale."""
    share = 0.0 if most <= 0 else min(1.0, math.sqrt(max(cost, 0.0) / most))
    r = 255 - int(40 * share)
    g = int(237 - 190 * share)
    b = int(160 - 130 * share)
    return f"#{r:02x}{g:02x}{b:02x}"


def flame(name: str, label: str, boxes: Sequence[FlameBox], *, x_max: float, width: int = 900) -> Markup:
    """The calling tree on run time, one level per depth, each box coloured by its own cost."""
    if not boxes:
        return _empty(name, label)
    depth = max(b.depth for b in boxes) + 1
    row_h, left, right = 20, 4, 4
    height = depth * row_h + 20
    plot_w = width - left - right
    x_top = max(x_max, max(b.start + b.length for b in boxes), 1e-9)
    most = max(b.cost_usd for b in boxes)
    body = []
    for b in boxes:
        x = left + b.start / x_top * plot_w
        w = max(b.length / x_top * plot_w, 1.0)
        y = b.depth * row_h
        fits = int((w - 6) / 6.5)
        text = (
            escape(b.label if len(b.label) <= fits else b.label[: max(fits - 1, 0)] + "…")
            if fits >= 4
            else ""
        )
        body.append(
            f'<g><rect data-call-id="{escape(b.ident)}" x="{x:.1f}" y="{y}" width="{w:.1f}" '
            f'height="{row_h - 2}" fill="{cost_colour(b.cost_usd, most)}" stroke="#fff">'
            f"<title>{escape(f'{b.label}: {_money(b.cost_usd)}, {b.length:.3g}s')}</title></rect>"
            f'<text x="{x + 3:.1f}" y="{y + 13}" pointer-events="none">{text}</text></g>'
        )
    body.append(
        f'<text x="{left}" y="{height - 5}">0s</text>'
        f'<text x="{width - right}" y="{height - 5}" text-anchor="end">{x_top:.3g}s</text>'
    )
    return _svg(name, width, height, "".join(body), label=label)
