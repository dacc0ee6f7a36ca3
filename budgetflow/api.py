"""Running workflows, for users: `run`, `arun`, `astream` and `simulate`, with defaults.

The same as the core (`orchestrator.run.arun`), plus what a script wants: a policy by
name, and a model client built for the catalog when none is given (litellm, with the
simulated backend for simulated models; see `budgetflow.services`).

```python
result = run(wf, catalog=catalog, budget_usd=0.40, deadline_s=90, policy="mcpp")

async for event in astream(wf, catalog=catalog, budget_usd=0.40, deadline_s=90):
    print(type(event).__name__, event.ledger.spent_usd)
```
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from budgetflow.services import default_client, resolve_policy
from orchestrator.belief_updates import InRunUpdate
from orchestrator.catalog import Catalog
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate
from orchestrator.estimator import Estimator
from orchestrator.events import Event, Observer, RunFinished
from orchestrator.gateway import RetryPolicy
from orchestrator.interceptors import Interceptor
from orchestrator.ledger import Ledger
from orchestrator.model_client import ModelClient
from orchestrator.plan import Policy
from orchestrator.records import Recorder
from orchestrator.run import RunResult
from orchestrator.run import arun as _core_arun
from orchestrator.simulation import simulate as _core_simulate
from orchestrator.workflow import Workflow

__all__ = ["DEFAULT_POLICY", "arun", "astream", "run", "simulate"]

DEFAULT_POLICY = "mcpp"
"""The policy used when none is named."""


async def arun(
    workflow: Workflow,
    *,
    catalog: Catalog,
    budget_usd: Decimal | float | str,
    deadline_s: float | None = None,
    inputs: Mapping[str, Any] | None = None,
    policy: str | Policy = DEFAULT_POLICY,
    seed: int = 0,
    client: ModelClient | None = None,
    recorder: Recorder | None = None,
    ledger: Ledger | None = None,
    observers: Sequence[Observer] = (),
    interceptors: Sequence[Interceptor] = (),
    learned_estimates: Mapping[tuple[str, str], AttemptEstimate] | None = None,
    estimator: Estimator | None = None,
    update_in_run: bool | InRunUpdate = True,
    retry: RetryPolicy | None = None,
    record_content: bool = True,
    sim_time_scale: float = 1.0,
    run_id: str | None = None,
    cancel: asyncio.Event | None = None,
) -> RunResult:
    """Run `workflow` once under a hard budget and a deadline.

    Args:
        workflow: the DAG to run (validated against `catalog` and `inputs`).
        catalog: the models it may use.
        budget_usd: hard budget; spend never exceeds it.
        deadline_s: seconds from the start; in-flight calls are cancelled when it passes.
        inputs: values for the prompt templates.
        policy: a policy object or a registered name (`mcpp`, `always_cheapest`, ...).
        seed: seeds the policy, retries' jitter and the simulated backend.
        client: model client; default: litellm, with the simulated backend for simulated models.
        recorder: where records go durably (e.g. `storage.SqlRecorder`); the result has them too.
        ledger: budget ledger; default: an in-process ledger for `budget_usd`.
        observers: watch the run's events, off its critical path (`orchestrator.events`).
        interceptors: hooks around the run, each decision, attempt and model call, in the
            task doing the work (`orchestrator.interceptors`); e.g. `budgetflow.tracing.TracingInterceptor()`.
        learned_estimates: estimates learned from recorded runs, preferred over priors.
        estimator: asked first for each (subtask, model), with the request's features
            (`orchestrator.estimator`); its `None` falls through to `learned_estimates`, priors.
        update_in_run: update the beliefs after every finished attempt of a subtask
            (`orchestrator.belief_updates`); `False`: fixed beliefs for the whole run.
        retry: how provider errors are retried.
        record_content: store prompt and response text, outputs and inputs.
        sim_time_scale: speed of the simulated backend on a real clock (0.1 = ten times faster).
        run_id: the run's id (default: random).
        cancel: set it to end the run early, recorded `cancelled`.
    """
    own = client is None
    used = (
        default_client(workflow, catalog, seed=seed, sim_time_scale=sim_time_scale)
        if client is None
        else client
    )
    try:
        return await _core_arun(
            workflow,
            catalog=catalog,
            client=used,
            policy=resolve_policy(policy, seed),
            budget_usd=budget_usd,
            deadline_s=deadline_s,
            inputs=inputs,
            seed=seed,
            recorder=recorder,
            ledger=ledger,
            observers=observers,
            interceptors=interceptors,
            learned_estimates=learned_estimates,
            estimator=estimator,
            update_in_run=update_in_run,
            retry=retry,
            record_content=record_content,
            run_id=run_id,
            cancel=cancel,
        )
    finally:
        if own:
            await used.aclose()


def run(workflow: Workflow, **kwargs: Any) -> RunResult:
    """Synchronous `arun`, for scripts; not for use inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(workflow, **kwargs))
    raise ConfigError("`run()` was called inside a running event loop; use `await arun(...)` instead")


def simulate(
    workflow: Workflow,
    *,
    catalog: Catalog,
    policy: str | Policy,
    budget_usd: Decimal | float | str,
    deadline_s: float | None,
    seed: int = 0,
    inputs: Mapping[str, Any] | None = None,
    error_rate: float = 0.0,
    difficulty: float = 0.0,
    estimator: Estimator | None = None,
    update_in_run: bool | InRunUpdate = True,
    record_content: bool = False,
    observers: Sequence[Observer] = (),
) -> RunResult:
    """Run `workflow` once on virtual time with the seeded simulated backend (instant).

    `difficulty` (σ of a per-input latent difficulty: one input's attempts fail together),
    `estimator` and `update_in_run` as in `orchestrator.simulation.simulate` and `arun`.

    Common random numbers: the n-th call of a (subtask, model) sees the same draw for the
    same `seed`, whatever the policy, so policies compared on one seed face the same luck.
    """
    return _core_simulate(
        workflow,
        catalog=catalog,
        policy=resolve_policy(policy, seed),
        budget_usd=budget_usd,
        deadline_s=deadline_s,
        seed=seed,
        inputs=inputs,
        error_rate=error_rate,
        difficulty=difficulty,
        estimator=estimator,
        update_in_run=update_in_run,
        record_content=record_content,
        observers=observers,
    )


class _Stream:
    """An observer that hands every event to one consumer, in order, without dropping any."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def observe(self, event: Event) -> None:
        await self.queue.put(event)


async def astream(workflow: Workflow, **kwargs: Any) -> AsyncGenerator[Event, None]:
    """Run `workflow` (same arguments as `arun`) and yield its events as they happen.

    The last event is `RunFinished`. Leaving the loop early cancels the run (it is
    recorded `cancelled`, every hold settled). Events wait for the consumer in memory:
    a consumer far slower than the run holds them all until it catches up.
    """
    stream = _Stream()
    observers = [*kwargs.pop("observers", ()), stream]
    task = asyncio.ensure_future(arun(workflow, observers=observers, **kwargs))
    try:
        while True:
            next_event = asyncio.ensure_future(stream.queue.get())
            done, _ = await asyncio.wait({next_event, task}, return_when=asyncio.FIRST_COMPLETED)
            if next_event in done:
                event = next_event.result()
                yield event
                if isinstance(event, RunFinished):
                    break
                continue
            next_event.cancel()
            while not stream.queue.empty():  # the run ended: what it emitted last is queued
                yield stream.queue.get_nowait()
            break
        await task  # the run's own failure, if any
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
