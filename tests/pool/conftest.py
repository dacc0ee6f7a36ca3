"""Fixtures for the vLLM pool tests: pool specs, prompts, and real vLLM replicas.

The `vllm_replicas` session fixture starts two real vLLM CPU replicas of the tiny
model (`scripts/vllm_replicas.py`). When the vLLM venv is missing it skips the
`vllm`-marked tests, unless `BUDGETFLOW_REQUIRE_VLLM` is set, in which case it fails.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from orchestrator.catalog import ModelSpec, PoolSpec
from orchestrator.model_client import ChatMessage

_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"

MakePrompt = Callable[..., tuple[ChatMessage, ...]]
"""`make_prompt(system_seed, user, system_words=400)`: see `agent_prompt`."""

MAX_BATCHED_TOKENS = 2048
"""`--max-num-batched-tokens` of the test replicas (vLLM CPU's own default, made explicit)."""


@pytest.fixture
def make_pool() -> Callable[..., PoolSpec]:
    """Factory of pool specs with fake replica URLs (for tests that send nothing)."""

    def make(
        replicas: tuple[str, ...] = ("http://replica-a.test", "http://replica-b.test"),
        *,
        kv_capacity_tokens: int | None = 16 * 1024,
        max_in_flight_per_replica: int | None = None,
    ) -> PoolSpec:
        return PoolSpec(
            name="local",
            served_model="tiny-llama",
            replicas=replicas,
            kv_capacity_tokens=kv_capacity_tokens,
            block_size_tokens=16,
            max_in_flight_per_replica=max_in_flight_per_replica,
        )

    return make


def _agent_prompt(system_seed: int, user: str, *, system_words: int = 400) -> tuple[ChatMessage, ...]:
    words = [f"w{(system_seed * 7919 + i * 104729) % 10007}" for i in range(system_words)]
    return (
        {"role": "system", "content": f"agent {system_seed}: " + " ".join(words)},
        {"role": "user", "content": user},
    )


@pytest.fixture
def make_prompt() -> MakePrompt:
    """Messages with a long system prompt fixed by `system_seed` and a short user part."""
    return _agent_prompt


# -- real vLLM -------------------------------------------------------------------------


def _replicas_module() -> Any:
    # scripts/ is not a package; its replica manager is shared with the benchmark and CLI.
    if str(_SCRIPTS) not in sys.path:
        sys.path.insert(0, str(_SCRIPTS))
    return importlib.import_module("vllm_replicas")


@pytest.fixture(scope="session")
def vllm_replicas() -> Iterator[Any]:
    """Two real vLLM CPU replicas (a `VLLMReplicas`), started once per test session."""
    module = _replicas_module()
    if module.vllm_python() is None:
        reason = (
            f"vLLM venv `{module.default_venv()}` is missing; run `scripts/setup_vllm.sh`"
            " (or set BUDGETFLOW_VLLM_VENV)"
        )
        if os.environ.get("BUDGETFLOW_REQUIRE_VLLM"):
            pytest.fail(f"BUDGETFLOW_REQUIRE_VLLM is set but {reason}")
        pytest.skip(reason)
    # A small fixed KV cache (256 blocks of 32 tokens = 8192 tokens per replica); block
    # size 32 is the smallest the CPU attention backend takes.
    # `decode_delay` lets a test slow a long answer down (see `budgetflow_decode_delay.py`).
    # Prompts longer than `MAX_BATCHED_TOKENS` are prefilled in chunks (the poison-request test).
    options = module.ReplicaOptions(
        kv_blocks=256,
        block_size=32,
        max_model_len=4096,
        max_num_batched_tokens=MAX_BATCHED_TOKENS,
        decode_delay=True,
    )
    replicas = module.VLLMReplicas(2, options=options)
    replicas.start()
    try:
        yield replicas
    finally:
        replicas.stop()


@pytest.fixture
def vllm_pool(vllm_replicas: Any) -> PoolSpec:
    """A pool spec naming the real replicas."""
    return PoolSpec(
        name="tiny",
        served_model=vllm_replicas.options.served_model,
        replicas=tuple(vllm_replicas.urls),
        block_size_tokens=32,
    )


@pytest.fixture
def vllm_model() -> ModelSpec:
    """The catalog entry of the tiny pooled model (prices are made up but explicit)."""
    return ModelSpec(
        name="tiny",
        litellm_model="hosted_vllm/tiny-llama",
        input_price_per_mtok=Decimal("0.10"),
        cached_input_price_per_mtok=Decimal("0.01"),
        output_price_per_mtok=Decimal("0.40"),
        context_window=4096,
        pool="tiny",
    )
