"""Running a workflow: `arun` (async) and `run` (a sync wrapper for scripts and notebooks)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from orchestrator._estimate_book import EstimateBook
from orchestrator.call_tree import CallTree
from orchestrator.catalog import Catalog
from orchestrator.errors import ConfigError
from orchestrator.estimates import AttemptEstimate
from orchestrator.executor import Executor
from orchestrator.fanout_recorder import FanoutRecorder
from orchestrator.gateway import RetryPolicy
from orchestrator.ledger import InProcessLedger, Ledger, usd_to_nano
from orchestrator.memory_recorder import MemoryRecorder
from orchestrator.model_client import ModelClient
from orchestrator.plan import Policy
from orchestrator.records import (
    AttemptRecord,
    CallRecord,
    DecisionRecord,
    Outcome,
    Recorder,
    RunRecord,
    SubtaskRecord,
)
from orchestrator.simulated import SimulatedBackend
from orchestrator.workflow import RunLimits, Workflow

__all__ = ["RunResult", "arun", "run"]

DEFAULT_POLICY = "mcpp"
"""Policy used when none is named."""


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What a run did."""

    run: RunRecord
    """The run record (id, outcome, reason, spend, makespan)."""
    outputs: Mapping[str, Any]
    """Output of every completed subtask."""
    tree: CallTree
    """The calling tree of every call made."""
    decisions: Sequence[DecisionRecord]
    """Every policy decision."""
    attempts: Sequence[AttemptRecord]
    """Every attempt, in start order."""
    subtasks: Sequence[SubtaskRecord]
    """Every subtask's final state, in the workflow's order."""
    calls: Sequence[CallRecord]
    """Every call and span."""

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self.run.run_id

    @property
    def outcome(self) -> Outcome:
        """completed | budget_exhausted | deadline_exceeded | failed | cancelled."""
        return self.run.outcome

    @property
    def spent_usd(self) -> Decimal:
        """Settled spend; never above the budget."""
        return self.run.spent_usd

    @property
    def makespan_s(self) -> float:
        """Time from start to end."""
        return self.run.makespan_s or 0.0


def resolve_policy(policy: str | Policy, seed: int) -> Policy:
    """A policy object from a name or an object."""
    if isinstance(policy, str):
        from policies.registry import make_policy

        return make_policy(policy, seed=seed)
    return policy


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
    learned_estimates: Mapping[tuple[str, str], AttemptEstimate] | None = None,
    retry: RetryPolicy | None = None,
    record_content: bool = True,
    sim_time_scale: float = 1.0,
    run_id: str | None = None,
    cancel: asyncio.Event | None = None,
) -> RunResult:
    """Run `workflow` once under a hard budget and a deadline.

    Args:
        workflow: the DAG to run (validated here against `catalog` and `inputs`).
        catalog: the models it may use.
        budget_usd: hard budget; spend never exceeds it.
        deadline_s: seconds from now; in-flight calls are cancelled when it passes.
        inputs: values for the prompt templates.
        policy: a policy object or a registered name (`mcpp`, `always_cheapest`, ...).
        seed: seeds the policy, retries' jitter and the simulated backend.
        client: model client; default: litellm, with the simulated backend for simulated models.
        recorder: where records go (e.g. `storage.SqlRecorder`); the result always has them too.
        ledger: budget ledger; default: an in-process ledger for `budget_usd`.
        learned_estimates: estimates learned from recorded runs, preferred over priors.
        retry: how provider errors are retried.
        record_content: store prompt and response text, and the run's inputs; `False` records
            each input as its size only (`{"redacted": true, "chars": N}`).
        sim_time_scale: speed of the simulated backend on a real clock (0.1 = ten times faster).
        run_id: the run's id (default: random).
        cancel: set it to end the run early: in-flight calls are cancelled and settled, the
            run is recorded `cancelled`, and `arun` returns its result (cancelling the task
            running `arun` does the same, then raises `CancelledError`).
    """
    inputs = dict(inputs or {})
    limits = RunLimits.checked(budget_usd, deadline_s)
    workflow.validate(catalog=catalog, inputs=inputs)
    if any(not catalog.get(m).simulated for s in workflow.subtasks.values() for m in s.models):
        catalog = catalog.resolve_prices()
    estimates = EstimateBook.build(workflow, catalog, learned_estimates)
    chosen = resolve_policy(policy, seed)
    own_client = client is None
    if client is None:
        from orchestrator.litellm_client import LiteLLMClient, PoolCaller

        # The simulated backend plays the world as the priors describe it; the planner may
        # believe learned estimates instead.
        truth = EstimateBook.build(workflow, catalog)
        used_pools = {catalog.get(m).pool for s in workflow.subtasks.values() for m in s.models} - {None}
        pool_callers: dict[str, PoolCaller] = {}
        if used_pools:
            from orchestrator.pool import PooledLiteLLMCaller

            pool_callers = {name: PooledLiteLLMCaller(catalog.pools[name]) for name in used_pools if name}
        client = LiteLLMClient(
            catalog,
            simulated=SimulatedBackend(truth.table, seed=seed, time_scale=sim_time_scale),
            pool_callers=pool_callers,
        )
    if ledger is None:
        ledger = InProcessLedger(usd_to_nano(limits.budget_usd))
    else:
        snap = await ledger.snapshot()
        if snap.budget_nano > usd_to_nano(limits.budget_usd):
            raise ConfigError(
                f"the ledger's budget (${snap.budget_nano / 1e9:.6f}) exceeds the run's budget"
                f" (${limits.budget_usd}); create the ledger with the run's budget"
            )
    memory = MemoryRecorder()
    sink: Recorder = memory if recorder is None else FanoutRecorder(recorder, memory)
    executor = Executor(
        workflow=workflow,
        catalog=catalog,
        client=client,
        policy=chosen,
        ledger=ledger,
        recorder=sink,
        limits=limits,
        inputs=inputs,
        estimates=estimates,
        seed=seed,
        run_id=run_id,
        retry=retry,
        record_content=record_content,
        cancel=cancel,
    )
    try:
        # Slow one-time work (litellm's import, tokenizers, pool health) before the clock starts.
        await client.prepare()
        record = await executor.run()
    finally:
        if own_client:
            await client.aclose()
    winners = {s.subtask: s for s in memory.subtasks.values() if s.winner_attempt_id}
    return RunResult(
        run=record,
        outputs={name: value for name, value in executor.outputs.items() if name in winners},
        tree=memory.tree(),
        decisions=list(memory.decisions),
        attempts=sorted(memory.attempts.values(), key=lambda a: a.started_s),
        subtasks=[memory.subtasks[n] for n in workflow.subtasks if n in memory.subtasks],
        calls=list(memory.calls),
    )


def run(workflow: Workflow, **kwargs: Any) -> RunResult:
    """Synchronous `arun`, for scripts; not for use inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(workflow, **kwargs))
    raise ConfigError("`run()` was called inside a running event loop; use `await arun(...)` instead")
