"""Shared fixtures: a simulated catalog and workflow factories."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from agents import LLMAgent
from orchestrator import AttemptEstimate, Catalog, LogNormal, ModelSpec, SubtaskRef, Workflow
from tests.servers import own_redis  # noqa: F401 - a fixture: redis-servers a test may crash


@pytest.fixture
def sim_catalog() -> Catalog:
    """Two simulated models: a cheap unreliable one and an expensive reliable one."""
    return simulated_catalog()


def simulated_catalog() -> Catalog:
    """`small` (cheap) and `large` (strong) on the simulated backend, at gpt-4o-mini-like and
    gpt-4o-like prices."""
    return Catalog.of(
        ModelSpec(
            name="small",
            litellm_model="budgetflow-sim/small",
            input_price_per_mtok="0.10",
            output_price_per_mtok="0.40",
            tier="cheap",
        ),
        ModelSpec(
            name="large",
            litellm_model="budgetflow-sim/large",
            input_price_per_mtok="2.50",
            output_price_per_mtok="10.00",
            tier="strong",
        ),
    )


def estimate(p: float, tokens: float = 300, latency: float = 3.0, *, spread: float = 0.3) -> AttemptEstimate:
    """A parametric estimate with relative spread `spread`."""
    return AttemptEstimate(
        success_prob=p,
        output_tokens=LogNormal(mean=tokens, std=tokens * spread),
        latency_s=LogNormal(mean=latency, std=latency * spread),
        input_tokens=200,
    )


def step(
    wf: Workflow,
    name: str,
    est: AttemptEstimate,
    *,
    prompt: str = "x",
    model: str = "small",
    after: Sequence[SubtaskRef[Any]] = (),
    max_attempts: int | None = None,
) -> SubtaskRef[Any]:
    """Add an `LLMAgent` subtask that runs on one simulated model with estimate `est`."""
    return wf.subtask(
        name,
        LLMAgent(prompt=prompt),
        models=[model],
        after=after,
        estimates={model: est},
        max_attempts=max_attempts,
    )


WorkflowFactory = Callable[..., Workflow]


@pytest.fixture
def diamond() -> WorkflowFactory:
    """A factory for the diamond a -> (b, c) -> d with given estimates per model."""

    def make(small: AttemptEstimate | None = None, large: AttemptEstimate | None = None) -> Workflow:
        est = {"small": small or estimate(0.6), "large": large or estimate(0.95, 500, 6.0)}
        wf = Workflow("diamond", inputs=["topic"])
        a = wf.subtask("a", LLMAgent(prompt="Plan {topic}"), models=["small", "large"], estimates=est)
        b = wf.subtask(
            "b", LLMAgent(prompt="Left of {a}"), models=["small", "large"], after=[a], estimates=est
        )
        c = wf.subtask(
            "c", LLMAgent(prompt="Right of {a}"), models=["small", "large"], after=[a], estimates=est
        )
        wf.subtask("d", LLMAgent(prompt="{b} + {c}"), models=["small", "large"], after=[b, c], estimates=est)
        return wf

    return make
