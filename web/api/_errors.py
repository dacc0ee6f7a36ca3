"""Bad requests answered with messages a person can act on.

Every 4xx the API produces for bad input has the same body: `detail`, one sentence per
problem naming the field and what to send instead, and `errors`, the same as a list of
`{"field", "message"}`. FastAPI's own validation errors (422) are rewritten into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

__all__ = ["FieldError", "install_error_handlers"]


class FieldError(Exception):
    """A request whose field `field` cannot be accepted: answered `status` with `message`."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        """`message` says what is wrong with `field` and what to send instead."""
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


def _body(problems: Sequence[tuple[str, str]]) -> dict[str, Any]:
    return {
        "detail": " ".join(f"`{field}`: {message}" for field, message in problems),
        "errors": [{"field": field, "message": message} for field, message in problems],
    }


def _field(loc: Sequence[int | str]) -> str:
    """`("body", "inputs", "topic")` -> `inputs.topic`; the place (body, query, header) is left out."""
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in ("body", "query", "path", "header")
        else list(map(str, loc))
    )
    return ".".join(parts) or (str(loc[0]) if loc else "body")


def _message(error: Any) -> str:
    kind = error.get("type", "")
    text = str(error.get("msg", "")).removeprefix("Value error, ")
    if kind == "missing":
        return "is required; see the request's schema at `/docs` or `/openapi.json`"
    if kind == "extra_forbidden":
        return "is not a field of this request; remove it (the fields are listed at `/docs`)"
    if kind == "json_invalid":
        return f"the body is not valid JSON ({error.get('ctx', {}).get('error', text)}); send a JSON object"
    if kind in ("int_parsing", "float_parsing", "decimal_parsing", "int_type", "float_type"):
        return f"{text.lower()}; got `{error.get('input')!s:.60}`"
    if kind in ("bool_parsing", "bool_type"):
        return f"is `true` or `false` (a JSON boolean); got `{error.get('input')!s:.60}`"
    return text


def install_error_handlers(app: FastAPI) -> None:
    """Answer `FieldError` and request validation errors with the body described above."""

    async def field_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FieldError)
        return JSONResponse(_body([(exc.field, exc.message)]), status_code=exc.status)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = [(_field(e.get("loc", ())), _message(e)) for e in exc.errors()]
        return JSONResponse(_body(problems), status_code=422)

    app.add_exception_handler(FieldError, field_error)
    app.add_exception_handler(RequestValidationError, invalid)
