"""Pinning a benchmark to one core, so that its timings compare side by side."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["one_core"]


@contextlib.contextmanager
def one_core() -> Iterator[int | None]:
    """Run the block on one core (the last this process may use); yield it (None where the
    platform cannot pin) and restore the previous set afterwards."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    previous = os.sched_getaffinity(0)
    core = max(previous)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, previous)
