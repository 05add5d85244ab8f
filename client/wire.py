"""What the client puts on the wire and reads back: the encodings, the ``Content-Type`` header, error replies.

The same encodings as the workers (:mod:`spark_ml.core.codec`): msgpack or JSON, camelCase names. A message is
decoded by its ``Content-Type`` header when it has one (``application/msgpack``, ``application/json``) and by its
first byte otherwise (``{`` is JSON), as the workers read what they receive. An error reply of ``ml.predict``
(the ``Nats-Service-Error-Code`` header) becomes the exception the worker mapped to it
(:func:`spark_ml.core.outcomes.error_of`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgpack
from pydantic import ValidationError

from spark_ml.core.codec import Encoding, detect_encoding, encode, snapshot_from_mapping
from spark_ml.core.contracts import ErrorReply, MarketSnapshot, Prediction
from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.core.outcomes import error_of

__all__ = [
    "CONTENT_TYPE",
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "SnapshotLike",
    "content_type_of",
    "decode",
    "encoding_of",
    "error_from_reply",
    "headers_for",
    "prediction_from",
    "snapshot_wire",
]

CONTENT_TYPE = "Content-Type"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"
_CONTENT_TYPES: dict[Encoding, str] = {"json": "application/json", "msgpack": "application/msgpack"}

SnapshotLike = MarketSnapshot | Mapping[str, Any]
"""A snapshot as the client takes it: the contract object, or a mapping with the wire (camelCase) names."""


def content_type_of(encoding: Encoding) -> str:
    """The ``Content-Type`` of an encoding."""
    return _CONTENT_TYPES[encoding]


def headers_for(encoding: Encoding) -> dict[str, str]:
    """The headers of a message the client publishes or requests in ``encoding``."""
    return {CONTENT_TYPE: _CONTENT_TYPES[encoding]}


def encoding_of(raw: bytes, headers: Mapping[str, str] | None) -> Encoding:
    """The encoding a message declares in ``Content-Type``, else the one its first byte shows."""
    content_type = headers.get(CONTENT_TYPE) if headers else None
    if content_type is not None:
        if "msgpack" in content_type:
            return "msgpack"
        if "json" in content_type:
            return "json"
    return detect_encoding(raw)


def decode(raw: bytes, headers: Mapping[str, str] | None) -> Any:
    """Plain data from a message's payload; :class:`InvalidInput` (code ``decode``) when it is not what it says."""
    encoding = encoding_of(raw, headers)
    try:
        if encoding == "json":
            return json.loads(raw)
        return msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:
        raise InvalidInput(f"not valid {encoding}: {type(exc).__name__}: {exc}", code="decode", raw=raw) from exc


def snapshot_wire(snapshot: SnapshotLike) -> dict[str, Any]:
    """A snapshot as wire data (camelCase names), checked against the contract.

    A :class:`MarketSnapshot` is dumped with its wire names. A mapping must already use them (``spreadBp``, not
    ``spread_bp``: other keys travel but the workers ignore them); it is checked by the workers' own rules
    (:func:`spark_ml.core.codec.snapshot_from_mapping`) and sent as it is. A refusal is the :class:`InvalidInput`
    (code ``schema``, the same message) a worker would dead-letter the snapshot with.
    """
    if isinstance(snapshot, MarketSnapshot):
        return snapshot.model_dump(by_alias=True, exclude_none=True)
    if not isinstance(snapshot, Mapping):
        kind = type(snapshot).__name__
        raise InvalidInput(f"snapshot: must be a MarketSnapshot or a mapping, not {kind}", code="schema")
    wire = dict(snapshot)
    snapshot_from_mapping(wire)
    return wire


def prediction_from(raw: bytes, headers: Mapping[str, str] | None) -> Prediction:
    """A Prediction from a message; :class:`InvalidInput` when the payload is not one."""
    data = decode(raw, headers)
    try:
        return Prediction.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"not a Prediction: {exc.errors()[0]['msg']}", code="schema", raw=raw) from exc


def error_from_reply(raw: bytes, headers: Mapping[str, str]) -> SparkMlError | None:
    """The exception an error reply carries (its ``Nats-Service-Error-Code``), or None for a normal reply."""
    status = headers.get(ERROR_CODE_HEADER)
    if status is None:
        return None
    try:
        code_num = int(status)
    except ValueError:
        code_num = 500
    try:
        body = ErrorReply.model_validate(decode(raw, headers)).error
    except (InvalidInput, ValidationError):
        # No body of our contract (another responder): the micro header still says why.
        code, _, message = headers.get(ERROR_HEADER, "error: no description").partition(": ")
        return error_of(code_num, code, message or code)
    return error_of(code_num, body.code, body.message)


def encode_request(snapshot: SnapshotLike, model: str | None, encoding: Encoding) -> tuple[bytes, str]:
    """The body of an ``ml.predict`` request, and the symbol it is for (``"_"`` when the snapshot has none)."""
    wire = snapshot_wire(snapshot)
    body: dict[str, Any] = {"snapshot": wire}
    if model is not None:
        body["model"] = model
    return encode(body, encoding), str(wire.get("symbol", "_"))
