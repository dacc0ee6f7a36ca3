"""`budgetflow tokens create | list | revoke` in-process on a temporary SQLite database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from budgetflow.cli import _parser, main
from storage import make_engine
from storage.tokens import SCOPES, TOKEN_PREFIX, verify_token
from tests.cli.conftest import capture

_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{43,}")


@pytest.fixture(autouse=True)
def _not_under_uv(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hints say `budgetflow ...`, not `uv run budgetflow ...`, whatever runs the tests."""
    monkeypatch.delenv("UV", raising=False)
    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A SQLite database URL in a directory that does not exist yet (created as for a run)."""
    return f"sqlite:///{tmp_path / 'state' / 'runs.db'}"


def _create(db: str, *args: str) -> tuple[str, str]:
    console, out = capture(width=80)
    assert main(["tokens", "create", "--db", db, *args], console=console) == 0
    text = out.getvalue()
    tokens = _TOKEN.findall(text)
    assert len(tokens) == 1, text
    return tokens[0], text


def test_create_prints_the_token_once_with_a_warning_and_stores_only_its_hash(db: str) -> None:
    token, text = _create(db, "--name", "ci", "--scope", "submit", "--expires-in", "30d")
    flat = " ".join(text.split())
    assert "created token `ci` (id 1), scope `submit`, expires" in flat
    assert "it will not be shown again" in flat
    assert "budgetflow tokens revoke 1 --db" in flat
    assert f"\n{token}\n" in text  # on a line of its own, never wrapped
    engine = make_engine(db)
    try:
        with engine.connect() as connection:
            rows = connection.execute(sa.text("SELECT * FROM api_tokens")).all()
        assert token not in str(rows) and token.removeprefix(TOKEN_PREFIX) not in str(rows)
        info = verify_token(engine, token)
        assert info is not None and info.scopes == ("submit",) and info.expires_at is not None
    finally:
        engine.dispose()


def test_list_shows_no_secret_fits_80_columns_and_revoke_ends_a_token(db: str) -> None:
    console, out = capture(width=80)
    assert main(["tokens", "list", "--db", db], console=console) == 0
    assert "no live tokens; create one with `budgetflow tokens create" in " ".join(out.getvalue().split())

    kept, _ = _create(
        db, "--name", "a-token-with-a-rather-long-name-for-a-narrow-terminal", "--scope", "read"
    )
    gone, _ = _create(db, "--name", "ci", "--scope", "admin")
    console, out = capture(width=80)
    assert main(["--db", db, "tokens", "list"], console=console) == 0
    text = out.getvalue()
    assert all(len(line) <= 80 for line in text.splitlines())
    header = text.splitlines()[0]
    for column in ("id", "name", "scope", "created UTC", "expires UTC", "last used UTC"):
        assert column in header
    assert "a-token-with" in text and "…" in text and "admin" in text and "never" in text
    assert kept not in text and gone not in text and TOKEN_PREFIX not in text

    console, out = capture(width=80)
    assert main(["tokens", "revoke", "2", "--db", db], console=console) == 0
    assert "revoked token `ci` (id 2)" in " ".join(out.getvalue().split())
    engine = make_engine(db)
    try:
        assert verify_token(engine, gone) is None and verify_token(engine, kept) is not None
    finally:
        engine.dispose()

    console, out = capture(width=80)
    assert main(["tokens", "list", "--db", db], console=console) == 0
    assert "ci" not in out.getvalue().replace("a-token", "")
    console, out = capture(width=80)
    assert main(["tokens", "list", "--all", "--db", db], console=console) == 0
    assert "revoked" in out.getvalue() and all(len(line) <= 80 for line in out.getvalue().splitlines())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create", "--name", "x", "--scope", "write"], "argument --scope: invalid choice: 'write'"),
        (["create", "--scope", "read"], "the following arguments are required: --name"),
        (["create", "--name", "x", "--scope", "read", "--expires-in", "3y"], "`3y` is not a lifetime"),
        (["create", "--name", "x", "--scope", "read", "--expires-in", "0d"], "must be more than zero"),
        (["create", "--name", " ", "--scope", "read"], "token name ` ` must be 1 to 200 characters"),
        (["revoke", "abc"], "token id `abc` is not a number; `budgetflow tokens list"),
        (["revoke", "7"], "no token with id `7`"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_code_2(db: str, argv: list[str], message: str) -> None:
    console, out = capture(width=200)
    assert main(["tokens", *argv, "--db", db], console=console) == 2
    text = out.getvalue()
    assert message in text and "Traceback" not in text
    assert not Path(db.removeprefix("sqlite:///")).exists()  # nothing was written


def test_revoke_of_an_unknown_id_in_an_existing_database(db: str) -> None:
    _create(db, "--name", "ci", "--scope", "read")
    console, out = capture(width=200)
    assert main(["tokens", "revoke", "9", "--db", db], console=console) == 2
    assert "no token with id `9`; `budgetflow tokens list --all` shows the ids" in out.getvalue()


def test_the_scope_choices_are_the_stored_scopes() -> None:
    create = _parser().parse_args(["tokens", "create", "--name", "n", "--scope", "read"])
    assert create.scope == "read"
    for scope in SCOPES:
        assert _parser().parse_args(["tokens", "create", "--name", "n", "--scope", scope]).scope == scope
    with pytest.raises(Exception, match="invalid choice"):
        _parser().parse_args(["tokens", "create", "--name", "n", "--scope", "owner"])
