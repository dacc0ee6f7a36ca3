"""OpenTelemetry traces and GenAI client metrics of runs, per the GenAI semantic conventions.

`TracingInterceptor` is an `orchestrator.interceptors.Interceptor`: its spans are
opened in the task doing the work and are current while it runs, so that what
litellm, httpx or any instrumented library does inside a model call nests under
that call's span. The span tree is the calling tree:

```text
invoke_workflow {workflow}          a run                       INTERNAL
├── plan                            a policy decision           INTERNAL
└── invoke_agent {subtask}          an attempt (its agent span) INTERNAL
    └── chat {model}                one try of one model call   CLIENT
        └── POST ...                (an instrumented HTTP client's own span)
```

Names and attributes follow the OpenTelemetry semantic conventions for generative
AI as of version 1.41.0 (`SEMCONV_VERSION`), which are in development status and
change between versions; what has no standard attribute (money, budgetflow's ids)
is under `budgetflow.`. docs/observability.md lists every span and attribute.

Tracing is off by default. `budgetflow run` turns it on from the standard `OTEL_*`
variables (`budgetflow.settings`, `telemetry_from_settings`); a program using
`budgetflow.arun` passes `interceptors=[TracingInterceptor()]`, which uses the
tracer and meter providers it is given, or else the global ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from budgetflow._whole_spans import SpanStarter, set_known
from orchestrator.catalog import ModelSpec
from orchestrator.errors import ProviderError
from orchestrator.interceptors import AttemptInfo, CallInfo, DecisionInfo, Interceptor, RunInfo
from orchestrator.records import AttemptStatus, CallStatus, Outcome

if TYPE_CHECKING:
    from budgetflow.settings import Settings

__all__ = [
    "DURATION_BUCKETS_S",
    "SEMCONV_SCHEMA_URL",
    "SEMCONV_VERSION",
    "TOKEN_BUCKETS",
    "Telemetry",
    "TracingInterceptor",
    "error_type",
    "provider_name",
    "request_model",
    "telemetry_from_settings",
]

SEMCONV_VERSION = "1.41.0"
"""The OpenTelemetry semantic conventions version followed (GenAI: development status)."""
SEMCONV_SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
"""Its schema URL, set on the instrumentation scope."""
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
"""`gen_ai.client.token.usage` bucket boundaries, as the conventions specify."""
DURATION_BUCKETS_S = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
"""`gen_ai.client.operation.duration` bucket boundaries (seconds), as the conventions specify."""

_SCOPE = "budgetflow"
_ALLOCATION_JSON = json.JSONEncoder(sort_keys=True)
"""Encodes a `plan` span's allocation (made once: `json.dumps(..., sort_keys=True)` builds one a call)."""
_ALLOCATION_LIMIT = 50
"""Ready subtasks listed on a `plan` span (the count is always there)."""

_PROVIDERS = {
    "anthropic": "anthropic",
    "azure": "azure.ai.openai",
    "azure_ai": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "cohere": "cohere",
    "cohere_chat": "cohere",
    "deepseek": "deepseek",
    "gemini": "gcp.gemini",
    "groq": "groq",
    "mistral": "mistral_ai",
    "openai": "openai",
    "perplexity": "perplexity",
    "vertex_ai": "gcp.vertex_ai",
    "watsonx": "ibm.watsonx.ai",
    "xai": "x_ai",
}
"""litellm provider names whose `gen_ai.provider.name` is a well-known value of the conventions."""


def provider_name(provider: str) -> str:
    """`gen_ai.provider.name` for a litellm provider: the conventions' value, or litellm's name."""
    return _PROVIDERS.get(provider, provider)


def request_model(spec: ModelSpec) -> str:
    """`gen_ai.request.model`: the model name the provider is asked for (litellm's string
    without its provider prefix, e.g. `gpt-4o-mini` for `openai/gpt-4o-mini`)."""
    model = spec.litellm_model
    return model.split("/", 1)[1] if "/" in model else model


def error_type(error: BaseException) -> str:
    """`error.type` of a failure: the provider's HTTP status code when it gave one, `cancelled`
    for a cancelled call, else the exception's class name (`ProviderError`,
    `ReplicaUnavailable`, `DeadlineExceeded`, `BudgetExhausted`, ...)."""
    if isinstance(error, ProviderError) and error.status_code is not None:
        return str(error.status_code)
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return type(error).__qualname__


class TracingInterceptor(Interceptor):
    """Spans for runs, decisions, attempts and model calls, and the GenAI client metrics.

    The span of a model call is current while the provider is called. Parents follow the
    calling tree, by id, not only the current context: a call's span is the child of the
    span of its `parent_call_id`, an attempt's and a decision's of their run's, even when
    an agent's code loses the context (a thread, a fresh event loop).

    Hooks never block: spans go to the tracer provider's span processor (batched and
    exported on its own thread by the SDK's `BatchSpanProcessor`). On the SDK's tracer
    provider, spans are built whole (`budgetflow._whole_spans`): the provider's sampler,
    ids, resource and processors, without the SDK's per-attribute validation.
    """

    def __init__(
        self,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        """Args:
        tracer_provider: where spans go; default: the global one (a no-op until the
            application sets one).
        meter_provider: where `gen_ai.client.token.usage` and
            `gen_ai.client.operation.duration` go; default: the global one.
        """
        from budgetflow import __version__

        tracer_provider = tracer_provider or trace.get_tracer_provider()
        meter_provider = meter_provider or metrics.get_meter_provider()
        self._spans = SpanStarter(
            tracer_provider.get_tracer(_SCOPE, __version__, schema_url=SEMCONV_SCHEMA_URL)
        )
        meter = meter_provider.get_meter(_SCOPE, __version__, schema_url=SEMCONV_SCHEMA_URL)
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self._metrics = not isinstance(meter_provider, metrics.NoOpMeterProvider)
        self._open: dict[str, Span] = {}
        """Spans in progress that others may be children of: runs by run id, attempts by span id."""
        self._model_names: dict[str, tuple[str, str]] = {}
        self._model_specs: dict[str, ModelSpec] = {}

    # ---- hooks -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def run(self, info: RunInfo) -> Iterator[None]:
        """`invoke_workflow {workflow}` around the run."""
        run = info.run
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": run.workflow,
            "budgetflow.run_id": run.run_id,
            "budgetflow.policy": run.policy,
            "budgetflow.budget.usd": float(run.budget_usd),
            "budgetflow.seed": run.seed,
            "budgetflow.subtasks": len(info.dag.subtasks),
            "budgetflow.simulated": run.simulated,
        }
        if run.deadline_s is not None:
            attributes["budgetflow.deadline_s"] = run.deadline_s
        with self._span(f"invoke_workflow {run.workflow}", SpanKind.INTERNAL, attributes, None) as span:
            with self._registered(run.run_id, span):
                yield
            final = info.finished
            if final is None:
                return
            set_known(
                span,
                {
                    "budgetflow.outcome": final.outcome.value,
                    "budgetflow.cost.usd": float(final.spent_usd),
                    "budgetflow.overrun.usd": float(final.overrun_usd),
                    "budgetflow.makespan_s": final.makespan_s or 0.0,
                },
            )
            if final.outcome is not Outcome.COMPLETED:
                _failed(span, final.outcome.value, final.reason)

    def decision(self, info: DecisionInfo) -> _PlanSpan:
        """`plan` around one decision, with the allocation it chose."""
        return _PlanSpan(self, info)

    def attempt(self, info: AttemptInfo) -> _AttemptSpan:
        """`invoke_agent {subtask}` around one attempt (its agent span in the calling tree)."""
        return _AttemptSpan(self, info)

    def call(self, info: CallInfo) -> _ChatSpan:
        """`chat {model}` (CLIENT) around the provider call; current while it runs."""
        return _ChatSpan(self, info)

    # ---- helpers ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _span(
        self, name: str, kind: SpanKind, attributes: dict[str, Any], parent: Span | None
    ) -> Iterator[Span]:
        """A span current around the block, failed with the exception the block raises."""
        span = self._spans.start(name, kind, attributes, parent)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            yield span
        except BaseException as exc:
            if isinstance(exc, Exception):
                span.record_exception(exc)
                _failed(span, error_type(exc), str(exc) or type(exc).__name__)
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _names(self, spec: ModelSpec) -> tuple[str, str]:
        """`gen_ai.request.model` and `gen_ai.provider.name` of a model (cached: every call asks)."""
        names = self._model_names.get(spec.name)
        if names is None or self._model_specs.get(spec.name) is not spec:
            names = (request_model(spec), provider_name(spec.provider))
            self._model_names[spec.name], self._model_specs[spec.name] = names, spec
        return names

    @contextlib.contextmanager
    def _registered(self, key: str, span: Span) -> Iterator[None]:
        self._open[key] = span
        try:
            yield
        finally:
            self._open.pop(key, None)


class _Current:
    """A span started and made current in the task doing the work; ended when the work is.

    A class rather than a generator: a hook runs once per decision, attempt and call, and the
    generator machinery would cost more than the span's own bookkeeping.
    """

    __slots__ = ("_span", "_token", "_tracing")

    def __init__(self, tracing: TracingInterceptor) -> None:
        self._tracing = tracing

    def _start(self, name: str, kind: SpanKind, attributes: dict[str, Any], parent: Span | None) -> Span:
        span = self._tracing._spans.start(name, kind, attributes, parent)
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def _end(self, error: BaseException | None) -> None:
        span = self._span
        try:
            if isinstance(error, Exception):
                span.record_exception(error)
                _failed(span, error_type(error), str(error) or type(error).__name__)
        finally:
            otel_context.detach(self._token)
            span.end()


class _PlanSpan(_Current):
    __slots__ = ("_info",)

    def __init__(self, tracing: TracingInterceptor, info: DecisionInfo) -> None:
        super().__init__(tracing)
        self._info = info

    def __enter__(self) -> None:
        info = self._info
        attributes: dict[str, Any] = {
            "budgetflow.run_id": info.run_id,
            "budgetflow.policy": info.policy,
            "budgetflow.decision.index": info.index,
            "budgetflow.decision.ready": tuple(info.ready[:_ALLOCATION_LIMIT]),
            "budgetflow.decision.ready_count": len(info.ready),
        }
        self._start("plan", SpanKind.INTERNAL, attributes, self._tracing._open.get(info.run_id))

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        try:
            decision = self._info.finished
            if error is None and decision is not None and self._span.is_recording():
                allocation = decision.allocation
                state = decision.state
                done: dict[str, Any] = {
                    "budgetflow.decision.allocation": _ALLOCATION_JSON.encode(allocation),
                    "budgetflow.decision.samples": sum(int(a.get("samples", 0)) for a in allocation.values()),
                    "budgetflow.decision.decide_ms": decision.decide_ms,
                }
                if isinstance(state.get("remaining_budget_usd"), int | float):
                    done["budgetflow.remaining_budget.usd"] = float(state["remaining_budget_usd"])
                if isinstance(state.get("remaining_time_s"), int | float):
                    done["budgetflow.remaining_time_s"] = float(state["remaining_time_s"])
                if "repaired" in decision.info:
                    done["budgetflow.decision.repaired"] = True
                set_known(self._span, done)
        finally:
            self._end(error)


class _AttemptSpan(_Current):
    __slots__ = ("_info",)

    def __init__(self, tracing: TracingInterceptor, info: AttemptInfo) -> None:
        super().__init__(tracing)
        self._info = info

    def __enter__(self) -> None:
        info = self._info
        attempt = info.attempt
        model, provider = self._tracing._names(info.model)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.provider.name": provider,
            "gen_ai.agent.name": attempt.subtask,
            "gen_ai.request.model": model,
            "budgetflow.model": info.model.name,
            "budgetflow.attempt_id": attempt.attempt_id,
            "budgetflow.call_id": info.span_id,
            "budgetflow.batch": attempt.batch,
            "budgetflow.sample": attempt.sample,
        }
        opened = self._tracing._open
        span = self._start(
            f"invoke_agent {attempt.subtask}", SpanKind.INTERNAL, attributes, opened.get(attempt.run_id)
        )
        opened[info.span_id] = span

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        info, span = self._info, self._span
        try:
            self._tracing._open.pop(info.span_id, None)
            if error is None and span.is_recording():
                status = info.status
                set_known(
                    span,
                    {
                        "budgetflow.cost.usd": float(info.spent_usd),
                        "budgetflow.attempt.status": "" if status is None else status.value,
                    },
                )
                if status is AttemptStatus.ERROR:
                    _failed(span, "_OTHER" if info.error is None else error_type(info.error), info.detail)
                elif status is AttemptStatus.CANCELLED:
                    _failed(span, "cancelled", info.detail)
        finally:
            self._end(error)


class _ChatSpan(_Current):
    __slots__ = ("_info", "_model", "_provider")

    def __init__(self, tracing: TracingInterceptor, info: CallInfo) -> None:
        super().__init__(tracing)
        self._info = info

    def __enter__(self) -> None:
        info = self._info
        request = info.request
        spec = request.model
        self._model, self._provider = model, provider = self._tracing._names(spec)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": model,
            "gen_ai.request.max_tokens": request.max_tokens,
            "budgetflow.call_id": info.call_id,
            "budgetflow.retry": info.retry,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.seed is not None:
            attributes["gen_ai.request.seed"] = request.seed
        if spec.api_base:
            _server(spec.api_base, attributes)
        self._start(
            f"chat {model}", SpanKind.CLIENT, attributes, self._tracing._open.get(info.parent_call_id)
        )

    def __exit__(self, exc_type: object, error: BaseException | None, tb: object) -> None:
        try:
            if error is None:
                self._finished()
        finally:
            self._end(error)

    def _finished(self) -> None:
        info, span, tracing = self._info, self._span, self._tracing
        call = info.finished
        if call is None:
            return
        response = info.response
        answered_by = (response.model if response is not None else None) or self._model
        failed = None
        if call.status is not CallStatus.OK:
            failed = "_OTHER" if info.error is None else error_type(info.error)
        if span.is_recording():  # a span the sampler dropped needs no attributes
            done: dict[str, Any] = {
                "gen_ai.response.model": answered_by,
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": call.cached_tokens,
                "budgetflow.cost.usd": float(call.cost_usd),
                "budgetflow.reserved.usd": float(call.reserved_usd),
            }
            if call.finish_reason:
                done["gen_ai.response.finish_reasons"] = (call.finish_reason,)
            if call.response_id:
                done["gen_ai.response.id"] = call.response_id
            if call.ttft_s is not None:
                done["gen_ai.response.time_to_first_chunk"] = call.ttft_s
            if call.replica:
                done["budgetflow.replica"] = call.replica
            if failed is not None:
                done["error.type"] = failed
                span.set_status(Status(StatusCode.ERROR, (call.error or failed)[:500]))
            set_known(span, done)
        if tracing._metrics:
            measured = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": self._provider,
                "gen_ai.request.model": self._model,
                "gen_ai.response.model": answered_by,
            }
            if failed is not None:
                measured["error.type"] = failed
            if call.status is CallStatus.OK:
                tracing._tokens.record(call.input_tokens, {**measured, "gen_ai.token.type": "input"})
                tracing._tokens.record(call.output_tokens, {**measured, "gen_ai.token.type": "output"})
            tracing._duration.record(call.latency_s, measured)


def _failed(span: Span, kind: str, description: str | None) -> None:
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, (description or kind)[:500]))


def _server(api_base: str, attributes: dict[str, Any]) -> None:
    parts = urlsplit(api_base)
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80 if parts.scheme == "http" else None)
        if port is not None:
            attributes["server.port"] = port


# ---- from settings -------------------------------------------------------------------------------


@dataclass(kw_only=True)
class Telemetry:
    """The interceptors that settings ask for, and the providers behind them."""

    interceptors: list[Interceptor] = field(default_factory=list)
    """What to pass to `arun(interceptors=...)` (empty when tracing and metrics are off)."""
    _closers: list[Callable[[], object]] = field(default_factory=list)

    def shutdown(self) -> None:
        """Export what is buffered and stop the providers (blocks: run it on a thread)."""
        while self._closers:
            self._closers.pop()()


def telemetry_from_settings(settings: Settings) -> Telemetry:
    """OpenTelemetry providers exporting where the settings say, and a `TracingInterceptor` on them.

    Tracing and metrics are off unless `settings.tracing` / `settings.otel_metrics` name an
    exporter (`otlp` or `console`; see `budgetflow.settings`). The OTLP exporters and the
    resource read the standard `OTEL_*` variables themselves (endpoint, headers, timeout,
    service name, resource attributes); `service.name` is `budgetflow` unless set.
    """
    if settings.tracing is None and settings.otel_metrics is None:
        return Telemetry()
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "budgetflow"}))
    closers: list[Callable[[], object]] = []
    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    if settings.tracing is not None:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

        span_exporter: SpanExporter
        if settings.tracing == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            span_exporter = OTLPSpanExporter()
        else:
            span_exporter = ConsoleSpanExporter()
        sdk_tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        sdk_tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        closers.append(sdk_tracer_provider.shutdown)
        tracer_provider = sdk_tracer_provider
    if settings.otel_metrics is not None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            ConsoleMetricExporter,
            MetricExporter,
            PeriodicExportingMetricReader,
        )

        metric_exporter: MetricExporter
        if settings.otel_metrics == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            metric_exporter = OTLPMetricExporter()
        else:
            metric_exporter = ConsoleMetricExporter()
        sdk_meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(metric_exporter)],
            shutdown_on_exit=False,
        )
        closers.append(sdk_meter_provider.shutdown)
        meter_provider = sdk_meter_provider
    interceptor = TracingInterceptor(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return Telemetry(interceptors=[interceptor], _closers=closers)
