"""`str.format`-style prompt templates: parsing at construction, rendering per attempt.

Templates name run inputs and parent subtasks by plain names (`{issue}`,
`{plan}`); `{{` and `}}` are literal braces. Positional fields (`{}`, `{0}`),
attribute and index access (`{plan.text}`, `{items[0]}`) and nested fields in a
format spec are rejected when the agent is built, so a typo surfaces before
any money is spent.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from orchestrator.errors import WorkflowError, did_you_mean

__all__ = ["parse_template", "render_template"]

# Same shape as subtask names, so `{fix-bug}` can name a subtask called `fix-bug`.
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


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
    for _literal, field, spec, _conversion in parsed:
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
        if not _FIELD.match(field):
            raise WorkflowError(
                f"{where} has the field `{{{field}}}`, which is not a valid variable name; use"
                " letters, digits, `_` or `-`, starting with a letter or `_`"
            )
        if spec and ("{" in spec or "}" in spec):
            raise WorkflowError(
                f"{where} has a nested field in the format spec of `{{{field}:{spec}}}`; use a"
                " fixed format spec"
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
        WorkflowError: a variable has no value.
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
    return template.format_map(values)


def _preview(template: str, limit: int = 60) -> str:
    text = template if len(template) <= limit else template[: limit - 3] + "..."
    return repr(text)
