"""Lazy, offline-safe access to litellm (its import is slow and may fetch a cost map)."""

from __future__ import annotations

import functools
import os
from types import ModuleType


@functools.cache
def litellm_module() -> ModuleType:
    """Import litellm once, with its bundled cost map and without telemetry."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    return litellm
