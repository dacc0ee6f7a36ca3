"""Lazy, offline-safe access to litellm (its import is slow and may fetch a cost map).

litellm imports most of itself lazily, on first use: the first streamed call of a
process imports the OpenAI SDK's resources, anyio's backend and a few hundred
litellm modules, which blocks the event loop for one to three seconds. During a
run that delay lands on the deadline. `warm_call_path` does that work ahead, on
a worker thread, so that the first call of a run costs what later calls cost.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterable
from types import ModuleType

__all__ = ["litellm_module", "warm_call_path"]

# What litellm's first `acompletion(..., stream=True)` imports beyond `import litellm`
# (measured with litellm 1.106: each is skipped if a version does not have it).
_CALL_PATH_MODULES = (
    "anyio._backends._asyncio",
    "openai.resources",
    "litellm.llms.openai.openai",
    "litellm.llms.openai.chat.gpt_audio_transformation",
    "litellm.llms.openai_like.dynamic_config",
    "litellm.llms.custom_httpx.http_handler",
    "litellm.litellm_core_utils.streaming_handler",
    "litellm.litellm_core_utils.default_encoding",
    "litellm.types.litellm_core_utils.streaming_chunk_builder_utils",
    "litellm._service_logger",
    "litellm.integrations.prometheus_services",
    "litellm.proxy._types",
    "litellm.proxy.openai_files_endpoints.common_utils",
    "litellm.llms.vertex_ai.vertex_ai_partner_models.anthropic.transformation",
)


@functools.cache
def litellm_module() -> ModuleType:
    """Import litellm once, with its bundled cost map and without telemetry."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm


def warm_call_path(model_strings: Iterable[str]) -> None:
    """Import what a first call to these litellm models imports (blocking: call it on a thread)."""
    litellm = litellm_module()
    for name in _CALL_PATH_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    from litellm.utils import ProviderConfigManager

    for model in model_strings:
        with contextlib.suppress(Exception):  # best effort: an unknown provider fails on its call
            name, provider, _, _ = litellm.get_llm_provider(model)
            config = litellm.LlmProviders(provider)
            ProviderConfigManager.get_provider_chat_config(model=name, provider=config)
