"""Fixtures of the promise suite: the billing provider, catalogs that reach it, and the invariants."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from agents import LLMAgent
from orchestrator import Catalog, ModelSpec, Workflow
from tests.promises.billing_provider import BillingProvider, billing_provider
from tests.storage.conftest import free_port


@pytest.fixture(scope="session")
def provider_server() -> Iterator[BillingProvider]:
    """One billing provider process for the session."""
    with billing_provider(free_port()) as server:
        yield server


@pytest.fixture
def provider(provider_server: BillingProvider, monkeypatch: pytest.MonkeyPatch) -> BillingProvider:
    """The billing provider, reset to its default behaviour with an empty log.

    litellm wants an OpenAI key for `openai/...` models; the stand-in accepts any.
    """
    monkeypatch.setenv("OPENAI_API_KEY", "sk-billing-provider")
    provider_server.configure()
    return provider_server


def provider_model(
    provider: BillingProvider,
    *,
    name: str = "gpt",
    input_per_mtok: str = "0.15",
    output_per_mtok: str = "0.60",
    model: str = "openai/gpt-4o-mini",
) -> ModelSpec:
    """A catalog entry for an OpenAI model, reached at the billing provider instead of OpenAI."""
    return ModelSpec(
        name=name,
        litellm_model=model,
        api_base=provider.url,
        input_price_per_mtok=Decimal(input_per_mtok),
        output_price_per_mtok=Decimal(output_per_mtok),
    )


async def wait_for_requests(provider: BillingProvider, n: int, *, timeout_s: float = 30) -> None:
    """Wait until the provider has seen `n` requests (it is another process: poll its log)."""
    give_up = time.monotonic() + timeout_s
    while len(await asyncio.to_thread(provider.log)) < n:
        if time.monotonic() > give_up:
            raise AssertionError(f"the provider did not see {n} request(s) within {timeout_s}s")
        await asyncio.sleep(0.05)


def chain_workflow(n: int, model: str = "gpt") -> Workflow:
    """`n` subtasks in a line, each an `LLMAgent` call on `model` that reads its parent."""
    wf = Workflow("chain", inputs=["topic"])
    previous = None
    for i in range(n):
        prompt = f"Step {i} of {{topic}}" if previous is None else f"Step {i} after {{{previous}}}"
        wf.subtask(f"s{i}", LLMAgent(prompt=prompt), models=[model], after=[previous] if previous else [])
        previous = f"s{i}"
    return wf


@pytest.fixture
def provider_catalog(provider: BillingProvider) -> Catalog:
    """A cheap and a strong OpenAI model, both served by the billing provider."""
    return Catalog.of(
        provider_model(provider, name="cheap"),
        provider_model(
            provider, name="strong", input_per_mtok="2.50", output_per_mtok="10.00", model="openai/gpt-4o"
        ),
    )


# The real servers of the storage tests (PostgreSQL, Redis), for the fault tests here.
from tests.storage.conftest import (  # noqa: E402
    postgres_server,
    postgres_url,
    redis_server,
    redis_url,
    sqlite_url,
)

__all__ = [
    "chain_workflow",
    "postgres_server",
    "postgres_url",
    "provider_model",
    "redis_server",
    "redis_url",
    "sqlite_url",
    "wait_for_requests",
]
