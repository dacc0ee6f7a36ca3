"""OpenTelemetry GenAI traces: the span tree is the calling tree, with the conventions' attributes.

Spans go to the SDK's in-memory exporter; the provider calls are the seeded simulated
backend, a real HTTP server (the OpenAI stub, through an instrumented httpx client), or
a LangGraph graph whose model calls go through the gateway.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

from agents import LangGraphAgent, LLMAgent
from budgetflow import _whole_spans, arun
from budgetflow.settings import Settings, load_settings
from budgetflow.tracing import (
    DURATION_BUCKETS_S,
    SEMCONV_SCHEMA_URL,
    TOKEN_BUCKETS,
    TracingInterceptor,
    telemetry_from_settings,
)
from orchestrator import Catalog, ModelSpec, RetryPolicy, RunResult, Workflow
from orchestrator._estimate_book import EstimateBook
from orchestrator.errors import ConfigError, ProviderError
from orchestrator.model_client import (
    CallProgress,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ModelClient,
    PromptCount,
)
from orchestrator.records import CallKind, CallStatus, Outcome
from orchestrator.simulated import SimulatedBackend, SimulatedClient
from orchestrator.tokens import count_locally
from tests.conftest import WorkflowFactory, estimate
from tests.openai_stub import ScriptedProvider, serve


@dataclass
class Otel:
    """An SDK tracer provider and meter provider, exporting to memory."""

    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    meter_provider: MeterProvider
    metrics: InMemoryMetricReader

    def interceptor(self) -> TracingInterceptor:
        return TracingInterceptor(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider)

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def histogram(self, name: str) -> list[HistogramDataPoint]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
            if isinstance(point, HistogramDataPoint)
        ]


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(tracer_provider, spans, meter_provider, reader)
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _simulated(workflow: Workflow, catalog: Catalog, *, error_rate: float = 0.0) -> SimulatedClient:
    table = EstimateBook.build(workflow, catalog).table
    return SimulatedClient(SimulatedBackend(table, seed=5, time_scale=0.01, error_rate=error_rate))


async def _run(
    workflow: Workflow,
    catalog: Catalog,
    otel: Otel,
    client: ModelClient,
    *,
    policy: str = "fixed:small:2",
    retry: RetryPolicy | None = None,
) -> RunResult:
    return await arun(
        workflow,
        catalog=catalog,
        client=client,
        inputs={"topic": "t"},
        budget_usd="0.05",
        deadline_s=60,
        policy=policy,
        seed=5,
        retry=retry,
        interceptors=[otel.interceptor()],
    )


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


def _by_call_id(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {
        str(s.attributes["budgetflow.call_id"]): s
        for s in spans
        if s.attributes and "budgetflow.call_id" in s.attributes
    }


def _parent(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> ReadableSpan | None:
    if span.parent is None:
        return None
    return next(s for s in spans if s.context is not None and s.context.span_id == span.parent.span_id)


def _attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def check_tree(result: RunResult, spans: Sequence[ReadableSpan]) -> None:
    """The spans are the calling tree: one run, its decisions, one span per recorded call, parents by id."""
    (root,) = [s for s in spans if s.name.startswith("invoke_workflow")]
    assert root.parent is None and root.name == f"invoke_workflow {result.run.workflow}"
    assert {s.context.trace_id for s in spans if s.context} == {root.context.trace_id if root.context else 0}
    plans = [s for s in spans if s.name == "plan"]
    assert len(plans) == len(result.decisions)
    for plan, decision in zip(
        sorted(plans, key=lambda s: _attrs(s)["budgetflow.decision.index"]), result.decisions, strict=True
    ):
        assert _parent(plan, spans) is root
        assert json.loads(_attrs(plan)["budgetflow.decision.allocation"]) == decision.allocation
    calls = _by_call_id(spans)
    assert sorted(calls) == sorted(c.call_id for c in result.calls)
    for record in result.calls:
        span = calls[record.call_id]
        if record.kind is CallKind.AGENT:
            assert span.name == f"invoke_agent {record.subtask}" and span.kind is SpanKind.INTERNAL
            assert _parent(span, spans) is root
        else:
            assert record.kind is CallKind.LLM and span.kind is SpanKind.CLIENT
            assert record.parent_call_id is not None
            assert _parent(span, spans) is calls[record.parent_call_id]
    assert len(spans) == 1 + len(plans) + len(result.calls)


@pytest.mark.parametrize("sdk_release", ["known", "unknown"])
async def test_the_span_tree_is_the_calling_tree_with_the_conventions_attributes(
    sim_catalog: Catalog,
    diamond: WorkflowFactory,
    otel: Otel,
    sdk_release: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if sdk_release == "unknown":  # an SDK release whose internals are not known: its own spans
        monkeypatch.setattr(_whole_spans, "_SDK_MINOR", (99, 0))
    wf = diamond()
    result = await _run(wf, sim_catalog, otel, _simulated(wf, sim_catalog))
    assert result.outcome is Outcome.COMPLETED
    spans = otel.finished()
    whole = {type(span) is _whole_spans.WholeSpan for span in spans}
    assert whole == {sdk_release == "known"}
    check_tree(result, spans)
    calls = _by_call_id(spans)

    (root,) = [s for s in spans if s.parent is None]
    assert (
        root.instrumentation_scope is not None and root.instrumentation_scope.schema_url == SEMCONV_SCHEMA_URL
    )
    run = _attrs(root)
    assert run["gen_ai.operation.name"] == "invoke_workflow" and run["gen_ai.workflow.name"] == "diamond"
    assert run["budgetflow.run_id"] == result.run_id and run["budgetflow.outcome"] == "completed"
    assert run["budgetflow.cost.usd"] == float(result.spent_usd) and run["budgetflow.budget.usd"] == 0.05
    assert root.status.status_code is StatusCode.UNSET

    final = {a.attempt_id: a for a in result.attempts}
    cancelled = 0
    for record in result.calls:
        span = calls[record.call_id]
        got = _attrs(span)
        if record.kind is CallKind.AGENT:
            attempt = final[str(got["budgetflow.attempt_id"])]
            assert (
                got["gen_ai.operation.name"] == "invoke_agent" and got["gen_ai.agent.name"] == record.subtask
            )
            assert got["gen_ai.provider.name"] == "budgetflow-sim" and got["gen_ai.request.model"] == "small"
            assert got["budgetflow.cost.usd"] == float(attempt.spent_usd)
            continue
        assert span.name == "chat small"
        expected = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "budgetflow-sim",
            "gen_ai.request.model": "small",
            "gen_ai.response.model": "small",
            "gen_ai.usage.input_tokens": record.input_tokens,
            "gen_ai.usage.output_tokens": record.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": record.cached_tokens,
            "budgetflow.cost.usd": float(record.cost_usd),
            "budgetflow.reserved.usd": float(record.reserved_usd),
            "budgetflow.call_id": record.call_id,
            "budgetflow.retry": record.retry,
            "gen_ai.request.max_tokens": final[str(record.attempt_id)].max_tokens,
        }
        assert {k: got.get(k) for k in expected} == expected
        if record.status is CallStatus.CANCELLED:  # a sibling passed first
            cancelled += 1
            assert got["error.type"] == "cancelled" and span.status.status_code is StatusCode.ERROR
        else:
            assert "error.type" not in got and span.status.status_code is StatusCode.UNSET
    assert cancelled > 0, "two samples per batch: some sibling was cut by a pass"


async def test_failed_calls_carry_error_type_in_spans_and_duration(
    sim_catalog: Catalog, diamond: WorkflowFactory, otel: Otel
) -> None:
    wf = diamond()
    result = await _run(
        wf,
        sim_catalog,
        otel,
        _simulated(wf, sim_catalog, error_rate=0.4),
        policy="fixed:small:1",
        retry=RetryPolicy(max_retries=8, base_delay_s=0.001),
    )
    assert result.outcome is Outcome.COMPLETED
    spans = otel.finished()
    check_tree(result, spans)
    failed = [c for c in result.calls if c.kind is CallKind.LLM and c.status is CallStatus.ERROR]
    assert failed, "the seeded backend fails some calls with a 503"
    calls = _by_call_id(spans)
    for record in failed:
        span = calls[record.call_id]
        assert _attrs(span)["error.type"] == "503"
        assert span.status.status_code is StatusCode.ERROR and "503" in (span.status.description or "")
    durations = otel.histogram("gen_ai.client.operation.duration")
    by_error = {
        point.attributes.get("error.type") if point.attributes else None: point for point in durations
    }
    assert by_error["503"].count == len(failed)
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert by_error[None].count == len(llm) - len(failed)


async def test_gen_ai_client_metrics_with_the_conventions_buckets(
    sim_catalog: Catalog, diamond: WorkflowFactory, otel: Otel
) -> None:
    wf = diamond()
    result = await _run(wf, sim_catalog, otel, _simulated(wf, sim_catalog), policy="fixed:small:1")
    ok = [c for c in result.calls if c.kind is CallKind.LLM and c.status is CallStatus.OK]
    tokens = otel.histogram("gen_ai.client.token.usage")
    by_type = {
        point.attributes.get("gen_ai.token.type") if point.attributes else None: point for point in tokens
    }
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == sum(c.input_tokens for c in ok) and by_type["input"].count == len(ok)
    assert by_type["output"].sum == sum(c.output_tokens for c in ok)
    for point in tokens:
        assert tuple(point.explicit_bounds) == TOKEN_BUCKETS
        assert dict(point.attributes or {}) | {"gen_ai.token.type": "x"} == {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "budgetflow-sim",
            "gen_ai.request.model": "small",
            "gen_ai.response.model": "small",
            "gen_ai.token.type": "x",
        }
    (duration,) = otel.histogram("gen_ai.client.operation.duration")
    assert tuple(duration.explicit_bounds) == DURATION_BUCKETS_S
    assert duration.count == len(ok)
    assert duration.sum == pytest.approx(sum(c.latency_s for c in ok))


async def test_a_run_the_sampler_drops_exports_no_span_and_still_counts_its_calls(
    sim_catalog: Catalog, diamond: WorkflowFactory
) -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=ALWAYS_OFF)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    dropped = Otel(tracer_provider, spans, meter_provider, reader)
    wf = diamond()
    result = await _run(wf, sim_catalog, dropped, _simulated(wf, sim_catalog), policy="fixed:small:1")
    assert result.outcome is Outcome.COMPLETED and not any(s.errors for s in result.interceptors)
    assert dropped.finished() == []
    ok = [c for c in result.calls if c.kind is CallKind.LLM and c.status is CallStatus.OK]
    (duration,) = dropped.histogram("gen_ai.client.operation.duration")
    assert ok and duration.count == len(ok)
    tracer_provider.shutdown()
    meter_provider.shutdown()


class SpanWitness:
    """A simulated `ModelClient` that notes the current span in each provider call."""

    def __init__(self, inner: SimulatedClient) -> None:
        self.inner = inner
        self.current: list[tuple[str, int]] = []

    async def prepare(self) -> None:
        await self.inner.prepare()

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        return await self.inner.count_prompt_tokens(model, messages)

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        span = trace.get_current_span()
        self.current.append((request.metadata["attempt_id"], span.get_span_context().span_id))
        return await self.inner.complete(request, progress)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_the_call_span_is_current_during_the_provider_call(
    sim_catalog: Catalog, diamond: WorkflowFactory, otel: Otel
) -> None:
    wf = diamond()
    client = SpanWitness(_simulated(wf, sim_catalog))
    result = await _run(wf, sim_catalog, otel, client)
    spans = otel.finished()
    chats = {
        (str(_attrs(parent)["budgetflow.attempt_id"]), s.context.span_id): s
        for s in spans
        if s.name.startswith("chat") and s.context and (parent := _parent(s, spans)) is not None
    }
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert len(client.current) == len(llm) == len(chats)
    assert set(client.current) == set(chats)


class Annotating(SpanWitness):
    """A simulated `ModelClient` that annotates the current span, as an instrumented library would."""

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        span = trace.get_current_span()
        span.set_attribute("library.note", ["a", 1])
        span.add_event("library.event", {"library.size": 3})
        return await self.inner.complete(request, progress)


class Stamping(SpanProcessor):
    """A span processor that sets an attribute on every span it sees start."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        span.set_attribute("stamped", True)


async def test_other_code_can_annotate_our_spans_and_they_encode_for_otlp(
    sim_catalog: Catalog, diamond: WorkflowFactory, otel: Otel
) -> None:
    otel.tracer_provider.add_span_processor(Stamping())
    wf = diamond()
    client = Annotating(_simulated(wf, sim_catalog))
    result = await _run(wf, sim_catalog, otel, client, policy="fixed:small:1")
    spans = otel.finished()
    chats = [s for s in spans if s.name.startswith("chat")]
    llm = [c for c in result.calls if c.kind is CallKind.LLM]
    assert chats and len(chats) == len(llm)
    assert all(s.attributes is not None and s.attributes["stamped"] is True for s in spans)
    for chat in chats:
        assert _attrs(chat)["library.note"] == ("a", 1)
        events = [(e.name, dict(e.attributes or {})) for e in chat.events]
        assert events == [("library.event", {"library.size": 3})]
    encoded = encode_spans(spans)
    names = {
        span.name
        for resource in encoded.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    }
    assert names == {s.name for s in spans}


async def test_the_sdks_attribute_limits_apply_to_our_spans(
    sim_catalog: Catalog, diamond: WorkflowFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "5")
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "4")
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    limited = Otel(tracer_provider, spans, MeterProvider(metric_readers=[reader]), reader)
    wf = diamond()
    result = await _run(wf, sim_catalog, limited, _simulated(wf, sim_catalog), policy="fixed:small:1")
    assert result.outcome is Outcome.COMPLETED
    finished = limited.finished()
    assert finished and all(len(_attrs(s)) <= 5 for s in finished)
    assert all(s.dropped_attributes > 0 for s in finished)
    values = [v for s in finished for v in _attrs(s).values()]
    assert any(isinstance(v, str) for v in values)
    assert all(len(v) <= 4 for v in values if isinstance(v, str))
    tracer_provider.shutdown()
    limited.meter_provider.shutdown()


@pytest.mark.parametrize(
    ("sampler", "parent_sampled", "exported"),
    [
        ("parentbased_always_on", True, True),
        ("parentbased_always_on", False, False),
        ("always_on", False, True),
        ("parentbased_traceidratio", True, True),
        ("parentbased_traceidratio", False, False),
    ],
)
async def test_a_run_follows_its_samplers_decision_and_its_parents_trace_state(
    sim_catalog: Catalog, diamond: WorkflowFactory, sampler: str, parent_sampled: bool, exported: bool
) -> None:
    samplers: dict[str, Sampler] = {
        "parentbased_always_on": DEFAULT_ON,  # the default
        "always_on": ALWAYS_ON,
        "parentbased_traceidratio": ParentBasedTraceIdRatio(1.0),  # asked for every span
    }
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(sampler=samplers[sampler])
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    otel = Otel(tracer_provider, spans, MeterProvider(metric_readers=[reader]), reader)
    remote = SpanContext(
        trace_id=0x5EED,
        span_id=0xCA11,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if parent_sampled else TraceFlags.DEFAULT),
        trace_state=TraceState([("vendor", "v1")]),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        wf = diamond()
        result = await _run(wf, sim_catalog, otel, _simulated(wf, sim_catalog), policy="fixed:small:1")
    finally:
        otel_context.detach(token)
        tracer_provider.shutdown()
        otel.meter_provider.shutdown()
    assert result.outcome is Outcome.COMPLETED
    finished = otel.finished()
    if not exported:
        assert finished == []
        return
    assert len(finished) == 1 + len(result.decisions) + len(result.calls)
    assert all(s.context is not None and s.context.trace_id == 0x5EED for s in finished)
    assert all(s.context is not None and s.context.trace_state.get("vendor") == "v1" for s in finished)
    (root,) = [s for s in finished if s.name.startswith("invoke_workflow")]
    assert root.parent == remote
    assert all(s is root or _parent(s, finished) is not None for s in finished)


class HttpxClient:
    """A `ModelClient` that calls an OpenAI-protocol server over HTTP with httpx (as an SDK would)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient()

    async def prepare(self) -> None:
        return None

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        return count_locally(model, messages)

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        body = {"model": request.model.name, "messages": list(request.messages), "stream": True}
        reply = await self.http.post(f"{self.url}/chat/completions", json=body, timeout=10)
        if reply.status_code != 200:
            raise ProviderError(f"HTTP {reply.status_code}", retryable=False, status_code=reply.status_code)
        chunks = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: {")]
        usage = next(c["usage"] for c in chunks if c.get("usage"))
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        return ChatResponse(
            text=text,
            input_tokens=usage["prompt_tokens"],
            output_tokens=usage["completion_tokens"],
            provider="openai",
            model=chunks[0]["model"],
            response_id=chunks[0]["id"],
            simulated_success=True,
        )

    async def aclose(self) -> None:
        await self.http.aclose()


async def test_an_instrumented_http_client_nests_under_the_chat_span(otel: Otel) -> None:
    catalog = Catalog.of(
        ModelSpec(
            name="stub-model",
            litellm_model="openai/stub-model",
            input_price_per_mtok="1.00",
            output_price_per_mtok="2.00",
        )
    )
    wf = Workflow("over-http", inputs=["topic"])
    wf.subtask("ask", LLMAgent(prompt="Say hello about {topic}"), models=["stub-model"], max_tokens=50)
    with serve(ScriptedProvider(script=["ok"])) as stub:
        client = HttpxClient(stub.url)
        HTTPXClientInstrumentor.instrument_client(client.http, tracer_provider=otel.tracer_provider)
        try:
            result = await _run(wf, catalog, otel, client, policy="fixed:stub-model:1")
        finally:
            await client.aclose()
    assert result.outcome is Outcome.COMPLETED
    spans = otel.finished()
    (chat,) = [s for s in spans if s.name.startswith("chat")]
    (http,) = [s for s in spans if s.name == "POST"]
    assert _parent(http, spans) is chat
    status = _attrs(http).get("http.response.status_code", _attrs(http).get("http.status_code"))
    assert http.kind is SpanKind.CLIENT and status == 200
    got = _attrs(chat)
    assert got["gen_ai.provider.name"] == "openai" and got["gen_ai.request.model"] == "stub-model"
    assert got["gen_ai.response.model"] == "stub-model" and got["gen_ai.response.id"] == "chatcmpl-stub"
    assert got["gen_ai.usage.input_tokens"] == 12


def _three_calls(model: BaseChatModel) -> Any:
    """Draft, refine, then a last word asked from a task that starts with an empty context."""

    async def draft(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    async def refine(state: MessagesState) -> dict[str, list[BaseMessage]]:
        request = HumanMessage(content="Make it shorter.")
        return {"messages": [request, await model.ainvoke([*state["messages"], request])]}

    async def last_word(state: MessagesState) -> dict[str, list[BaseMessage]]:
        # As a library might: a task of its own, with none of the caller's context.
        task = asyncio.get_running_loop().create_task(
            model.ainvoke(state["messages"]), context=contextvars.Context()
        )
        return {"messages": [await task]}

    graph = StateGraph(MessagesState)
    graph.add_node("draft", draft)
    graph.add_node("refine", refine)
    graph.add_node("last_word", last_word)
    graph.add_edge(START, "draft")
    graph.add_edge("draft", "refine")
    graph.add_edge("refine", "last_word")
    graph.add_edge("last_word", END)
    return graph.compile()


async def test_a_langgraph_agents_inner_calls_nest_under_its_attempt(
    sim_catalog: Catalog, otel: Otel
) -> None:
    wf = Workflow("graph", inputs=["topic"])
    wf.subtask(
        "answer",
        LangGraphAgent(_three_calls, prompt="Answer about {topic}"),
        models=["small"],
        estimates={"small": estimate(0.99)},
    )
    result = await _run(wf, sim_catalog, otel, _simulated(wf, sim_catalog))
    assert result.outcome is Outcome.COMPLETED
    spans = otel.finished()
    check_tree(result, spans)
    agents = [c for c in result.calls if c.kind is CallKind.AGENT]
    calls = _by_call_id(spans)
    for agent in agents:
        inner = [c for c in result.calls if c.parent_call_id == agent.call_id]
        assert len(inner) == 3
        assert all(_parent(calls[c.call_id], spans) is calls[agent.call_id] for c in inner)


def test_tracing_is_off_by_default_and_on_from_the_otel_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for var in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_METRICS_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    ):
        monkeypatch.delenv(var, raising=False)

    def loaded() -> tuple[str | None, str | None]:
        settings = load_settings(cwd=tmp_path)
        return settings.tracing, settings.otel_metrics

    assert loaded() == (None, None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    assert loaded() == ("otlp", None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert loaded() == ("otlp", "otlp")
    monkeypatch.setenv("OTEL_METRICS_EXPORTER", "none")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    assert loaded() == ("console", None)
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert loaded() == (None, None)
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigError, match="`OTEL_TRACES_EXPORTER` = `zipkin` is not an exporter"):
        load_settings(cwd=tmp_path)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigError, match="OTLP over HTTP only; set it to `http/protobuf`"):
        load_settings(cwd=tmp_path)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert loaded() == ("otlp", None)


def test_telemetry_from_settings_builds_nothing_when_off_and_flushes_when_on() -> None:
    off = telemetry_from_settings(Settings())
    assert off.interceptors == []
    off.shutdown()
    on = telemetry_from_settings(Settings(tracing="console", otel_metrics="console"))
    (interceptor,) = on.interceptors
    assert isinstance(interceptor, TracingInterceptor)
    on.shutdown()
    on.shutdown()  # idempotent
