"""The learning benchmark's report: what is kept, the printed tables and the two charts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Report", "charts", "format_table"]


@dataclass(kw_only=True)
class Report:
    """Everything measured, JSON-ready."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    cells: list[dict[str, float]]
    fixed: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    timing_s: dict[str, float] = field(default_factory=dict)


def _target_checkpoint(report: Report, target_runs: int) -> dict[str, Any]:
    eligible = [c for c in report.checkpoints if c["runs"] <= target_runs]
    return eligible[-1] if eligible else report.checkpoints[0]


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(report: Report, target_runs: int) -> str:
    """The results as Markdown tables (also printed)."""
    lines = [
        "| runs | method | grid completion | gap closed [95% CI] | mean cost $ | ECE | AUROC | Brier |"
        " tokens MAE | p90 cover |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("priors", "oracle"):
        s = report.fixed[name]
        pred = s.get("prediction", {})
        lines.append(
            f"| any | {name} | {s['grid_completion']:.3f} | {'0' if name == 'priors' else '1'} |"
            f" {s['grid_mean_cost_usd']:.5f} | {_fmt(pred.get('ece'))} | {_fmt(pred.get('auroc'))} |"
            f" {_fmt(pred.get('brier'))} | {_fmt(pred.get('output_tokens_mae'), '.0f')} |"
            f" {_fmt(pred.get('output_tokens_p90_coverage'), '.2f')} |"
        )
    for c in report.checkpoints:
        for name in ("table", "learned", "learned+in-run", "router"):
            s = c["methods"][name]
            pred = s.get("prediction", {})
            low, high = s["gap_closed_ci"]
            lines.append(
                f"| {c['runs']} | {name} | {s['grid_completion']:.3f} |"
                f" {_fmt(s['gap_closed'], '.2f')} [{_fmt(low, '.2f')}, {_fmt(high, '.2f')}] |"
                f" {s['grid_mean_cost_usd']:.5f} | {_fmt(pred.get('ece'))} | {_fmt(pred.get('auroc'))} |"
                f" {_fmt(pred.get('brier'))} | {_fmt(pred.get('output_tokens_mae'), '.0f')} |"
                f" {_fmt(pred.get('output_tokens_p90_coverage'), '.2f')} |"
            )
    target = _target_checkpoint(report, target_runs)
    lines += [
        "",
        f"Per cell at {target['runs']} runs: completion [95% Wilson] and mean cost",
        "",
        "| budget $ | deadline s | priors | table | learned | learned+in-run | router (best threshold)"
        " | oracle |",
        "|---:|---:|---|---|---|---|---|---|",
    ]
    for j, cell in enumerate(report.cells):
        row = [f"{cell['budget_usd']:g}", f"{cell['deadline_s']:g}"]
        for name in ("priors", "table", "learned", "learned+in-run", "router", "oracle"):
            s = (report.fixed.get(name) or target["methods"][name])["cells"][j]
            lo, hi = s["completion_ci"]
            row.append(f"{s['completion']:.2f} [{lo:.2f}, {hi:.2f}] ${s['mean_cost_usd']:.4f}")
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        f"Cost at matched completion at {target['runs']} runs"
        " (target: the router's completion at the largest budget)",
        "",
    ]
    names = ("priors", "table", "learned", "learned+in-run", "router", "oracle")
    lines += ["| deadline s | target | " + " | ".join(names) + " |", "|---:|---:|" + "---:|" * len(names)]
    for deadline, row in target["matched_cost"].items():
        lines.append(
            f"| {deadline} | {row['target_completion']:.2f} | "
            + " | ".join(_fmt(row.get(n), ".5f") for n in names)
            + " |"
        )
    return "\n".join(lines)


def charts(report: Report, out_dir: Path) -> list[Path]:
    """docs/learning_curve.png and docs/learning_calibration.png (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    runs = [c["runs"] for c in report.checkpoints]
    x = [max(r, 1) for r in runs]
    fig, (ax, ax_cost) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, color in (
        ("table", "tab:gray"),
        ("learned", "tab:blue"),
        ("learned+in-run", "tab:green"),
        ("router", "tab:orange"),
    ):
        y = [c["methods"][name]["grid_completion"] for c in report.checkpoints]
        ax.plot(x, y, marker="o", color=color, label=name)
        ax_cost.plot(
            x,
            [c["methods"][name]["grid_mean_cost_usd"] for c in report.checkpoints],
            marker="o",
            color=color,
            label=name,
        )
    for name, style in (("priors", ":"), ("oracle", "--")):
        ax.axhline(report.fixed[name]["grid_completion"], linestyle=style, color="black", label=name)
        ax_cost.axhline(report.fixed[name]["grid_mean_cost_usd"], linestyle=style, color="black", label=name)
    for a in (ax, ax_cost):
        a.set_xscale("log")
        a.set_xticks(x, [str(r) for r in runs])
        a.set_xlabel("recorded runs trained on (0 shown at 1)")
    ax.set_ylabel("completion within budget and deadline (grid mean)")
    ax_cost.set_ylabel("mean spend per run, USD (grid mean)")
    ax.legend(fontsize=8)
    ax.set_title("Learning curve")
    ax_cost.set_title("Spend")
    fig.tight_layout()
    curve = out_dir / "learning_curve.png"
    fig.savefig(curve, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8)
    for c in report.checkpoints:
        points = c["methods"]["learned"]["reliability"]
        if c["runs"] == 0 or not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{c['runs']} runs")
    ax.set_xlabel("predicted success probability (learned)")
    ax.set_ylabel("true success probability, held-out inputs")
    ax.set_title("Calibration of the learned estimator")
    ax.legend(fontsize=8)
    fig.tight_layout()
    calibration = out_dir / "learning_calibration.png"
    fig.savefig(calibration, dpi=110)
    plt.close(fig)
    return [curve, calibration]
