"""Counting a prompt's tokens before the call, so that its reservation covers what it is billed.

A call's hold is `input tokens x input price + max_tokens x output price`; if the
input count is low, a provider bills more than was held and the budget can be
overrun. So the count is either exact or a provable upper bound, never a guess:

- **OpenAI models** (`openai/...`, `azure/...`, or a bare OpenAI model name that
  tiktoken knows, also behind an `api_base` such as a proxy): exact. The model's
  tiktoken encoding (`o200k_base` for the GPT-4o, GPT-4.1, GPT-5 and o-series
  families, `cl100k_base` for GPT-4 and GPT-3.5) over
  OpenAI's chat framing: 3 tokens per message, the role and the content, and 3 tokens
  priming the reply.
- **Simulated models**: exact by construction. The simulated backend bills the count
  it makes here (`o200k_base` with the same framing), so simulated cost predicts real
  cost on real-sized prompts.
- **vLLM models** (pooled, or `hosted_vllm/...` with an `api_base`): exact, asked of
  the server's `/tokenize` endpoint by the model client (it applies the model's own
  chat template), with the bound below if the server cannot be asked.
- **Everything else** (Anthropic, Gemini, Mistral, ... whose tokenizers are not
  public): an upper bound. Every token of a byte-level BPE tokenizer, and of a
  SentencePiece tokenizer with byte fallback, covers at least one byte of text, so a
  text has at most as many tokens as UTF-8 bytes; each message adds its role and
  at most `FRAMING_TOKENS_PER_MESSAGE` tokens of chat template, and the prompt at most
  `FRAMING_TOKENS_PER_PROMPT`. The bound holds more money than the call will cost
  (about four times, on English text); the difference returns to the budget when the
  call is settled.

tiktoken's encodings are read from the copies litellm ships (no download).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.catalog import ModelSpec
from orchestrator.model_client import ChatMessage, PromptCount

__all__ = [
    "FRAMING_TOKENS_PER_MESSAGE",
    "FRAMING_TOKENS_PER_PROMPT",
    "SIMULATED_ENCODING",
    "byte_bound",
    "count_locally",
    "load_encoding",
    "load_encodings",
    "openai_encoding",
    "tiktoken_count",
]

FRAMING_TOKENS_PER_MESSAGE = 16
"""Upper bound on the chat-template tokens one message adds around its role and content."""
FRAMING_TOKENS_PER_PROMPT = 32
"""Upper bound on the template tokens a whole prompt adds (begin-of-text, reply priming)."""
SIMULATED_ENCODING = "o200k_base"
"""The tokenizer the simulated backend counts and bills prompts with."""

_OPENAI_PROVIDERS = frozenset({"openai", "azure", "text-completion-openai"})
_OPENAI_TOKENS_PER_MESSAGE = 3
_OPENAI_REPLY_PRIMING = 3


def openai_encoding(spec: ModelSpec) -> str | None:
    """The tiktoken encoding that bills `spec`'s prompts exactly, or `None` when none is known."""
    if spec.simulated:
        return SIMULATED_ENCODING
    if spec.pool is not None:
        return None
    provider, _, name = spec.litellm_model.rpartition("/")
    if provider and provider not in _OPENAI_PROVIDERS:
        return None
    from tiktoken.model import encoding_name_for_model

    try:
        return encoding_name_for_model(name)
    except KeyError:
        return None


def byte_bound(messages: Sequence[ChatMessage]) -> int:
    """An upper bound on the prompt tokens of `messages` for any byte-level tokenizer."""
    body = sum(len(m["content"].encode()) + len(m["role"].encode()) for m in messages)
    return body + FRAMING_TOKENS_PER_MESSAGE * len(messages) + FRAMING_TOKENS_PER_PROMPT


def tiktoken_count(encoding: str, messages: Sequence[ChatMessage]) -> int:
    """Prompt tokens of `messages` with OpenAI's chat framing and the tiktoken `encoding`."""
    enc = _encoding(encoding)
    total = _OPENAI_REPLY_PRIMING
    for message in messages:
        total += _OPENAI_TOKENS_PER_MESSAGE
        total += len(enc.encode(message["role"], disallowed_special=()))
        total += len(enc.encode(message["content"], disallowed_special=()))
    return total


def count_locally(spec: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
    """Count without a server: exact with tiktoken when the model's encoding is known, else a bound."""
    encoding = openai_encoding(spec)
    if encoding is not None:
        return PromptCount(tokens=tiktoken_count(encoding, messages), exact=True, method="tiktoken")
    return PromptCount(tokens=byte_bound(messages), exact=False, method="bytes")


def load_encodings(specs: Sequence[ModelSpec]) -> None:
    """Load the encodings `specs` need (reads files; call it off the event loop, before a run)."""
    for spec in specs:
        encoding = openai_encoding(spec)
        if encoding is not None:
            load_encoding(encoding)


def load_encoding(name: str) -> None:
    """Load one tiktoken encoding (reads a file; call it off the event loop)."""
    _encoding(name)


@functools.cache
def _encoding(name: str) -> Any:
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_bundled_encodings()))
    import tiktoken

    return tiktoken.get_encoding(name)


def _bundled_encodings() -> Path:
    spec = importlib.util.find_spec("litellm")
    locations = None if spec is None else spec.submodule_search_locations
    if not locations:  # pragma: no cover - litellm is a dependency
        raise ModuleNotFoundError("litellm is not installed; it ships the tiktoken encodings")
    return Path(next(iter(locations))) / "litellm_core_utils" / "tokenizers"
