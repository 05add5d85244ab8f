"""The one way into :mod:`spark_ml.worker.tracing`: it is imported only when ``SPARK_ML_TRACING=on``.

The OpenTelemetry SDK and its OTLP exporter are optional dependencies; a process with tracing off never imports
them, and one with tracing on but without them exits with a message that says what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spark_ml.worker.settings import Settings

if TYPE_CHECKING:
    from spark_ml.worker.tracing import Tracing

__all__ = ["tracing_for"]


def tracing_for(settings: Settings, service_name: str) -> Tracing | None:
    """The process's tracing per ``settings`` (None when off), or a clear exit when the SDK is missing."""
    if settings.tracing != "on":
        return None
    try:
        from spark_ml.worker.tracing import tracing_from
    except ImportError as exc:
        raise SystemExit(
            f"SPARK_ML_TRACING=on needs the OpenTelemetry SDK and its OTLP exporter ({exc.name} is missing): "
            "pip install 'spark-ml[otel]'"
        ) from exc
    return tracing_from(settings, service_name)
