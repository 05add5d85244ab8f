"""Tracing for tests: an SDK provider whose spans land in memory, as the worker and the gateway make them."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spark_ml.core.tracecontext import format_traceparent, parse_traceparent
from spark_ml.worker.tracing import Tracing

__all__ = ["Recorded", "parent_of", "trace_of", "traceparent"]


class Recorded:
    """A :class:`Tracing` over an in-memory exporter, and what it recorded."""

    def __init__(self, max_links: int = 256) -> None:
        self.exporter = InMemorySpanExporter()
        # Room for a link per snapshot of a whole batch, as tracing_from makes it (the SDK's default is 128).
        provider = TracerProvider(span_limits=SpanLimits(max_links=max_links))
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(provider)

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]


def trace_of(traceparent: str | None) -> int:
    parsed = parse_traceparent(traceparent)
    assert parsed is not None, f"not a traceparent: {traceparent!r}"
    return parsed[0]


def parent_of(traceparent: str | None) -> int:
    parsed = parse_traceparent(traceparent)
    assert parsed is not None, f"not a traceparent: {traceparent!r}"
    return parsed[1]


def traceparent(trace_id: int, span_id: int) -> str:
    return format_traceparent(trace_id, span_id, 1)
