"""The learning-curve benchmark at toy size: its output's shape, and what must hold on any inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_learning
from benchmarks._learning_workload import make_input, prior_estimates, true_estimates


def test_the_benchmark_writes_its_report_and_charts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "learning.json"
    code = bench_learning.main(
        ["--runs", "0,6", "--inputs", "4", "--seed", "3", "--out", str(out), "--charts", str(tmp_path)]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert [c["runs"] for c in report["checkpoints"]] == [0, 6]
    cells = len(report["cells"])
    assert cells == 6
    priors, oracle = report["fixed"]["priors"], report["fixed"]["oracle"]
    # Same inputs, same seeds: knowing each input's true odds never completes fewer runs over the grid.
    assert oracle["grid_completion"] >= priors["grid_completion"]
    for checkpoint in report["checkpoints"]:
        methods = checkpoint["methods"]
        assert set(methods) >= {"table", "learned", "learned+in-run", "router", "router@0.6", "router@0.8"}
        for summary in methods.values():
            assert len(summary["cells"]) == cells
            for cell in summary["cells"]:
                low, high = cell["completion_ci"]
                assert low - 1e-9 <= cell["completion"] <= high + 1e-9
                assert 0 <= cell["mean_cost_usd"] <= cell["budget_usd"]
        prediction = methods["learned"]["prediction"]
        assert prediction["n"] == 4 * 9  # every (subtask, model) of every held-out input
        assert 0 <= prediction["ece"] <= 1 and 0 <= prediction["brier"] <= 1
        assert len(checkpoint["router_beaten"]) == cells
    # With nothing recorded, the learned estimator and the table fall back to the priors exactly.
    first = report["checkpoints"][0]["methods"]
    assert first["learned"]["prediction"] == priors["prediction"] == first["table"]["prediction"]
    assert first["learned"]["grid_completion"] == priors["grid_completion"]
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert (tmp_path / "learning_calibration.png").stat().st_size > 0
    assert "| runs | method |" in capsys.readouterr().out


def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_learning.main(["--runs", "0,ten"]) == 2
    assert "--runs must be comma-separated numbers" in capsys.readouterr().err
    assert bench_learning.main(["--inputs", "1"]) == 2
    assert "--inputs must be at least 2" in capsys.readouterr().err
    assert bench_learning.main(["--out", str(tmp_path / "missing" / "x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_priors_are_wrong_and_the_inputs_show_their_difficulty() -> None:
    items = [make_input(5, i) for i in range(200)]
    priors = prior_estimates()
    cheap_truth = [true_estimates(x)[("patch", "small")].success_prob for x in items]
    assert priors[("patch", "small")].success_prob - sum(cheap_truth) / len(cheap_truth) > 0.2
    # long reports are harder: the observable length carries part of the difficulty
    long = [p for x, p in zip(items, cheap_truth, strict=True) if x.words > 160]
    short = [p for x, p in zip(items, cheap_truth, strict=True) if x.words < 90]
    assert sum(long) / len(long) < sum(short) / len(short) - 0.1


def test_the_training_data_ablation_narrows_the_examples(tmp_path: Path) -> None:
    out = tmp_path / "ablation.json"
    assert bench_learning.main(["--ablation", "--runs", "5", "--inputs", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    counts = [row["examples"] for row in result["rows"]]
    assert len(counts) == 3 and counts[0] >= counts[1] > counts[2] > 0
    assert all(row["n"] == 2 * 9 for row in result["rows"])
