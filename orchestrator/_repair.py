"""Checking and repairing a policy's allocation before it is launched.

A policy's answer is a wish; what starts must be bounded and feasible. The rules,
in order: the subtask must be ready and the model allowed (else a `UserError`: the
policy is wrong); at most `MAX_SAMPLES_PER_BATCH` samples; `max_tokens` the policy's
or a default from the estimates, never above the subtask's ceiling or the model's
context; then no more samples than the budget left can hold, and the cheapest model
that fits when none of the chosen one does. Every change is noted, and the decision
record keeps the notes (`info.repaired`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from orchestrator._estimate_book import EstimateBook
from orchestrator.catalog import NO_MODEL, Catalog
from orchestrator.errors import UserError
from orchestrator.estimates import AttemptEstimate, default_max_tokens
from orchestrator.ledger import nano_to_usd
from orchestrator.plan import Allocation, Assignment, DagView

__all__ = ["MAX_SAMPLES_PER_BATCH", "AllocationRepair"]

MAX_SAMPLES_PER_BATCH = 64
"""Most parallel samples one batch may start, whatever a policy asks."""


class AllocationRepair:
    """The rules above, for one run."""

    def __init__(
        self,
        *,
        policy: str,
        dag: DagView,
        catalog: Catalog,
        ceilings: Mapping[str, int],
        estimates: Callable[[], EstimateBook],
    ) -> None:
        """Args:
        policy: the policy's name, for messages.
        dag: the workflow's shape.
        catalog: the models (prices, context windows).
        ceilings: per subtask, its `max_tokens` ceiling.
        estimates: the run's current estimates (prompt sizes change as they are counted).
        """
        self._policy = policy
        self._dag = dag
        self._catalog = catalog
        self._ceilings = ceilings
        self._estimates = estimates
        self._caps: dict[tuple[str, str], tuple[AttemptEstimate, int]] = {}
        """Default caps, each with the estimate it was computed from (beliefs change in a run)."""

    def checked(self, allocation: Allocation, ready: list[str]) -> tuple[Allocation, dict[str, str]]:
        """Check the policy's answer; bound samples and max_tokens; fill in max_tokens."""
        out: dict[str, Assignment] = {}
        repairs: dict[str, str] = {}
        for name, a in allocation.assignments.items():
            if name not in ready:
                raise UserError(
                    f"policy `{self._policy}` assigned subtask `{name}`, which is not ready;"
                    " a policy may only assign `state.ready`"
                )
            if a.model not in self._dag.models[name]:
                raise UserError(
                    f"policy `{self._policy}` chose model `{a.model}` for subtask `{name}`,"
                    f" which may only use {list(self._dag.models[name])}"
                )
            cap = self.cap(name, a.model, a.max_tokens)
            # Plain code (no model) runs once per batch: more samples would repeat it to no end.
            samples = min(a.samples, 1 if a.model == NO_MODEL else MAX_SAMPLES_PER_BATCH)
            if a.max_tokens is not None and cap < a.max_tokens:
                repairs[name] = f"max_tokens {a.max_tokens} -> {cap} (the subtask's ceiling)"
            if samples < a.samples:
                repairs[name] = f"samples {a.samples} -> {samples} (at most {MAX_SAMPLES_PER_BATCH})"
            out[name] = Assignment(model=a.model, samples=samples, max_tokens=cap)
        return Allocation(assignments=out, info=allocation.info), repairs

    def fit(
        self, allocation: Allocation, ready: list[str], repairs: dict[str, str], available: int
    ) -> tuple[Allocation, list[str]]:
        """No more samples than `available` nano-USD can hold; a cheaper model when none of the chosen fits.

        Returns the repaired allocation and, per subtask nothing fits for, why.
        """
        out: dict[str, Assignment] = {}
        refused: list[str] = []
        for name in ready:
            a = allocation.assignments.get(name)
            if a is None or a.samples == 0:
                continue
            assert a.max_tokens is not None
            hold = self.hold(name, a.model, a.max_tokens)
            fit = min(a.samples, available // hold) if hold > 0 else a.samples
            chosen = a
            if fit == 0:
                cheaper = self._cheapest_fit(name, a.max_tokens, available)
                if cheaper is None:
                    refused.append(self.refusal(name, a.max_tokens))
                    continue
                chosen, fit = cheaper, 1
                hold = self.hold(name, chosen.model, chosen.max_tokens or 0)
                repairs[name] = f"{a.model} x{a.samples} does not fit; {chosen.model} x1 instead"
            elif fit < a.samples:
                repairs[name] = f"samples {a.samples} -> {fit} (what the budget left can hold)"
            out[name] = Assignment(model=chosen.model, samples=fit, max_tokens=chosen.max_tokens)
            available -= fit * hold
        return Allocation(assignments=out, info=allocation.info), refused

    def refusal(self, name: str, asked_cap: int) -> str:
        """`name` and what its cheapest sample would hold."""
        holds = []
        for model in self._dag.models[name]:
            cap = min(asked_cap, self.cap(name, model, None))
            holds.append((self.hold(name, model, cap), model, cap))
        hold, model, cap = min(holds)
        tokens = self._estimates().get(name, model).input_tokens
        return (
            f"`{name}` (its cheapest sample, on `{model}`, holds ${nano_to_usd(hold):.6f}"
            f" for {tokens} prompt and {cap} output tokens)"
        )

    def _cheapest_fit(self, name: str, asked_cap: int, available: int) -> Assignment | None:
        best: tuple[int, str, int] | None = None
        for model in self._dag.models[name]:
            cap = min(asked_cap, self.cap(name, model, None))
            hold = self.hold(name, model, cap)
            if hold <= available and (best is None or hold < best[0]):
                best = (hold, model, cap)
        return None if best is None else Assignment(model=best[1], samples=1, max_tokens=best[2])

    def hold(self, name: str, model: str, max_tokens: int) -> int:
        """What one sample of `name` on `model` holds (its counted or estimated prompt)."""
        return self._catalog.get(model).hold_nano(
            input_tokens=self._estimates().get(name, model).input_tokens, max_tokens=max_tokens
        )

    def cap(self, name: str, model: str, asked: int | None) -> int:
        """The per-call output cap: the policy's, else a default, never above the ceiling or context."""
        cap = asked if asked is not None else self._default_cap(name, model)
        ceiling = self._ceilings.get(name)
        if ceiling is not None:
            cap = min(cap, ceiling)
        return max(1, min(cap, self._catalog.get(model).context_window))

    def _default_cap(self, subtask: str, model: str) -> int:
        key = (subtask, model)
        est = self._estimates().get(subtask, model)
        cached = self._caps.get(key)
        if cached is not None and cached[0] is est:
            return cached[1]
        cap = default_max_tokens(est, ceiling=self._ceilings.get(subtask))
        self._caps[key] = (est, cap)
        return cap
