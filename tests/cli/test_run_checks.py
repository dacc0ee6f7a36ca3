"""What `budgetflow run` and `validate` check before spending anything, and what they store."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from budgetflow.cli import main
from budgetflow.policy_names import DESCRIPTIONS, FORMS
from policies import policy_names
from storage import make_engine
from tests.cli.conftest import EXAMPLES, capture

PIPELINE = str(EXAMPLES / "code_pipeline.py")
RESEARCH = str(EXAMPLES / "research_qa.py")
FAST = ["--time-scale", "0.01", "--no-progress", "--policy", "always_cheapest"]


def _workflow_file(tmp_path: Path, body: str, name: str = "wf.py") -> Path:
    path = tmp_path / name
    path.write_text(
        "from budgetflow import FunctionAgent, LLMAgent, Workflow\nfrom examples._models import catalog\n"
        + body
    )
    return path


def test_a_database_path_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    console, out = capture()
    code = main(["--db", f"sqlite:///{tmp_path}/afile/sub/runs.db", "run", RESEARCH, *FAST], console=console)
    assert code == 2
    assert f"`{tmp_path}/afile` is a file, not a directory; choose another path" in out.getvalue()


def test_a_bad_redis_url_names_the_variable(monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    monkeypatch.setenv("BUDGETFLOW_REDIS_URL", "notaurl")
    console, out = capture()
    assert main(["--db", db, "run", RESEARCH, *FAST], console=console) == 2
    assert "`BUDGETFLOW_REDIS_URL` = `notaurl` is not a URL starting with `redis://`" in out.getvalue()


def test_a_damaged_sqlite_file_is_the_users_file_to_move(tmp_path: Path) -> None:
    damaged = tmp_path / "runs.db"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 20)
    console, out = capture()
    assert main(["--db", f"sqlite:///{damaged}", "runs", "list"], console=console) == 1
    text = " ".join(out.getvalue().split())
    assert f"`{damaged}` is not a SQLite database budgetflow can read" in text
    assert "move it aside" in text and "bug" not in text


def test_a_catalog_file_mistake_names_file_and_entry(tmp_path: Path, db: str) -> None:
    bad = tmp_path / "models.toml"
    bad.write_text('[[model]]\nname = "mini"\n')
    console, out = capture()
    assert main(["--db", db, "run", RESEARCH, "--catalog", str(bad), *FAST], console=console) == 2
    assert (
        f"catalog file `{bad}` has the unknown top-level key `model`; did you mean `models`?"
        in out.getvalue()
    )


def test_a_budget_in_the_file_is_checked_like_the_flag(tmp_path: Path, db: str) -> None:
    path = _workflow_file(
        tmp_path,
        "workflow = Workflow('w')\nworkflow.subtask('a', LLMAgent(prompt='x'), models=['mini'])\n"
        "budget_usd = 'lots'\n",
    )
    console, out = capture()
    assert main(["--db", db, "run", str(path)], console=console) == 2
    assert f"`budget_usd` in `{path}` = `lots` is not an amount in USD" in out.getvalue()


def test_db_works_after_the_subcommand_and_the_hint_is_a_command_that_works(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("UV", raising=False)
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)
    console, out = capture(width=80)
    assert main(["run", RESEARCH, "--db", db, *FAST], console=console) == 0
    lines = out.getvalue().splitlines()
    at = lines.index("calling tree:")
    first, second = lines[at + 1].strip(), lines[at + 2].strip()
    assert first.startswith("budgetflow runs show ") and first.endswith(" \\")
    run_id = first.split()[3]
    assert len(run_id) == 12, "the id is on the line whole"
    assert second == f"--db {db}"
    console, out = capture()
    assert main([*first.removesuffix("\\").split()[1:], *second.split()], console=console) == 0
    assert run_id in out.getvalue() and "decompose" in out.getvalue()


def test_under_uv_run_the_hint_says_uv_run(monkeypatch: pytest.MonkeyPatch, db: str) -> None:
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")
    console, out = capture(width=200)
    assert main(["run", RESEARCH, "--db", db, *FAST], console=console) == 0
    assert (
        f"  uv run budgetflow runs show {out.getvalue().split('runs show ')[1].split()[0]} --db {db}"
        in out.getvalue()
    )


def test_validate_and_run_agree_and_say_how_to_pass_an_input(tmp_path: Path, db: str) -> None:
    path = _workflow_file(
        tmp_path,
        "workflow = Workflow('w', inputs=['topic', 'audience'])\n"
        "workflow.subtask('a', LLMAgent(prompt='{topic} for {audience}'), models=['mini'])\n"
        "inputs = {'topic': 'ducks'}\nbudget_usd = 0.01\n",
    )
    console, out = capture()
    assert main(["--db", db, "validate", str(path)], console=console) == 2
    said = " ".join(out.getvalue().split())
    assert "run inputs are missing `audience`" in said
    assert f"pass `--input audience=VALUE` or add it to the `inputs` dict of `{path}`" in said
    console, out = capture()
    assert main(["--db", db, "run", str(path), *FAST], console=console) == 2
    assert " ".join(out.getvalue().split()) == said
    console, out = capture()
    assert main(["--db", db, "validate", str(path), "--input", "audience=kids"], console=console) == 0
    assert "ok workflow `w`: 1 subtask, 1 model (mini), 2 inputs" in out.getvalue()


def test_an_undeclared_input_used_by_a_template_is_explained(tmp_path: Path, db: str) -> None:
    path = _workflow_file(
        tmp_path,
        "workflow = Workflow('w', inputs=['topic'])\n"
        "workflow.subtask('a', LLMAgent(prompt='{topic} for {audience}'), models=['mini'])\n"
        "inputs = {'topic': 'ducks', 'audience': 'kids'}\n",
    )
    console, out = capture()
    assert main(["--db", db, "validate", str(path)], console=console) == 2
    said = " ".join(out.getvalue().split())
    assert "`audience` is given as a run input, but workflow `w` declares only `topic`" in said


def test_a_value_that_does_not_fit_its_format_spec_ends_the_run_at_once(tmp_path: Path, db: str) -> None:
    path = _workflow_file(
        tmp_path,
        "workflow = Workflow('w', inputs=['topic'])\n"
        "workflow.subtask('count', LLMAgent(prompt='How many {topic:d}?'), models=['mini'])\n"
        "inputs = {'topic': 'ducks'}\nbudget_usd = 0.01\n",
    )
    console, out = capture()
    assert main(["--db", db, "run", str(path), *FAST], console=console) == 1
    said = " ".join(out.getvalue().split())
    assert "outcome failed" in said and "subtask `count`" in said
    assert "cannot render `{topic:d}`: the value of `topic` is str 'ducks'" in said
    assert "model calls 0" in said


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [
        ("fixed:nosuch:2", "policy `fixed:nosuch:2` names model `nosuch`, which is not in the catalog"),
        ("fixed:mni:2", "did you mean `mini`?"),
        ("sequential_2:4O", "names model `4O`, which is not in the catalog"),
        ("fixed:mini:x", "K must be a whole number"),
        ("sequential_x:mini", "is not of the form `sequential_K:MODEL`"),
    ],
)
def test_policy_models_are_checked_before_the_run(policy: str, fragment: str, db: str) -> None:
    console, out = capture()
    assert main(["--db", db, "run", PIPELINE, "--policy", policy, *FAST[:3]], console=console) == 2
    assert fragment in " ".join(out.getvalue().split())
    assert not Path(db.removeprefix("sqlite:///")).exists(), "nothing ran, nothing was recorded"


def test_a_policy_model_some_subtasks_lack_is_a_note(tmp_path: Path, db: str) -> None:
    path = _workflow_file(
        tmp_path,
        "workflow = Workflow('w')\n"
        "a = workflow.subtask('a', LLMAgent(prompt='x'), models=['mini', '4o'])\n"
        "workflow.subtask('b', LLMAgent(prompt='{a}'), models=['mini'], after=[a])\n",
    )
    console, out = capture()
    assert main(["--db", db, "validate", str(path), "--policy", "fixed:4o:2"], console=console) == 0
    assert "note: policy `fixed:4o:2`: `b` does not list `4o` and runs on its first model" in out.getvalue()


def test_no_content_stores_no_input_text(db: str) -> None:
    document = "a confidential document " * 40
    console, out = capture()
    code = main(
        ["--db", db, "run", RESEARCH, "--no-content", "--input", f"question={document}", *FAST],
        console=console,
    )
    assert code == 0, out.getvalue()
    engine = make_engine(db)
    try:
        with engine.connect() as connection:
            inputs = connection.execute(sa.text("SELECT inputs FROM runs")).scalar_one()
            prompts = connection.execute(
                sa.text("SELECT count(*) FROM calls WHERE prompt IS NOT NULL")
            ).scalar()
            dumped = " ".join(str(row) for row in connection.execute(sa.text("SELECT * FROM calls")))
    finally:
        engine.dispose()
    assert "confidential" not in str(inputs) and "confidential" not in dumped
    assert '"redacted": true' in str(inputs).lower().replace("'", '"').replace("True", "true")
    assert str(len(document)) in str(inputs)
    assert prompts == 0


def test_policies_says_what_each_one_does() -> None:
    assert set(DESCRIPTIONS) == set(policy_names()), "every registered policy has one line"
    console, out = capture(width=80)
    assert main(["policies"], console=console) == 0
    text = out.getvalue()
    for name in [*policy_names(), *FORMS]:
        assert name in text
    assert "sequential_K:MODEL" in text and "Monte Carlo rollouts" in text


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["run", "--help"], ["a run input", "--time-scale", "--no-learn", "on a real clock"]),
        (["validate", "--help"], ["Python file defining `workflow`", "a run input"]),
        (["runs", "list", "--help"], ["show at most N runs", "only runs of this workflow"]),
        (["runs", "show", "--help"], ["any unique start of it"]),
        (["runs", "mark-abandoned", "--help"], ["--older-than", "heartbeat"]),
    ],
)
def test_every_argument_has_help(
    argv: list[str], fragments: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    console, _ = capture()
    assert main(argv, console=console) == 0
    text = " ".join(capsys.readouterr().out.split())
    for fragment in fragments:
        assert fragment in text


def test_bench_planners_runs_on_the_shipped_pool_by_default(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "planners", "--limit-dags", "1", "--budgets", "0.1", "--deadlines", "90"]
    argv += ["--policies", "always_cheapest", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert "pool_dev.jsonl" in out.read_text()


def test_nothing_points_outside_the_repository() -> None:
    root = EXAMPLES.parent
    tracked = [*root.glob("*.md"), *root.glob("Makefile"), *root.glob("docs/*.md")]
    tracked += [*root.glob("benchmarks/*.py"), *root.glob("budgetflow/*.py"), *root.glob("examples/*.py")]
    for path in tracked:
        assert "../shared" not in path.read_text(), f"`{path}` points outside the repository"
