"""Small helpers shared by the agents and checks."""

from __future__ import annotations

import functools
import inspect
import re

from orchestrator.agent import AttemptContext

__all__ = ["callable_name", "cap_max_tokens", "extract_fenced", "is_async_callable", "tail"]

# ```lang\n ... ``` with an optional language tag; the closing fence may lack a newline.
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+\-.]*)[^\n]*\n(.*?)```", re.DOTALL)


def cap_max_tokens(requested: int | None, ctx: AttemptContext) -> int | None:
    """The smaller of an agent's own cap and the policy's per-call cap (`None`: the policy's).

    The policy sized the attempt's reservation from its cap; an agent may ask
    for less, never for more.
    """
    return None if requested is None else min(requested, ctx.max_tokens)


def extract_fenced(text: str, languages: frozenset[str]) -> str | None:
    """The body of the first Markdown code fence tagged with one of `languages`.

    Falls back to the first fence of any (or no) tag; `None` when the text has no fence.
    """
    blocks = [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]
    if not blocks:
        return None
    for lang, body in blocks:
        if lang in languages:
            return body
    return blocks[0][1]


def tail(text: str, limit: int = 2000) -> str:
    """The last `limit` characters of `text`, marked when cut."""
    text = text.rstrip()
    return text if len(text) <= limit else "[...]\n" + text[-limit:]


def is_async_callable(fn: object) -> bool:
    """Whether calling `fn` returns a coroutine (functions, partials, objects with async `__call__`)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - we need the bound method itself
    return call is not None and inspect.iscoroutinefunction(call)


def callable_name(fn: object) -> str:
    """A readable name for a function or callable object."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return str(name) if name else type(fn).__name__
