"""The one rendering of a request's messages as text: what is recorded and what is embedded.

The recorder stores it as a call's `prompt` (when content recording is on), and the
executor hands it to the estimator among a request's features (`RequestFeatures.prompt_text`)
once a ready subtask's prompt is known. Both use this function, so an embedding of a
recorded prompt (training) equals the embedding of the same request at decision time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["prompt_text"]


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Each message as `[role]` then its content, separated by blank lines."""
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in messages)
