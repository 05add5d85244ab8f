"""Request and response schemas for the NATS micro endpoints' metadata (``$SRV.INFO``).

A micro endpoint's metadata is a map of strings, so each schema travels as compact JSON under a key of its own:
``request_schema``, ``response_schema`` and ``error_schema`` (JSON Schema 2020-12, wire names, self-contained with
their ``$defs``), and ``content_types``. A client discovering the service with ``nats micro info spark-ml`` (or a
``$SRV.INFO`` request) learns what to send and what comes back. Generated from the same contracts as the AsyncAPI
document (:mod:`spark_ml.core.specs.schemas`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from spark_ml.core.contracts import ErrorReply
from spark_ml.core.specs.schemas import inline_schema

__all__ = ["CONTENT_TYPES", "endpoint_metadata"]

CONTENT_TYPES = "application/msgpack, application/json"


def _compact(schema: dict[str, Any]) -> str:
    return json.dumps(schema, separators=(",", ":"), sort_keys=True)


def endpoint_metadata(
    request: type[BaseModel] | None, response: Any, *, content_types: str = CONTENT_TYPES
) -> dict[str, str]:
    """The metadata of one endpoint: its request's schema (``{}``-less requests have none), its reply's (a model,
    or a union of models), the error reply's, and the encodings it speaks (the reply comes in the request's)."""
    meta = {
        "response_schema": _compact(inline_schema(response, "serialization")),
        "error_schema": _compact(inline_schema(ErrorReply, "serialization")),
        "content_types": content_types,
    }
    if request is not None:
        meta["request_schema"] = _compact(inline_schema(request, "validation"))
    return meta
