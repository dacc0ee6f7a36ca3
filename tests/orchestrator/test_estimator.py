"""The estimator seam: what an `Estimator` answers is what the policy plans on; `None` falls through."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents import LLMAgent
from orchestrator import (
    AttemptEstimate,
    Catalog,
    Estimator,
    RequestFeatures,
    RunResult,
    TableEstimator,
    ThompsonEstimator,
    Workflow,
    arun,
    describe_beliefs,
    simulate,
)
from orchestrator._estimate_book import DEFAULT_SUCCESS_PROB, EstimateBook
from orchestrator.estimator import BELIEFS_MAX_CHARS
from orchestrator.plan import PlanState, Policy
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.virtual_time import run_virtual
from policies.baselines import FixedModel
from policies.bench import StateCapture
from tests.conftest import estimate, simulated_catalog

TOPIC = "a topic of thirty-one characters"


def _workflow() -> Workflow:
    """`plan` has priors for both models; `write` for `large` only (`small` takes the default)."""
    wf = Workflow("essay", inputs=["topic"])
    plan = wf.subtask(
        "plan",
        LLMAgent(prompt="Plan an essay on {topic}"),
        models=["small", "large"],
        estimates={"small": estimate(0.6), "large": estimate(0.95, 500, 6.0)},
    )
    wf.subtask(
        "write",
        LLMAgent(prompt="Write it: {plan}"),
        models=["small", "large"],
        after=[plan],
        estimates={"large": estimate(0.9, 800, 8.0)},
    )
    return wf


@dataclass
class _Asked:
    """An estimator with an opinion on (`plan`, `small`) only, keeping what it was asked."""

    answer: AttemptEstimate | None
    asked: list[tuple[str, str, str, RequestFeatures]] = field(default_factory=list)

    def estimate(
        self, workflow: str, subtask: str, model: str, features: RequestFeatures
    ) -> AttemptEstimate | None:
        self.asked.append((workflow, subtask, model, features))
        return self.answer if (subtask, model) == ("plan", "small") else None


def _simulated(
    estimator: Estimator | None,
    *,
    policy: Policy,
    catalog: Catalog | None = None,
    update_in_run: bool = False,
) -> RunResult:
    """One seeded simulated run of `_workflow()` on `estimator`."""
    return simulate(
        _workflow(),
        catalog=catalog or simulated_catalog(),
        policy=policy,
        budget_usd=1.0,
        deadline_s=None,
        seed=3,
        inputs={"topic": TOPIC},
        estimator=estimator,
        update_in_run=update_in_run,
    )


def _states(estimator: Estimator | None, *, catalog: Catalog | None = None) -> list[PlanState]:
    capture = StateCapture(FixedModel(model="large"))
    result = _simulated(estimator, policy=capture, catalog=catalog)
    assert result.outcome.value == "completed"
    return capture.states


def test_a_custom_estimators_answer_reaches_the_policy() -> None:
    mine = estimate(0.123, 42)
    first = _states(_Asked(mine))[0]
    got = first.estimates[("plan", "small")]
    assert got.success_prob == 0.123
    assert got.output_tokens == mine.output_tokens and got.latency_s == mine.latency_s
    assert got.input_tokens != mine.input_tokens, "the counted prompt replaces the estimate's guess"


def test_no_opinion_falls_back_to_priors_then_catalog_defaults() -> None:
    with_none = _states(_Asked(None))
    without = _states(None)
    assert [dict(s.estimates) for s in with_none] == [dict(s.estimates) for s in without]
    first = with_none[0]
    assert first.estimates[("plan", "small")].success_prob == 0.6  # the subtask's prior
    assert first.estimates[("write", "small")].success_prob == DEFAULT_SUCCESS_PROB  # the default


def test_the_estimator_is_asked_with_the_requests_features() -> None:
    asked = _Asked(None)
    _states(asked)
    wf = _workflow()
    pairs = {(s.name, m) for s in wf.subtasks.values() for m in s.models}
    before = [(s, m, f) for w, s, m, f in asked.asked if f.prompt_tokens is None]
    after = [(s, m, f) for w, s, m, f in asked.asked if f.prompt_tokens is not None]
    assert {w for w, *_ in asked.asked} == {"essay"}
    assert {(s, m) for s, m, _ in before} == pairs, "every pair is asked before the run"
    assert {(s, m) for s, m, _ in after} == pairs, "and again once its prompt is counted"
    assert all(f.input_chars == {"topic": len(TOPIC)} for *_, f in asked.asked)
    counted = {(s, m): f.prompt_tokens or 0 for s, m, f in after}
    assert counted[("write", "small")] > counted[("plan", "small")] > 0  # `write` reads the plan too


def test_learned_estimates_are_a_table_under_the_estimator() -> None:
    wf = _workflow()
    catalog = simulated_catalog()
    learned = {("plan", "small"): estimate(0.2), ("plan", "large"): estimate(0.3)}
    capture = StateCapture(FixedModel(model="large"))
    book = EstimateBook.build(wf, catalog)
    result: RunResult = run_virtual(
        arun(
            wf,
            catalog=catalog,
            client=SimulatedClient(SimulatedBackend(book.table, seed=1)),
            policy=capture,
            budget_usd=1.0,
            inputs={"topic": TOPIC},
            learned_estimates=learned,
            estimator=_Asked(estimate(0.1)),
            update_in_run=False,
        )
    )
    assert result.outcome.value == "completed"
    first = capture.states[0].estimates
    assert first[("plan", "small")].success_prob == 0.1  # the estimator first
    assert first[("plan", "large")].success_prob == 0.3  # then the learned table
    assert first[("write", "large")].success_prob == 0.9  # then the priors


def test_a_table_estimator_answers_for_its_workflow_only() -> None:
    table = TableEstimator({("plan", "small"): estimate(0.2)}, workflow="essay")
    features = RequestFeatures()
    assert table.estimate("essay", "plan", "small", features) == estimate(0.2)
    assert table.estimate("essay", "plan", "large", features) is None
    assert table.estimate("other", "plan", "small", features) is None
    anywhere = TableEstimator({("plan", "small"): estimate(0.2)})
    assert anywhere.estimate("other", "plan", "small", features) == estimate(0.2)


def test_the_public_api_passes_the_estimator_and_the_update_switch_through() -> None:
    from budgetflow.api import simulate as public_simulate

    capture = StateCapture(FixedModel(model="large"))
    result = public_simulate(
        _workflow(),
        catalog=simulated_catalog(),
        policy=capture,
        budget_usd=1.0,
        deadline_s=None,
        seed=3,
        inputs={"topic": TOPIC},
        estimator=_Asked(estimate(0.123)),
        update_in_run=False,
    )
    assert result.outcome.value == "completed"
    assert capture.states[0].estimates[("plan", "small")].success_prob == 0.123
    assert all("in_run_beliefs" not in d.info for d in result.decisions)


def test_the_run_record_says_what_the_beliefs_came_from() -> None:
    def beliefs(estimator: Estimator | None, *, update_in_run: bool) -> str | None:
        return _simulated(
            estimator, policy=FixedModel(model="large"), update_in_run=update_in_run
        ).run.beliefs

    assert beliefs(None, update_in_run=False) == "priors"
    assert beliefs(None, update_in_run=True) == "priors; updated in run"
    table = TableEstimator({}, label="pooled estimates")
    assert beliefs(table, update_in_run=False) == "pooled estimates, then priors"
    assert beliefs(_Asked(None), update_in_run=False) == "_Asked, then priors", "no label: its class"
    explored = ThompsonEstimator(table, seed=5)
    assert (
        beliefs(explored, update_in_run=True)
        == "pooled estimates explored (seed 5), then priors; updated in run"
    )
    long = TableEstimator({}, label="x" * 300)
    found = describe_beliefs(long, learned_table=True)
    assert len(found) == BELIEFS_MAX_CHARS and found.endswith("…")
