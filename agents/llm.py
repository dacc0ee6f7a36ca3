"""`LLMAgent`: one templated model call per attempt.

```python
plan = wf.subtask("plan", LLMAgent(system=PLANNER, prompt="Plan a fix for: {issue}"),
                  models=["small", "large"])
```

The prompt and system templates use `str.format` syntax and read run inputs
and the text of parent subtasks by name. The call goes through
`AttemptContext.chat`, so it runs on the model the policy chose, is reserved
in the ledger and appears in the calling tree under the attempt's span.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents._common import cap_max_tokens
from agents._template import parse_template, render_template
from orchestrator.agent import AttemptContext, AttemptOutput
from orchestrator.errors import WorkflowError
from orchestrator.model_client import ChatMessage

__all__ = ["LLMAgent"]


class LLMAgent:
    """Render a prompt, make one model call, return the reply text."""

    needs_model = True
    """Its subtask must list the models it may run on."""

    def __init__(
        self,
        prompt: str,
        system: str | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
    ) -> None:
        """Build the agent; templates are checked now.

        Args:
            prompt: user message template, e.g. ``"Plan a fix for: {issue}"``.
            system: optional system message template.
            max_tokens: cap on output tokens for the call; the policy's per-call cap
                still applies, so the smaller of the two is used. `None` means the
                policy's cap.
            temperature: sampling temperature; `None` leaves the provider default.

        Raises:
            WorkflowError: a template is malformed, or a number is out of range.
        """
        variables = parse_template(prompt, where="`LLMAgent` prompt")
        if system is not None:
            variables |= parse_template(system, where="`LLMAgent` system")
        if max_tokens is not None and max_tokens < 1:
            raise WorkflowError(f"`LLMAgent`: max_tokens must be >= 1, got {max_tokens}")
        if temperature is not None and temperature < 0:
            raise WorkflowError(f"`LLMAgent`: temperature must be >= 0, got {temperature}")
        self.prompt = prompt
        self.system = system
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._variables = variables

    def template_variables(self) -> frozenset[str]:
        """Names the prompt and system templates read."""
        return self._variables

    def preview_messages(self, values: Mapping[str, Any], *, subtask: str) -> list[ChatMessage]:
        """The messages of the call, rendered from `values` (see `orchestrator.agent.PromptPreview`).

        Raises:
            WorkflowError: a template variable has no value, or a value does not fit its format.
        """
        messages: list[ChatMessage] = []
        if self.system is not None:
            system = render_template(self.system, values, where="`LLMAgent` system", subtask=subtask)
            messages.append({"role": "system", "content": system})
        prompt = render_template(self.prompt, values, where="`LLMAgent` prompt", subtask=subtask)
        messages.append({"role": "user", "content": prompt})
        return messages

    async def attempt(self, ctx: AttemptContext) -> AttemptOutput:
        """Render the templates and make one call through `ctx.chat`.

        Raises:
            WorkflowError: a template variable has no value in this run.
        """
        messages = self.preview_messages(ctx.template_values(), subtask=ctx.subtask)
        response = await ctx.chat(
            messages,
            max_tokens=cap_max_tokens(self.max_tokens, ctx),
            parent_call_id=ctx.span_id,
            temperature=self.temperature,
        )
        return AttemptOutput(
            value=response.text,
            text=response.text,
            simulated_success=response.simulated_success,
        )

    def __repr__(self) -> str:
        head = self.prompt if len(self.prompt) <= 40 else self.prompt[:37] + "..."
        return f"LLMAgent(prompt={head!r})"
