"""`str.format`-style prompt templates: parsing at construction, rendering per attempt.

Templates name run inputs and parent subtasks by plain names (`{issue}`,
`{plan}`); `{{` and `}}` are literal braces. Positional fields (`{}`, `{0}`),
attribute and index access (`{plan.text}`, `{items[0]}`), conversions other than
`!r`, `!s` and `!a`, nested fields in a format spec and format specs that fit no
value (neither text nor a number) are rejected when the agent is built, so a
typo surfaces before any money is spent. A format spec that fits some values but
not the one given (`{topic:d}` with a text `topic`) raises `WorkflowError` when
the attempt renders it, naming the subtask, the template and the field.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from typing import Any

from orchestrator.errors import WorkflowError, did_you_mean

__all__ = ["parse_template", "render_template"]

# Same shape as subtask names, so `{fix-bug}` can name a subtask called `fix-bug`.
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_CONVERSIONS: dict[str, Callable[[object], str]] = {"r": repr, "s": str, "a": ascii}
# A format spec must fit at least one of these, else no value can ever satisfy it.
_PROBES: tuple[object, ...] = ("text", 1, 1.5)


def parse_template(template: str, *, where: str) -> frozenset[str]:
    """Return the variable names `template` reads.

    Args:
        template: the `str.format`-style template.
        where: what the template is, for messages (e.g. "`LLMAgent` prompt").

    Raises:
        WorkflowError: the template is malformed or uses a field form we do not support.
    """
    if not isinstance(template, str):
        raise WorkflowError(f"{where} must be a string, got {type(template).__name__}")
    names: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise WorkflowError(
            f"{where} is not a valid template ({exc}): {_preview(template)}; write a literal brace"
            " as `{{` or `}}`"
        ) from None
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field == "" or field.isdigit():
            raise WorkflowError(
                f"{where} has a positional field `{{{field}}}`; name the variable instead,"
                " e.g. `{issue}` (write a literal brace as `{{` or `}}`)"
            )
        if "." in field or "[" in field:
            base = re.split(r"[.\[]", field, maxsplit=1)[0]
            raise WorkflowError(
                f"{where} uses attribute or index access `{{{field}}}`; templates only take plain"
                f" names such as `{{{base}}}` (compute the value in a `FunctionAgent` instead)"
            )
        if not _FIELD.fullmatch(field):
            raise WorkflowError(
                f"{where} has the field `{{{field}}}`, which is not a valid variable name; use"
                " letters, digits, `_` or `-`, starting with a letter or `_`"
            )
        if conversion is not None and conversion not in _CONVERSIONS:
            raise WorkflowError(
                f"{where} has the conversion `!{conversion}` in `{{{field}!{conversion}}}`; use `!r`,"
                " `!s` or `!a`, or none"
            )
        if spec and ("{" in spec or "}" in spec):
            raise WorkflowError(
                f"{where} has a nested field in the format spec of `{{{field}:{spec}}}`; use a"
                " fixed format spec"
            )
        if spec and not any(_fits(probe, spec, conversion) for probe in _PROBES):
            raise WorkflowError(
                f"{where} has the format spec `{spec}` in `{{{field}:{spec}}}`, which fits no value"
                " (neither text nor a number); see Python's format specification, e.g. `{name:>10}`"
            )
        names.add(field)
    return frozenset(names)


def render_template(template: str, values: Mapping[str, Any], *, where: str, subtask: str) -> str:
    """Fill `template` from `values`.

    Args:
        template: a template that `parse_template` accepted.
        values: variable values (run inputs and parent texts).
        where: what the template is, for messages.
        subtask: the subtask being attempted, for messages.

    Raises:
        WorkflowError: a variable has no value, or its value does not fit the field's
            conversion or format spec (e.g. `{topic:d}` with a text value).
    """
    for name in sorted(parse_template(template, where=where)):
        if name not in values:
            known = sorted(values)
            listed = ", ".join(f"`{k}`" for k in known) or "none"
            raise WorkflowError(
                f"subtask `{subtask}`: {where} uses `{{{name}}}`, but no run input or parent output"
                f" is called `{name}`{did_you_mean(name, known)}; available: {listed}. Pass it as a"
                f" run input or add the subtask `{name}` to `after=`"
            )
    parts: list[str] = []
    for literal, field, spec, conversion in string.Formatter().parse(template):
        parts.append(literal)
        if field is None:
            continue
        value = values[field]
        try:
            parts.append(_format(value, spec or "", conversion))
        except Exception as exc:  # any type's __format__ may raise anything
            shown = f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
            raise WorkflowError(
                f"subtask `{subtask}`: {where} {_preview(template)} cannot render `{shown}`: the"
                f" value of `{field}` is {type(value).__name__} {_short(repr(value), 40)}, which"
                f" the format does not fit ({type(exc).__name__}: {exc}); change the format spec or"
                " drop it"
            ) from None
    return "".join(parts)


def _format(value: object, spec: str, conversion: str | None) -> str:
    if conversion is not None:
        value = _CONVERSIONS[conversion](value)
    return format(value, spec)


def _fits(value: object, spec: str, conversion: str | None) -> bool:
    try:
        _format(value, spec, conversion)
    except (ValueError, TypeError):
        return False
    return True


def _preview(template: str, limit: int = 60) -> str:
    return repr(_short(template, limit))


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
