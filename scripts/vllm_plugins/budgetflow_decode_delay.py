"""A vLLM logits processor that slows decoding down for the requests that ask for it.

Loaded into the test replicas (`VLLMReplicas(..., options=ReplicaOptions(decode_delay=True))`
adds `--logits-processors budgetflow_decode_delay:DecodeDelay` and puts this folder on
the replica's `PYTHONPATH`). A request that sends `"vllm_xargs": {"decode_delay_ms": D}`
makes every engine step that has it in the batch sleep D ms, so the tiny test model
(about 1 ms per token on a CPU core) generates at a known, slow pace: a 3,500-token
answer takes tens of seconds, and a test can cancel the request or kill the replica
while it is certainly still generating, however far behind the client reads. Requests
without the argument are untouched (the processor does nothing when none is in the batch).

It runs inside the replica's engine process, with the vLLM venv's packages (torch,
vllm); the project's own environment never imports it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor, MoveDirectionality

if TYPE_CHECKING:
    import torch

ARG = "decode_delay_ms"
"""The `vllm_xargs` key: milliseconds to sleep per engine step while the request runs."""

MAX_DELAY_MS = 1000.0


def _delay_s(params: SamplingParams) -> float | None:
    extra: dict[str, Any] = params.extra_args or {}
    value = extra.get(ARG)
    if value is None:
        return None
    return float(value) / 1000.0


class DecodeDelay(LogitsProcessor):
    """Sleeps `decode_delay_ms` per step while a request that asked for it is in the batch."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        extra: dict[str, Any] = sampling_params.extra_args or {}
        value = extra.get(ARG)
        if value is None:
            return
        if not isinstance(value, int | float) or not 0 <= float(value) <= MAX_DELAY_MS:
            raise ValueError(
                f"`vllm_xargs.{ARG}` must be a number of milliseconds in [0, {MAX_DELAY_MS:.0f}]"
            )

    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self._delays: dict[int, float] = {}

    def is_argmax_invariant(self) -> bool:
        # False so that vLLM applies it on greedy requests too (it never changes the logits).
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None:
            return
        for index in batch_update.removed:
            self._delays.pop(index, None)
        for index, params, _prompt, _output in batch_update.added:
            delay = _delay_s(params)
            if delay is None:
                self._delays.pop(index, None)
            else:
                self._delays[index] = delay
        for a, b, direction in batch_update.moved:
            moved_a = self._delays.pop(a, None)
            moved_b = self._delays.pop(b, None)
            if moved_a is not None:
                self._delays[b] = moved_a
            if direction == MoveDirectionality.SWAP and moved_b is not None:
                self._delays[a] = moved_b

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if self._delays:
            time.sleep(max(self._delays.values()))
        return logits
