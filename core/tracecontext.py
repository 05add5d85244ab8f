"""W3C Trace Context (``traceparent``) as it travels in message headers: checked, read and written.

A ``traceparent`` is ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``. Only a well-formed one is
carried on: a value a publisher wrote is copied into the headers of what spark-ml publishes, so anything else
(a line break, the wrong length, the all-zero ids the W3C text forbids) is dropped as if it were absent.
"""

from __future__ import annotations

import re

__all__ = ["TRACEPARENT", "TraceParent", "clean_traceparent", "format_traceparent", "parse_traceparent"]

TRACEPARENT = "traceparent"

_FORM = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

TraceParent = tuple[int, int, int]
"""``(trace_id, parent span id, flags)``."""


def clean_traceparent(value: str | None) -> str | None:
    """``value`` without surrounding blanks when it is a well-formed ``traceparent``, else None (what
    :func:`parse_traceparent` accepts, checked without converting the ids: this runs per traced snapshot)."""
    if value is None or len(value) > 64:
        return None
    if len(value) != 55:
        value = value.strip()
    if _FORM.fullmatch(value) is None or value[:2] == "ff" or value[3:35] == _ZERO_TRACE or value[36:52] == _ZERO_SPAN:
        return None
    return value


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The ids and flags of a well-formed ``traceparent`` (four fields; a version other than ``ff``), else None."""
    if value is None:
        return None
    m = _FORM.fullmatch(value.strip()) if len(value) <= 64 else None
    if m is None:
        return None
    version, trace, span, flags = m.groups()
    if version == "ff" or trace == _ZERO_TRACE or span == _ZERO_SPAN:
        return None
    return int(trace, 16), int(span, 16), int(flags, 16)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The version-00 ``traceparent`` of a span context."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags & 0xFF:02x}"
