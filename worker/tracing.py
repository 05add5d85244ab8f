"""OpenTelemetry tracing, on with ``SPARK_ML_TRACING=on`` (off by default); W3C ``traceparent`` in message headers.

Import this module only when tracing is on: it imports the OpenTelemetry SDK (the ``otel`` dependencies), which
the serving install does not need. With tracing off nothing here runs, and a ``traceparent`` that a snapshot
carries is copied unchanged onto its prediction and its dead letter (:mod:`spark_ml.worker.pipeline.stream`).

Spans (all from the tracer ``spark-ml``):

- ``process market.snapshot`` (CONSUMER), one per micro-batch, from scoring to the handing of the predictions to
  the connection, with a link to the ``traceparent`` of every snapshot of the batch that carried one. A batch
  whose traced snapshots all belong to one trace is a child of that context, so a lone snapshot's trace shows
  it. Each prediction leaves with the batch span as its parent when the batch span is in its trace or the
  snapshot had none, else with its snapshot's own ``traceparent``: the trace id always goes on.
- ``publish ml.dlq.snapshot`` (PRODUCER), one per dead letter, child of the refused message's context, with
  the reason; the dead letter carries it.
- ``ml.predict`` (SERVER) per request, child of the request's ``traceparent``; a request handed to the
  partition's owner carries the span's context, so the owner's ``ml.predict`` span is its child.
- ``POST /ml/predict`` (SERVER) in the HTTP gateway, child of the caller's ``traceparent``; the NATS request
  carries it, so gateway, forwarding worker and owner are one trace.

Export: OTLP over HTTP/protobuf, configured as every OpenTelemetry SDK is, by the standard variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``/``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``_HEADERS``, ``_TIMEOUT``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``); these the SDK
reads itself. ``OTEL_SDK_DISABLED=true`` turns tracing off whatever ``SPARK_ML_TRACING`` says, and
``OTEL_TRACES_EXPORTER`` picks ``otlp`` (the default), ``console`` or ``none`` (see :class:`Settings`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanLimits
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TracerProvider,
    get_current_span,
    set_span_in_context,
)
from opentelemetry.util.types import AttributeValue

from spark_ml.core import subjects
from spark_ml.core.codec import Snapshot
from spark_ml.core.tracecontext import format_traceparent, parse_traceparent
from spark_ml.worker.settings import Settings

__all__ = ["Tracing", "tracing_from", "traceparent_of"]

_BATCH_SPAN = f"process {subjects.SNAPSHOT}"
_DLQ_SPAN = f"publish {subjects.DLQ}"


def _version() -> str:
    try:
        return version("spark-ml")
    except PackageNotFoundError:
        return "0.0.0"


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` that makes a message's consumer a child of ``span`` (None for an invalid span)."""
    sc = span.get_span_context()
    if not sc.is_valid:
        return None
    return format_traceparent(sc.trace_id, sc.span_id, int(sc.trace_flags))


def _remote(traceparent: str | None) -> SpanContext | None:
    parsed = parse_traceparent(traceparent)
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags & 0xFF))


def _context(parent: SpanContext | None) -> Context:
    """A context whose parent is ``parent``, or an empty one: a new root, never whatever span happens to be current."""
    return set_span_in_context(NonRecordingSpan(parent), Context()) if parent is not None else Context()


class Tracing:
    """The spans of one process, from ``provider`` (the SDK's, built by :func:`tracing_from`; tests pass one
    with an in-memory exporter).

    Args:
        provider: where spans go.
        own_provider: :meth:`shutdown` shuts ``provider`` down (flushing what is buffered).
    """

    def __init__(self, provider: TracerProvider, *, own_provider: bool = False) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("spark-ml", _version())
        self._own = own_provider

    def shutdown(self) -> None:
        """Flush and stop the exporter (when this object made the provider)."""
        if self._own and isinstance(self.provider, SdkTracerProvider):
            self.provider.shutdown()

    # ---- the stream ------------------------------------------------------------------------------

    def batch_span(self, batch: Sequence[Snapshot], traced: int, model_version: str) -> Span:
        """The span of one micro-batch, linked to every snapshot's context (``traced``: how many carry one)."""
        links: list[Link] = []
        if traced:
            for snap in batch:
                sc = _remote(snap.trace)
                if sc is not None:
                    links.append(Link(sc))
        parent = (
            links[0].context
            if links and all(ln.context.trace_id == links[0].context.trace_id for ln in links)
            else None
        )
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": subjects.SNAPSHOT,
            "messaging.batch.message_count": len(batch),
            "spark_ml.model_version": model_version,
        }
        return self.tracer.start_span(
            _BATCH_SPAN, _context(parent), kind=SpanKind.CONSUMER, links=links, attributes=attributes
        )

    @staticmethod
    def outgoing(span: Span, snaps: Sequence[Snapshot]) -> list[str | None]:
        """The ``traceparent`` of each prediction of a batch: the batch span when it is in the snapshot's trace
        or the snapshot had none, else the snapshot's own (its trace id goes on either way)."""
        mine = traceparent_of(span)
        if mine is None:
            return [s.trace for s in snaps]
        trace_id = mine[3:35]
        return [mine if s.trace is None or s.trace[3:35] == trace_id else s.trace for s in snaps]

    def dead_letter(self, trace: str | None, reason: str, subject: str) -> str | None:
        """A span for one dead letter (child of the refused message's context); returns its ``traceparent``."""
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "nats",
            "messaging.operation.type": "send",
            "messaging.destination.name": subjects.DLQ,
            "spark_ml.reason": reason,
            "spark_ml.subject": subject,
        }
        span = self.tracer.start_span(
            _DLQ_SPAN, _context(_remote(trace)), kind=SpanKind.PRODUCER, attributes=attributes
        )
        span.set_status(Status(StatusCode.ERROR, reason))
        span.end()
        return traceparent_of(span)

    # ---- request-reply -----------------------------------------------------------------------------

    @staticmethod
    def current_traceparent() -> str | None:
        """The ``traceparent`` of the span current in this task (None when there is none)."""
        return traceparent_of(get_current_span())

    @contextlib.contextmanager
    def server_span(self, name: str, parent: str | None, attributes: Mapping[str, AttributeValue]) -> Iterator[Span]:
        """A SERVER span, current inside the block (tasks started in it inherit it), child of ``parent``."""
        with self.tracer.start_as_current_span(
            name, _context(_remote(parent)), kind=SpanKind.SERVER, attributes=dict(attributes)
        ) as span:
            yield span


def tracing_from(settings: Settings, service_name: str) -> Tracing | None:
    """The process's tracing per ``settings`` (None when off): an SDK provider exporting through OTLP/HTTP (or
    the console), configured by the standard ``OTEL_*`` variables."""
    if settings.tracing != "on" or settings.otel_sdk_disabled:
        return None
    exporter: SpanExporter | None
    kind = settings.otel_traces_exporter
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif kind == "console":
        exporter = ConsoleSpanExporter()
    else:
        exporter = None
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over this default (Resource.create reads them).
    resource = Resource.create({SERVICE_NAME: service_name}).merge(Resource.create())
    # A batch span links to every traced snapshot of the batch: room for a whole batch (the SDK keeps 128).
    provider = SdkTracerProvider(resource=resource, span_limits=SpanLimits(max_links=max(128, settings.batch_max)))
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider, own_provider=True)
