"""The rows of one seeded run: workflows, models, policies and outcomes, drawn from a numpy generator.

`RunBuilder.build` appends a run's rows (`runs`, `subtask_executions`, `attempts`, `calls`,
`plan_decisions`) to `Buffers`, as the `SqlRecorder` would have written them for a real
run of that shape: see `benchmarks/seed_volume.py` for what the shapes are.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final, NamedTuple

import numpy as np

from orchestrator.records import AttemptStatus, CallKind, CallStatus, Outcome, SubtaskStatus

__all__ = ["DETAIL_SHAPE", "OUTCOMES", "POLICIES", "SHAPES", "Buffers", "RunBuilder", "normalised"]

_Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class _Model:
    name: str
    litellm_model: str
    provider: str
    in_nano: int
    """Nano-USD per input token (USD per million tokens × 1,000)."""
    out_nano: int
    ttft_s: float
    tokens_per_s: float
    pass_p: float
    replicas: tuple[str, ...] = ()
    cached_share: float = 0.0


_MODELS: Final = {
    m.name: m
    for m in (
        _Model("mini", "openai/gpt-4o-mini", "openai", 150, 600, 0.4, 90, 0.6),
        _Model("4o", "openai/gpt-4o", "openai", 2_500, 10_000, 0.6, 60, 0.85),
        _Model("haiku", "anthropic/claude-3-5-haiku-20241022", "anthropic", 800, 4_000, 0.5, 110, 0.65),
        _Model("sonnet", "anthropic/claude-3-5-sonnet-20241022", "anthropic", 3_000, 15_000, 0.9, 70, 0.9),
        _Model("flash", "gemini/gemini-1.5-flash", "gemini", 75, 300, 0.3, 150, 0.55),
        _Model(
            "local",
            "hosted_vllm/local",
            "hosted_vllm",
            20,
            50,
            0.15,
            40,
            0.5,
            replicas=("http://vllm-0:8000/v1", "http://vllm-1:8000/v1", "http://vllm-2:8000/v1"),
            cached_share=0.6,
        ),
    )
}


@dataclass(frozen=True)
class _Shape:
    name: str
    stages: tuple[tuple[str, ...], ...]
    models: tuple[str, ...]
    """Cheapest first."""
    weight: float
    inputs: dict[str, str]
    fan_stage: int | None = None
    """The stage that widens with the run (`<prefix>_<i>`)."""


SHAPES: Final = (
    _Shape(
        "code-pipeline",
        (("plan",), ("implement_parser", "implement_formatter", "implement_cli"), ("integrate",), ("tests",)),
        ("mini", "4o"),
        0.3,
        {"feature": "convert a CSV file into a Markdown table, with column alignment options"},
    ),
    _Shape(
        "research-qa",
        (("decompose",), ("answer_1", "answer_2", "answer_3"), ("synthesize",), ("judge",)),
        ("mini", "4o"),
        0.2,
        {"question": "Why did the 1977 Voyager launches use a gravity assist from Jupiter?"},
        fan_stage=1,
    ),
    _Shape(
        "hard-step", (("plan",), ("port",), ("docs",)), ("mini", "4o"), 0.1, {"module": "legacy/parser.c"}
    ),
    _Shape("local-model", (("outline",), ("note",)), ("local", "mini"), 0.1, {"topic": "prefix caching"}),
    _Shape(
        "doc-review",
        (("split",), ("review_1", "review_2", "review_3", "review_4"), ("merge",), ("summary",)),
        ("flash", "haiku", "sonnet"),
        0.15,
        {"document": "contracts/2024-msa.md"},
        fan_stage=1,
    ),
    _Shape(
        "support-triage",
        (("classify",), ("draft",), ("review",)),
        ("flash", "mini", "4o"),
        0.15,
        {"ticket": "The export button does nothing on Safari 17."},
    ),
)
DETAIL_SHAPE: Final = "doc-review"
POLICIES: Final = {
    "mcpp": 0.45,
    "always_cheapest": 0.15,
    "always_strongest": 0.08,
    "split_critical_path": 0.1,
    "threshold_router": 0.12,
    "dual_mirror_descent": 0.1,
}
OUTCOMES: Final = {
    Outcome.COMPLETED: 0.80,
    Outcome.BUDGET_EXHAUSTED: 0.07,
    Outcome.DEADLINE_EXCEEDED: 0.05,
    Outcome.FAILED: 0.05,
    Outcome.CANCELLED: 0.02,
    Outcome.ABANDONED: 0.01,
}
_CALLS_PER_ATTEMPT: Final = 2.4
_ATTEMPTS_PER_SUBTASK: Final = 4.2
_BATCH_SIZES: Final = (1, 2, 4, 8, 16)
_ERRORS: Final = (
    "RateLimitError: 429 Too Many Requests: rate limit reached for requests",
    "APIConnectionError: connection reset by peer",
    "InternalServerError: 503 the model is overloaded, please retry",
    "Timeout: no response within 60 s",
)
_TEXT: Final = (
    "The parser reads the header row, infers each column's alignment from its values and keeps"
    " quoted separators inside their field. Tests cover empty input, ragged rows and unicode. "
) * 40
_SUMMARY_LIMIT: Final = 50
"""As `orchestrator._run_views.SUMMARY_LIMIT`: ready subtasks a decision's state lists."""


# --- Rows of one run -------------------------------------------------------------------------


class _Planned(NamedTuple):
    start: float
    latency: float
    error: bool
    tokens_in: int
    tokens_out: int
    ttft: float | None
    retry: int
    finish: str | None


@dataclass
class Buffers:
    runs: _Rows = field(default_factory=list)
    subtasks: _Rows = field(default_factory=list)
    attempts: _Rows = field(default_factory=list)
    calls: _Rows = field(default_factory=list)
    decisions: _Rows = field(default_factory=list)


def _usd(nano: int) -> Decimal:
    return Decimal(nano).scaleb(-9)


def _expanded(shape: _Shape, attempts: int) -> list[list[str]]:
    stages = [list(stage) for stage in shape.stages]
    if shape.fan_stage is not None:
        fixed = sum(len(s) for i, s in enumerate(stages) if i != shape.fan_stage)
        prefix = stages[shape.fan_stage][0].rsplit("_", 1)[0]
        wanted = round(attempts / _ATTEMPTS_PER_SUBTASK) - fixed
        width = min(500, max(len(stages[shape.fan_stage]), wanted))
        stages[shape.fan_stage] = [f"{prefix}_{i}" for i in range(1, width + 1)]
    return stages


def _batches(rng: np.random.Generator, attempts: int) -> list[int]:
    sizes: list[int] = []
    while attempts:
        k = min(attempts, int(rng.choice(_BATCH_SIZES, p=(0.3, 0.3, 0.25, 0.1, 0.05))))
        sizes.append(k)
        attempts -= k
    return sizes


class RunBuilder:
    """Appends the rows of one run to the buffers."""

    def __init__(self, rng: np.random.Generator, out: Buffers) -> None:
        self.rng = rng
        self.out = out

    def build(
        self,
        *,
        run_id: str,
        shape: _Shape,
        calls: int,
        outcome: Outcome,
        policy: str,
        started_at: datetime,
        content: bool,
        simulated: bool,
    ) -> None:
        rng = self.rng
        self.run_id, self.content, self.simulated, self.policy = run_id, content, simulated, policy
        self.shape = shape
        self.n_attempts = n_attempts = max(1, min(calls // 2, round(calls / _CALLS_PER_ATTEMPT)))
        # Each attempt: an agent span and 1 + extra model calls; the extras make the count exact.
        extras = rng.multinomial(calls - 2 * n_attempts, np.full(n_attempts, 1 / n_attempts)).tolist()
        self.llm_calls = [1 + e for e in extras]
        stages = _expanded(shape, n_attempts)
        last_stage = len(stages) - 1 if outcome is Outcome.COMPLETED else int(rng.integers(len(stages)))
        started = [s for stage in stages[: last_stage + 1] for s in stage][:n_attempts]
        if outcome is Outcome.COMPLETED and len(started) < sum(len(s) for s in stages):
            outcome = Outcome.FAILED  # too few calls to reach every subtask
        last = set(stages[last_stage]) & set(started)
        per_subtask = 1 + rng.multinomial(
            n_attempts - len(started), normalised(rng.lognormal(0, 0.8, len(started)))
        )
        self.attempt_no = self.span_no = self.llm_no = 0
        self.spent = 0
        self.decisions: list[tuple[float, dict[str, Any]]] = []
        self.ended: dict[str, tuple[float, bool]] = {}
        ending = started[-1]
        t = float(rng.uniform(0.005, 0.02))
        budget_ratio = float(rng.uniform(1.2, 4.0))
        cut_share = float(rng.uniform(0.2, 0.9))
        index = 0
        for stage in stages:
            names = [s for s in stage if s in started]
            if not names:
                break
            launches: dict[str, dict[str, Any]] = {}
            ends = []
            for name in names:
                if outcome is Outcome.COMPLETED or name not in last:
                    role = "completed"
                elif outcome in (Outcome.FAILED, Outcome.BUDGET_EXHAUSTED):
                    role = "failed" if name == ending else "completed"
                else:
                    role = "cut"
                end = self._subtask(name, int(per_subtask[index]), t, role, cut_share, launches)
                ends.append(end)
                index += 1
            self.decisions.append((t - 0.002, launches))
            t = max(ends) + float(rng.uniform(0.002, 0.02))
        for stage in stages:
            for name in stage:
                if name not in started:
                    self.out.subtasks.append(_subtask_row(run_id, name, SubtaskStatus.PENDING))
        makespan = t
        deadline: float | None = None
        if outcome is Outcome.DEADLINE_EXCEEDED:
            deadline = round(makespan, 1)
        elif rng.random() < 0.9:
            deadline = float(math.ceil(makespan * rng.uniform(1.3, 3.0)))
        budget = max(10_000_000, int(round(self.spent * budget_ratio, -7)))
        if outcome is Outcome.BUDGET_EXHAUSTED:
            budget = self.spent + int(self.spent * rng.uniform(0, 0.02))
        reason = _reason(outcome, ending, shape.models)
        self.out.runs.append(
            {
                "run_id": run_id,
                "workflow": shape.name,
                "policy": policy,
                "budget_usd": _usd(budget),
                "deadline_s": deadline,
                "seed": int(rng.integers(2**31)),
                "simulated": simulated,
                "started_at": started_at,
                "ended_at": started_at + timedelta(seconds=makespan),
                "inputs": dict(shape.inputs)
                if content
                else {k: {"redacted": True, "chars": len(v)} for k, v in shape.inputs.items()},
                "outcome": outcome.value,
                "reason": reason,
                "spent_usd": _usd(self.spent),
                "overrun_usd": Decimal(0),
                "makespan_s": makespan,
                "heartbeat_at": started_at + timedelta(seconds=makespan),
            }
        )
        self._decision_rows(budget, deadline, makespan)

    def _subtask(
        self,
        name: str,
        attempts: int,
        start: float,
        role: str,
        cut_share: float,
        launches: dict[str, dict[str, Any]],
    ) -> float:
        rng = self.rng
        sizes = _batches(rng, attempts)
        t = start + float(rng.uniform(0.0, 0.003))
        first = t
        winner: str | None = None
        spent = 0
        preview = None
        for b, k in enumerate(sizes):
            final = b == len(sizes) - 1
            model = self._model()
            max_tokens = int(rng.integers(600, 2400))
            if b == 0:
                launches[name] = {"model": model.name, "samples": k, "max_tokens": max_tokens}
            else:
                self.decisions.append(
                    (t - 0.001, {name: {"model": model.name, "samples": k, "max_tokens": max_tokens}})
                )
            mode = "fail" if not final or role == "failed" else ("win" if role == "completed" else "cut")
            end, batch_winner, batch_spent, batch_preview = self._batch(
                name, b, k, model, max_tokens, t, mode, cut_share
            )
            spent += batch_spent
            if batch_winner is not None:
                winner, preview = batch_winner, batch_preview
            t = end + float(rng.uniform(0.001, 0.01))
        end = t
        status = {
            "completed": SubtaskStatus.COMPLETED,
            "failed": SubtaskStatus.FAILED,
            "cut": SubtaskStatus.CANCELLED,
        }[role]
        self.ended[name] = (end, role == "completed")
        self.out.subtasks.append(
            _subtask_row(
                self.run_id,
                name,
                status,
                attempts=attempts,
                winner=winner,
                preview=preview,
                started=first,
                ended=end,
                spent=spent,
            )
        )
        return end

    def _model(self) -> _Model:
        models = self.shape.models
        if self.policy == "always_cheapest":
            return _MODELS[models[0]]
        if self.policy == "always_strongest":
            return _MODELS[models[-1]]
        cheap = 0.75 if self.policy.startswith("mcpp") else 0.6
        if len(models) == 1 or self.rng.random() < cheap:
            return _MODELS[models[0]]
        return _MODELS[models[int(self.rng.integers(1, len(models)))]]

    def _batch(
        self,
        subtask: str,
        batch: int,
        k: int,
        model: _Model,
        max_tokens: int,
        start: float,
        mode: str,
        cut_share: float,
    ) -> tuple[float, str | None, int, str | None]:
        """One batch of `k` samples; its end, winner, spend and the winner's preview."""
        rng = self.rng
        first = self.attempt_no
        plans = [
            self._calls(model, max_tokens, start + i * 0.0002, self.llm_calls[first + i]) for i in range(k)
        ]
        natural = [p[-1].start + p[-1].latency for p in plans]
        passed = (rng.random(k) < model.pass_p).tolist() if mode != "fail" else [False] * k
        winner_i: int | None = None
        if mode == "win":
            if not any(passed):
                passed[int(rng.integers(k))] = True
            winner_i = min((i for i in range(k) if passed[i]), key=lambda i: natural[i])
        stop = natural[winner_i] if winner_i is not None else max(natural)
        if mode == "cut":
            stop = start + (max(natural) - start) * cut_share
        spent = 0
        winner_id = preview = None
        for i in range(k):
            attempt_id = f"{self.run_id}.a{self.attempt_no}"
            self.attempt_no += 1
            status: AttemptStatus
            end = natural[i]
            cancelled = False
            if i == winner_i:
                status = AttemptStatus.PASSED
            elif end > stop and (mode == "cut" or (winner_i is not None and rng.random() < 0.3)):
                status, cancelled = AttemptStatus.CANCELLED, True
                end = stop + float(rng.uniform(0.0005, 0.003))
            elif passed[i]:
                status = AttemptStatus.PASSED_LATE
            elif plans[i][-1].error:
                status = AttemptStatus.ERROR
            else:
                status = AttemptStatus.FAILED
            cost = self._attempt_calls(
                attempt_id, subtask, model, start, plans[i], max_tokens, end, cancelled
            )
            spent += cost
            judged = status in (AttemptStatus.PASSED, AttemptStatus.PASSED_LATE, AttemptStatus.FAILED)
            text = f"[{model.name} output for `{subtask}`: {'PASS' if passed[i] else 'FAIL'}]"
            if i == winner_i:
                winner_id, preview = attempt_id, text if self.content else None
            self.out.attempts.append(
                {
                    "attempt_id": attempt_id,
                    "run_id": self.run_id,
                    "subtask": subtask,
                    "model": model.name,
                    "batch": batch,
                    "sample": i,
                    "max_tokens": max_tokens,
                    "started_s": start,
                    "status": status.value,
                    "ended_s": end,
                    "check_passed": passed[i] if judged else None,
                    "check_detail": _check_detail(passed[i], self.simulated) if judged else None,
                    "check_simulated": self.simulated and judged,
                    "output_preview": text if self.content else None,
                    "spent_usd": _usd(cost),
                }
            )
        return (max(natural) if winner_i is None and mode != "cut" else stop), winner_id, spent, preview

    def _calls(self, model: _Model, max_tokens: int, start: float, n: int) -> list[_Planned]:
        """An attempt's `n` model calls, one after the other (each error followed by its retry)."""
        rng = self.rng
        base_in = float(rng.lognormal(math.log(900), 0.6))
        outs = rng.lognormal(math.log(450), 0.7, n).tolist()
        errors = (rng.random(n) < 0.04).tolist()
        noise = rng.lognormal(0, 0.3, 2 * n).tolist()
        gaps = rng.uniform(0.0005, 0.005, n).tolist()
        planned = []
        t = start + 0.0003
        retry = 0
        for j in range(n):
            tokens_in = int(base_in * (1 + 0.35 * j)) + 20
            if errors[j]:
                latency, tokens_out, ttft, finish = 0.05 + 2 * noise[2 * j] * gaps[j] * 100, 0, None, None
            else:
                tokens_out = min(int(outs[j]) + 1, max_tokens)
                ttft = model.ttft_s * noise[2 * j]
                latency = ttft + tokens_out / model.tokens_per_s * noise[2 * j + 1]
                finish = "length" if tokens_out == max_tokens else "stop"
            planned.append(_Planned(t, latency, errors[j], tokens_in, tokens_out, ttft, retry, finish))
            retry = retry + 1 if errors[j] else 0
            t += latency + gaps[j]
        return planned

    def _attempt_calls(
        self,
        attempt_id: str,
        subtask: str,
        model: _Model,
        start: float,
        planned: list[_Planned],
        max_tokens: int,
        end: float,
        cancelled: bool,
    ) -> int:
        """Write the attempt's agent span and model calls (squeezed before `end` if cancelled); their cost."""
        rng = self.rng
        span_id = f"{self.run_id}.s{self.span_no}"
        self.span_no += 1
        natural = planned[-1].start + planned[-1].latency
        scale = (end - start) / (natural - start) if cancelled and natural > end else 1.0
        ids = rng.bytes(16 * len(planned)).hex()
        lengths = rng.lognormal(math.log(600), 0.5, 2 * len(planned)).astype(int).tolist()
        offsets = rng.integers(0, len(_TEXT) // 2, 2 * len(planned)).tolist()
        litellm_model = f"budgetflow-sim/{model.name}" if self.simulated else model.litellm_model
        provider = "budgetflow-sim" if self.simulated else model.provider
        total = 0
        for j, call in enumerate(planned):
            last = j == len(planned) - 1
            tokens_out = call.tokens_out
            status = CallStatus.ERROR if call.error else CallStatus.OK
            finish = call.finish
            if cancelled and last:
                status, finish = CallStatus.CANCELLED, None
                tokens_out = int(tokens_out * rng.uniform(0.0, 0.8))
            cost = call.tokens_in * model.in_nano + tokens_out * model.out_nano
            total += cost
            cached = (
                int(call.tokens_in * model.cached_share * rng.uniform(0.5, 1.0)) if model.cached_share else 0
            )
            ok = status is CallStatus.OK
            prompt = response = None
            if self.content:
                head = f"You are the `{subtask}` agent of `{self.shape.name}`. Turn {j + 1}.\n\n"
                prompt = head + _TEXT[offsets[2 * j] : offsets[2 * j] + lengths[2 * j]]
                if ok:
                    response = _TEXT[offsets[2 * j + 1] : offsets[2 * j + 1] + lengths[2 * j + 1]]
            self.out.calls.append(
                {
                    "call_id": ids[32 * j : 32 * j + 32],
                    "run_id": self.run_id,
                    "attempt_id": attempt_id,
                    "parent_call_id": span_id,
                    "kind": CallKind.LLM.value,
                    "subtask": subtask,
                    "model": model.name,
                    "litellm_model": litellm_model,
                    "provider": provider,
                    "replica": model.replicas[int(rng.integers(len(model.replicas)))]
                    if model.replicas
                    else None,
                    "retry": call.retry,
                    "input_tokens": call.tokens_in,
                    "output_tokens": tokens_out,
                    "cached_tokens": cached,
                    "cost_usd": _usd(cost),
                    "reserved_usd": _usd(call.tokens_in * model.in_nano + max_tokens * model.out_nano),
                    "started_s": start + (call.start - start) * scale,
                    "latency_s": call.latency * scale,
                    "ttft_s": call.ttft if ok else None,
                    "status": status.value,
                    "error": _ERRORS[j % len(_ERRORS)] if call.error else None,
                    "finish_reason": finish,
                    "response_id": f"chatcmpl-{ids[32 * j : 32 * j + 24]}"
                    if ok and not self.simulated
                    else None,
                    "simulated": self.simulated,
                    "prompt": prompt,
                    "response": response,
                }
            )
        span_status = CallStatus.CANCELLED if cancelled else CallStatus.OK
        self.out.calls.append(
            {
                "call_id": span_id,
                "run_id": self.run_id,
                "attempt_id": attempt_id,
                "parent_call_id": None,
                "kind": CallKind.AGENT.value,
                "subtask": subtask,
                "model": model.name,
                "litellm_model": None,
                "provider": None,
                "replica": None,
                "retry": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "cost_usd": Decimal(0),
                "reserved_usd": Decimal(0),
                "started_s": start,
                "latency_s": end - start,
                "ttft_s": None,
                "status": span_status.value,
                "error": None,
                "finish_reason": None,
                "response_id": None,
                "simulated": self.simulated,
                "prompt": None,
                "response": None,
            }
        )
        self.spent += total
        return total

    def _decision_rows(self, budget: int, deadline: float | None, makespan: float) -> None:
        rng = self.rng
        ordered = sorted(self.decisions, key=lambda d: d[0])
        ends = sorted(end for end, completed in self.ended.values() if completed)
        for index, (at, allocation) in enumerate(ordered):
            at = max(at, 0.0)
            ready = list(allocation)
            state = {
                "ready": ready[:_SUMMARY_LIMIT],
                "ready_count": len(ready),
                "completed_count": bisect.bisect_right(ends, at),
                "in_flight": [],
                "in_flight_count": 0,
                "remaining_budget_usd": round((budget - self.spent * at / makespan) / 1e9, 9),
                "remaining_time_s": None if deadline is None else round(deadline - at, 3),
            }
            self.out.decisions.append(
                {
                    "run_id": self.run_id,
                    "decision_index": index,
                    "at_s": at,
                    "policy": self.policy,
                    "state": state,
                    "allocation": allocation,
                    "info": self._info(rng, budget),
                    "decide_ms": float(rng.lognormal(math.log(8.0), 0.5))
                    if self.policy.startswith("mcpp")
                    else float(rng.lognormal(math.log(0.05), 0.4)),
                }
            )

    def _info(self, rng: np.random.Generator, budget: int) -> dict[str, Any]:
        if self.policy.startswith("mcpp"):
            raw = int(rng.integers(24, 2048))
            success = round(float(rng.uniform(0.6, 1.0)), 4)
            return {
                "candidates": raw,
                "candidates_merged": int(raw * rng.uniform(0.3, 0.6)),
                "continuations": 8,
                "rollouts": int(rng.integers(1500, 6000)),
                "est_success": success,
                "est_success_runner_up": round(success * float(rng.uniform(0.9, 1.0)), 4),
                "continuation": f"{self.shape.models[0]}:{int(rng.choice((1, 2, 4, 8, 16)))}",
                "rollouts_chosen": 128,
                "fallback_cheapest": False,
                "time_budget_s": round(float(rng.uniform(0.5, 2.0)), 3),
            }
        if self.policy in ("dual_mirror_descent", "threshold_router"):
            return {"mu": round(float(rng.uniform(0, 3)), 4), "rho_usd": round(budget / 1e9 / 20, 6)}
        return {}


def normalised(weights: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return np.asarray(weights / weights.sum(), dtype=float)


def _check_detail(passed: bool, simulated: bool) -> str:
    if simulated:
        return "simulated outcome (drawn from estimates)"
    return "tests passed" if passed else "2 of 14 tests failed: test_ragged_rows, test_unicode_width"


def _reason(outcome: Outcome, ending: str, models: Sequence[str]) -> str | None:
    return {
        Outcome.COMPLETED: None,
        Outcome.FAILED: f"subtask `{ending}` failed: every attempt failed its check",
        Outcome.BUDGET_EXHAUSTED: f"budget exhausted: subtask `{ending}` needs another attempt on"
        f" `{models[0]}` and nothing more fits in what is left",
        Outcome.DEADLINE_EXCEEDED: "deadline exceeded: in-flight calls were cancelled",
        Outcome.CANCELLED: "cancelled by a request (`POST /runs/{id}/cancel`)",
        Outcome.ABANDONED: "abandoned: no heartbeat from the process running it",
    }[outcome]


def _subtask_row(
    run_id: str,
    name: str,
    status: SubtaskStatus,
    *,
    attempts: int = 0,
    winner: str | None = None,
    preview: str | None = None,
    started: float | None = None,
    ended: float | None = None,
    spent: int = 0,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "subtask": name,
        "status": status.value,
        "attempts": attempts,
        "winner_attempt_id": winner,
        "output_preview": preview,
        "output": preview,
        "started_s": started,
        "ended_s": ended,
        "spent_usd": _usd(spent),
    }
