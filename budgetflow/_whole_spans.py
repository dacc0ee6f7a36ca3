"""Spans started for the OpenTelemetry SDK without its per-attribute cost.

The SDK's own span validates and copies every attribute as it is set, behind a lock,
and copies the whole span again when it ends: about 35 µs for a `chat` span with its
fourteen attributes, more than a third of an instant attempt. budgetflow's spans carry
values of known types (`str`, `bool`, `int`, `float`, tuples of `str`) that need no
cleaning, so `SpanStarter` builds them as the SDK would, with the tracer's own sampler,
id generator, resource and span processors, but keeps their attributes in a plain dict
and hands the span itself to the processors when it ends (about 4 µs per span). The
SDK's stock samplers (`always_on`, `always_off`, `parentbased_always_on`/`_off`) are
not called: what they decide is known. The SDK's attribute count and length limits
apply as they do to its own spans.

A `WholeSpan` is a full `opentelemetry.trace.Span`: other code holding it (a span
processor's `on_start`, an instrumented library reading the current span) may set
attributes, add events and links, and rename it; what they set is cleaned by the
SDK's own `BoundedAttributes`. A tracer that is not the SDK's (a no-op, a proxy, another implementation)
starts its own spans.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk import version as sdk_version
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, sampling
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)
from opentelemetry.util import types

__all__ = ["SpanStarter", "WholeSpan", "set_known"]

_UNSET = Status(StatusCode.UNSET)
_PARENT_BASED = (sampling.DEFAULT_ON, sampling.DEFAULT_OFF)
"""The SDK's default samplers (`parentbased_always_on`/`_off`): a child follows its parent."""
_STATIC = (sampling.ALWAYS_ON, sampling.ALWAYS_OFF)
"""The SDK's `always_on`/`always_off` samplers: one decision for every span."""
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)
"""The W3C level-2 random-trace-id flag, where the API has it."""
_FLAGS = (
    (TraceFlags(TraceFlags.DEFAULT), TraceFlags(TraceFlags.DEFAULT | _RANDOM)),
    (TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.SAMPLED | _RANDOM)),
)
"""A span's trace flags by whether it is sampled and whether its trace id is random (made once)."""


_BUILT_FOR = frozenset({(1, 45)})
"""The SDK releases whose tracer and span internals this module is known to match; with any
other, spans are started by the tracer itself (correct, only slower)."""
_SDK_MINOR = tuple(int(part) for part in sdk_version.__version__.split(".")[:2])


class SpanStarter:
    """Starts spans on one tracer: whole spans on the SDK's, the tracer's own on any other."""

    __slots__ = (
        "_count",
        "_ids",
        "_limit",
        "_processor",
        "_resource",
        "_sampler",
        "_scope",
        "_sdk",
        "_tracer",
    )

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._sdk = isinstance(tracer, sdk_trace.Tracer) and _SDK_MINOR in _BUILT_FOR
        if self._sdk:
            assert isinstance(tracer, sdk_trace.Tracer)
            self._sampler = tracer.sampler
            self._ids = tracer.id_generator
            self._processor = tracer.span_processor
            self._resource = tracer.resource
            info = tracer.instrumentation_info
            self._scope = InstrumentationScope(info.name, info.version, info.schema_url)
            limits = SpanLimits()  # from `OTEL_[SPAN_]ATTRIBUTE_*_LIMIT`, as the SDK reads them
            self._limit = limits.max_span_attribute_length
            self._count = limits.max_span_attributes

    def start(
        self,
        name: str,
        kind: SpanKind,
        attributes: dict[str, Any],
        parent: Span | None,
    ) -> Span:
        """A span named `name`, child of `parent` (`None`: of the current span, if any).

        `attributes` become the span's and must hold valid attribute values only; the span
        owns the dict from now on. The span is not made current.
        """
        current = trace.get_current_span()
        context = None  # the current one, when it has the parent
        if parent is None:
            parent = current
        elif parent is not current:
            context = trace.set_span_in_context(parent)
        if not self._sdk:
            return self._tracer.start_span(name, context=context, kind=kind, attributes=attributes)
        parent_span = parent.get_span_context()
        if parent_span.is_valid:
            trace_id, random_id = parent_span.trace_id, parent_span.trace_flags & _RANDOM
            parent_or_none: SpanContext | None = parent_span
        else:
            trace_id, random_id, parent_or_none = self._ids.generate_trace_id(), 0, None
            if _RANDOM and self._ids.is_trace_id_random():
                random_id = _RANDOM
        # What the SDK's stock samplers decide, without asking them (2 µs a span): the
        # decision, the parent's trace state and the attributes as given.
        trace_state: TraceState | None
        if self._sampler in _STATIC:
            decision = Decision.RECORD_AND_SAMPLE if self._sampler is sampling.ALWAYS_ON else Decision.DROP
            trace_state = None if parent_or_none is None else parent_span.trace_state
        elif parent_or_none is not None and self._sampler in _PARENT_BASED:
            sampled_flag = parent_span.trace_flags.sampled
            decision = Decision.RECORD_AND_SAMPLE if sampled_flag else Decision.DROP
            trace_state = parent_span.trace_state
        else:
            sampled = self._sampler.should_sample(context, trace_id, name, kind, attributes, ())
            decision, trace_state = sampled.decision, sampled.trace_state
            given = sampled.attributes  # the span's attributes, as the SDK has it
            if decision is not Decision.DROP and (given is None or given.keys() != attributes.keys()):
                attributes = dict(given or {})
        flags = _FLAGS[decision is Decision.RECORD_AND_SAMPLE][random_id != 0]
        span_context = SpanContext(trace_id, self._ids.generate_span_id(), False, flags, trace_state)
        if decision is Decision.DROP:
            return NonRecordingSpan(span_context)
        if self._limit is not None:
            attributes = {key: _truncated(value, self._limit) for key, value in attributes.items()}
        span = WholeSpan(name, span_context, parent_or_none, kind, attributes, self)
        if self._count is not None and len(attributes) > self._count:
            span._bound(self._count)
        self._processor.on_start(cast(sdk_trace.Span, span), parent_context=context)
        return span

    def _ended(self, span: WholeSpan) -> None:
        self._processor.on_end(span)


class WholeSpan(Span, ReadableSpan):
    """A recording span of the SDK's pipeline whose attributes are a plain dict.

    Only `SpanStarter` makes them. Once ended it is read-only, as the SDK's spans are,
    and is itself what the span processors get.
    """

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
        starter: SpanStarter,
    ) -> None:
        ReadableSpan.__init__(
            self,
            name,
            context=context,
            parent=parent,
            resource=starter._resource,
            attributes=attributes,
            events=(),
            links=(),
            kind=kind,
            status=_UNSET,
            start_time=time.time_ns(),
            instrumentation_scope=starter._scope,
        )
        self._starter: SpanStarter | None = starter
        self._owned = attributes
        self._dropped = 0

    @property
    def dropped_attributes(self) -> int:
        return self._dropped

    def _bound(self, count: int) -> None:
        """Drop the oldest attributes beyond `count`, as the SDK does."""
        owned = self._owned
        excess = len(owned) - count
        if excess > 0:
            for key in list(owned)[:excess]:
                del owned[key]
            self._dropped += excess

    def _put(self, attributes: Mapping[str, Any]) -> None:
        starter = self._starter
        if starter is not None:
            self._owned.update(attributes)
            if starter._count is not None and len(self._owned) > starter._count:
                self._bound(starter._count)

    # ---- opentelemetry.trace.Span ------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return cast(SpanContext, self._context)

    def is_recording(self) -> bool:
        return self._starter is not None

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self._starter is not None:
            self._put(_cleaned(attributes, self._starter._limit))

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._starter is not None:
            self._put(_cleaned({key: value}, self._starter._limit))

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._starter is not None:
            cleaned = _cleaned(attributes or {}, self._starter._limit)
            self._events = (*self._events, Event(name, cleaned, timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._starter is not None and context.is_valid:
            self._links = (*self._links, Link(context, attributes))

    def update_name(self, name: str) -> None:
        if self._starter is not None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._starter is None or self._status.status_code is StatusCode.OK:
            return  # an OK status is final, as the SDK has it
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        event: dict[str, types.AttributeValue] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        event.update(attributes or {})
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        starter = self._starter
        if starter is None:
            return
        self._starter = None
        self._end_time = end_time if end_time is not None else time.time_ns()
        starter._ended(self)


def set_known(span: Span, attributes: dict[str, Any]) -> None:
    """Set attributes holding valid attribute values only (no cleaning on a `WholeSpan`)."""
    if type(span) is WholeSpan:
        if span._starter is not None:
            limit = span._starter._limit
            if limit is not None:
                attributes = {key: _truncated(value, limit) for key, value in attributes.items()}
            span._put(attributes)
    else:
        span.set_attributes(attributes)


def _truncated(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, tuple):
        return tuple(v[:limit] if isinstance(v, str) else v for v in value)
    return value


def _cleaned(attributes: Mapping[str, Any], limit: int | None) -> dict[str, Any]:
    """Attributes set by other code, validated and made immutable as the SDK does it."""
    return dict(BoundedAttributes(attributes=attributes, max_value_len=limit))
