"""Built-in checks: is one attempt's output good enough?

```python
from agents import checks

wf.subtask("patch", agent, models=["small"], check=checks.python_tests("tests/"))
wf.subtask("meta", agent, models=["small"], check=checks.all_of(
    checks.json_schema({"type": "object", "required": ["title"]}),
    checks.llm_judge("Is this title specific? {output}"),
))
```

Each factory returns a `NamedCheck`: an async callable
`(output, ctx) -> CheckResult` with a readable name. A check that raises
becomes a `CheckError` naming it (the executor records an error attempt,
not a failed one). Outputs of the simulated backend carry a drawn verdict,
which the executor uses instead of running the check; checks never look at it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from jsonschema import SchemaError
from jsonschema.validators import validator_for

from agents._check_base import NamedCheck
from agents._common import callable_name, extract_fenced
from agents._python_tests import PythonTestsCheck
from agents._template import parse_template, render_template
from orchestrator.agent import AttemptContext, AttemptOutput, Check, CheckResult
from orchestrator.errors import WorkflowError
from orchestrator.model_client import ChatMessage

__all__ = [
    "NamedCheck",
    "all_of",
    "json_schema",
    "llm_judge",
    "python",
    "python_tests",
    "regex",
]

PredicateResult = bool | CheckResult
"""What a `python` check's function returns."""

_JUDGE_SYSTEM = (
    "You are a strict reviewer. Answer with `yes` or `no` first, then at most one short sentence of reason."
)
_JUDGE_PASS = ("yes", "pass")


class _Python(NamedCheck):
    def __init__(self, fn: Callable[[Any], PredicateResult | Awaitable[PredicateResult]]) -> None:
        if not callable(fn):
            raise WorkflowError(
                f"`checks.python` needs a function `(output_value) -> bool`, got {type(fn).__name__}"
            )
        super().__init__(f"python({callable_name(fn)})")
        self.fn = fn

    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        result = self.fn(output.value)
        if inspect.isawaitable(result):
            result = await result
        if isinstance(result, CheckResult):
            return result
        if isinstance(result, bool):
            return CheckResult(passed=result, detail=f"`{self.name}` returned {result}")
        raise TypeError(f"returned {type(result).__name__}; return a bool or a `CheckResult`")


class _Regex(NamedCheck):
    def __init__(self, pattern: str, flags: int) -> None:
        try:
            self.pattern = re.compile(pattern, flags)
        except re.error as exc:
            raise WorkflowError(
                f"`checks.regex`: the pattern {pattern!r} is not a valid regular expression"
                f" ({exc}); fix it or escape it with `re.escape`"
            ) from None
        super().__init__(f"regex({pattern!r})")

    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        match = self.pattern.search(output.text)
        if match is None:
            return CheckResult(
                passed=False,
                detail=f"no match for {self.pattern.pattern!r} in the output ({len(output.text)} characters)",
            )
        found = match.group(0)
        shown = found if len(found) <= 80 else found[:77] + "..."
        return CheckResult(passed=True, detail=f"matched {shown!r} at {match.start()}")


class _JsonSchema(NamedCheck):
    def __init__(self, schema: Mapping[str, object]) -> None:
        cls = validator_for(schema)
        try:
            cls.check_schema(dict(schema))
        except SchemaError as exc:
            raise WorkflowError(
                f"`checks.json_schema`: the schema is invalid at"
                f" `{exc.json_path}`: {exc.message}; fix the schema"
            ) from None
        self.validator = cls(dict(schema))
        title = schema.get("title")
        super().__init__(f"json_schema({title!r})" if isinstance(title, str) else "json_schema(...)")

    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        try:
            data = _parse_json(output.text)
        except ValueError as exc:
            return CheckResult(passed=False, detail=str(exc))
        errors = sorted(self.validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        if not errors:
            return CheckResult(passed=True, detail="the JSON matches the schema")
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return CheckResult(passed=False, detail=f"`{first.json_path}`: {first.message}{more}")


class _LLMJudge(NamedCheck):
    def __init__(self, prompt_template: str, model: str | None, max_tokens: int) -> None:
        where = "`checks.llm_judge` prompt"
        variables = parse_template(prompt_template, where=where)
        if "output" not in variables:
            raise WorkflowError(
                f"{where} does not use `{{output}}`, so the judge would never see the attempt's"
                " output; add `{output}` where the output should go"
            )
        if max_tokens < 1:
            raise WorkflowError(f"`checks.llm_judge`: max_tokens must be >= 1, got {max_tokens}")
        head = prompt_template if len(prompt_template) <= 40 else prompt_template[:37] + "..."
        super().__init__(f"llm_judge({head!r})")
        self.prompt_template = prompt_template
        self.model = model
        self.max_tokens = max_tokens

    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        values = {**ctx.template_values(), "output": output.text}
        prompt = render_template(
            self.prompt_template,
            values,
            where="`checks.llm_judge` prompt",
            subtask=ctx.subtask,
        )
        messages: list[ChatMessage] = [
            {"role": "system", "content": _JUDGE_SYSTEM},
            {"role": "user", "content": prompt},
        ]
        response = await ctx.chat(
            messages, max_tokens=self.max_tokens, model=self.model, parent_call_id=ctx.span_id
        )
        verdict = response.text.strip().lstrip("*_`'\"#> ").lower()
        reply = response.text.strip()
        shown = reply if len(reply) <= 200 else reply[:197] + "..."
        return CheckResult(passed=verdict.startswith(_JUDGE_PASS), detail=f"judge: {shown!r}")


class _AllOf(NamedCheck):
    def __init__(self, checks: tuple[Check, ...]) -> None:
        if not checks:
            raise WorkflowError("`checks.all_of()` needs at least one check")
        for check in checks:
            if not callable(check):
                raise WorkflowError(
                    f"`checks.all_of` got {type(check).__name__} {check!r}, which is not a check;"
                    " pass checks such as `checks.regex(...)`"
                )
        super().__init__(f"all_of({', '.join(_check_name(c) for c in checks)})")
        self.checks = checks

    async def judge(self, output: AttemptOutput, ctx: AttemptContext) -> CheckResult:
        details: list[str] = []
        for check in self.checks:
            result = await check(output, ctx)
            if not result.passed:
                return CheckResult(passed=False, detail=f"{_check_name(check)}: {result.detail}")
            details.append(f"{_check_name(check)}: {result.detail}")
        return CheckResult(passed=True, detail="; ".join(details))


def python(fn: Callable[[Any], PredicateResult | Awaitable[PredicateResult]]) -> NamedCheck:
    """Judge with a Python function of the output value.

    Args:
        fn: sync or async `(output_value) -> bool | CheckResult`; `output_value` is
            `AttemptOutput.value` (the reply text for LLM agents).
    """
    return _Python(fn)


def regex(pattern: str, flags: int = 0) -> NamedCheck:
    """Pass iff `pattern` is found anywhere in the output text (`re.search`).

    Raises:
        WorkflowError: the pattern does not compile.
    """
    return _Regex(pattern, flags)


def json_schema(schema: Mapping[str, object]) -> NamedCheck:
    """Pass iff the output text is JSON valid under `schema`.

    The text may be bare JSON or hold it in a Markdown code fence
    (```` ```json ... ``` ````). A failure's detail names the failing path, e.g.
    ``$.items[0].price``.

    Raises:
        WorkflowError: the schema itself is invalid.
    """
    return _JsonSchema(schema)


def python_tests(
    tests_path: str | os.PathLike[str],
    *,
    timeout_s: float = 60,
    python: str = sys.executable,
    code_file: str = "solution.py",
) -> NamedCheck:
    """Pass iff pytest passes against the output's code.

    The output text (or its first Python code fence) is written to `code_file`
    next to a copy of the tests in a fresh temporary directory, and
    ``python -m pytest`` runs there in a subprocess. On timeout the whole
    process group is killed and the check fails; the detail is the tail of
    pytest's output.

    Args:
        tests_path: a test file or a directory of tests (resolved now, against
            the current directory).
        timeout_s: give up after this many seconds.
        python: interpreter that runs pytest (it must have pytest installed).
        code_file: where the tests import the code from, relative to the test directory.

    Raises:
        WorkflowError: the tests path does not exist, or an argument is invalid.
    """
    return PythonTestsCheck(tests_path, timeout_s=timeout_s, python=python, code_file=code_file)


def llm_judge(prompt_template: str, *, model: str | None = None, max_tokens: int = 16) -> NamedCheck:
    """Ask a model; pass iff its reply starts with "yes" or "pass" (any case).

    The judge's call goes through `ctx.chat` like every call: reserved in the
    ledger and recorded under the attempt's span.

    Args:
        prompt_template: `str.format` template; ``{output}`` is the output text,
            other names are run inputs and parent outputs, as in `LLMAgent`.
        model: catalog model to judge with; `None` uses the attempt's model.
        max_tokens: cap on the judge's reply.

    Raises:
        WorkflowError: the template is malformed or does not use ``{output}``.
    """
    return _LLMJudge(prompt_template, model, max_tokens)


def all_of(*checks: Check) -> NamedCheck:
    """Pass iff every check passes; they run in order and stop at the first failure."""
    return _AllOf(checks)


def _check_name(check: Check) -> str:
    return check.name if isinstance(check, NamedCheck) else callable_name(check)


def _parse_json(text: str) -> Any:
    """Parse bare JSON or the body of a JSON code fence; `ValueError` says why not."""
    stripped = text.strip()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as bare_error:
        fenced = extract_fenced(text, frozenset({"json"}))
        if fenced is None:
            raise ValueError(f"the output is not JSON ({bare_error})") from None
        try:
            return json.loads(fenced)
        except json.JSONDecodeError as fenced_error:
            raise ValueError(f"the JSON in the output's code fence does not parse ({fenced_error})") from None
