"""The AsyncAPI 3.0 document of every spark-ml subject, generated from the wire contracts (``spark-ml asyncapi``).

The document describes spark-ml as the application: it *receives* snapshots and requests, and *sends*
predictions, dead letters and analytics. Payload schemas come from :mod:`spark_ml.core.specs.schemas` (the
pydantic contracts); subjects from :mod:`spark_ml.core.subjects` and :mod:`spark_ml.core.partition`.
``tests/core/test_asyncapi.py`` validates it against the official AsyncAPI 3.0.0 JSON Schema and checks that
every subject of ``core/subjects.py`` is in it; ``tests/worker/test_wire_conforms.py`` holds real messages
from a worker to its schemas.

Pure: the caller passes the version, the partition count and the servers.
"""

from __future__ import annotations

from typing import Any

from spark_ml.core import subjects
from spark_ml.core.partition import PART_PREFIX, PREDICT_PART_PREFIX
from spark_ml.core.specs.schemas import component_schemas, header_schema

__all__ = ["ASYNCAPI_VERSION", "CONTENT_TYPES", "asyncapi_document"]

ASYNCAPI_VERSION = "3.0.0"
CONTENT_TYPES = ("application/msgpack", "application/json")
_SCHEMAS = "#/components/schemas/"
_MESSAGES = "#/components/messages/"

_CONTENT_TYPE = {
    "Content-Type": {
        "enum": list(CONTENT_TYPES),
        "description": "The payload's encoding. Without it a payload starting with `{` is JSON, any other msgpack.",
    }
}
_CONTENT_TYPE_SENT = {
    "Content-Type": {"enum": list(CONTENT_TYPES), "description": "The payload's encoding (always sent by spark-ml)."}
}
_TRACEPARENT = {"traceparent": {"description": "W3C trace context, continued on the messages this one causes."}}
_SEED = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}
_DEAD_LETTER_REASONS = (
    "decode, schema, payload_too_large, out_of_order, non_finite_features, model_error, model_output, max_deliver"
)


def _ref(target: str) -> dict[str, str]:
    return {"$ref": target}


def _symbol_parameter() -> dict[str, Any]:
    return {
        "description": (
            "The symbol as one subject token (`core/subjects.py` symbol_token): `.`, `*`, `>`, `%` and non-ASCII "
            "characters as `%XX` per UTF-8 byte (`BRK.B` -> `BRK%2EB`); the payload's `symbol` is the original."
        ),
        "examples": ["BTCUSD", "EURUSD", "BRK%2EB"],
    }


def _partition_parameter(partitions: int) -> dict[str, Any]:
    return {
        "description": (
            f"The symbol's partition, 0..{partitions - 1}: the server's `partition({partitions},1)` of the symbol "
            "token (FNV-1a), SPARK_ML_PARTITIONS."
        ),
        "enum": [str(n) for n in range(partitions)],
    }


def _message(
    name: str,
    title: str,
    summary: str,
    payload: dict[str, Any],
    *,
    content_type: str | None = CONTENT_TYPES[0],
    headers: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One message of ``components.messages``; ``headers`` defaults to the Content-Type spark-ml always sends."""
    message: dict[str, Any] = {"name": name, "title": title, "summary": summary}
    if content_type is not None:
        message["contentType"] = content_type
        message["headers"] = header_schema(_CONTENT_TYPE_SENT, {}) if headers is None else headers
    message["payload"] = payload
    return {**message, **extra}


def _sent(name: str, title: str, summary: str, *schemas: str, content_type: str = CONTENT_TYPES[0]) -> dict[str, Any]:
    """A message spark-ml sends with its own Content-Type: its payload one of ``schemas`` (default: ``name``'s)."""
    refs = [_ref(_SCHEMAS + schema) for schema in schemas or (name,)]
    return _message(name, title, summary, refs[0] if len(refs) == 1 else {"anyOf": refs}, content_type=content_type)


def _received(
    name: str, title: str, summary: str, *, content_type: str = CONTENT_TYPES[0], **extra: Any
) -> dict[str, Any]:
    """A message spark-ml receives: its payload the schema of the same name, in either encoding, traced."""
    headers = header_schema({}, {**_CONTENT_TYPE, **_TRACEPARENT})
    return _message(name, title, summary, _ref(_SCHEMAS + name), content_type=content_type, headers=headers, **extra)


def _messages() -> dict[str, Any]:
    """The messages of the document, by name (``#/components/messages/<name>``)."""
    messages = [
        _received(
            "MarketSnapshot",
            "Market snapshot",
            "One market observation for one symbol. Numbers must be numbers; extra fields are ignored.",
            examples=[{"name": "seed", "summary": "The seeds' example, accepted as is.", "payload": _SEED}],
        ),
        _message(
            "Prediction",
            "Prediction",
            "The prediction of one snapshot, in the encoding the snapshot came in (unless "
            "SPARK_ML_OUTPUT_ENCODING says msgpack or json).",
            _ref(_SCHEMAS + "Prediction"),
            headers=header_schema(
                _CONTENT_TYPE_SENT,
                {
                    **_TRACEPARENT,
                    "Nats-Msg-Id": {
                        "description": "JetStream mode: `MARKET_SNAPSHOTS-<stream sequence>` of the input, to "
                        "deduplicate a redelivered input's prediction."
                    },
                    "Spark-Ml-Cold": {
                        "enum": ["warmup", "checkpoint"],
                        "description": "Core mode: made from a state that is not warm (fewer than 35 snapshots, "
                        "or the 35 after a take-over from a checkpoint that may be stale).",
                    },
                },
            ),
        ),
        _message(
            "DeadLetter",
            "Dead letter",
            "A refused snapshot, byte for byte, with the reason in headers.",
            {"description": "The refused payload, unchanged (any bytes)."},
            content_type="application/octet-stream",
            headers=header_schema(
                {
                    "Content-Type": {
                        "enum": [*CONTENT_TYPES, "application/octet-stream"],
                        "description": "What the refused payload was read as; application/octet-stream when it "
                        "could not be read (`decode`, `payload_too_large`) or was cut to fit.",
                    },
                    subjects.H_ERROR: {"description": f"The reason code: {_DEAD_LETTER_REASONS}."},
                    subjects.H_ERROR_MESSAGE: {"description": "The reason in words."},
                    subjects.H_SUBJECT: {"description": "The subject it was published on (before the mapping)."},
                },
                {
                    subjects.H_STREAM_SEQ: {"pattern": "^[0-9]+$", "description": "JetStream: its stream sequence."},
                    subjects.H_TRUNCATED: {
                        "pattern": "^[0-9]+$",
                        "description": "The payload was cut to fit the server's max_payload: the original size.",
                    },
                    **_TRACEPARENT,
                },
            ),
        ),
        _received(
            "PredictRequest",
            "Predict request",
            "A snapshot to score with the worker's per-symbol state (read, never advanced).",
            examples=[{"name": "seed", "payload": {"snapshot": _SEED}}],
        ),
        _sent("PredictReply", "Predict reply", "The Prediction, in the request's encoding.", "Prediction"),
        _message(
            "ErrorReply",
            "Error reply",
            "A refused request: the NATS micro error headers and the error body, in the request's encoding.",
            _ref(_SCHEMAS + "ErrorReply"),
            headers=header_schema(
                {
                    "Nats-Service-Error-Code": {
                        "enum": ["400", "404", "413", "500", "503"],
                        "description": "400 bad input, 404 `unknown_symbol` (analytics), 413 over the size limit, "
                        "500 model or internal failure, 503 `unavailable` (no owner of the symbol's partition now: "
                        "retry).",
                    },
                    "Nats-Service-Error": {"description": "`<code>: <message>`."},
                    **_CONTENT_TYPE_SENT,
                },
                {},
            ),
        ),
        _message(
            "ModelInfoRequest",
            "Model info request",
            "An empty request.",
            {"type": "string", "maxLength": 0, "description": "Empty."},
            content_type=None,
        ),
        _sent("ModelInfo", "Model info", "The model a worker serves now.", content_type="application/json"),
        _received(
            "AnalyticsQuery",
            "Analytics query",
            "A symbol's analytics, or the portfolio's without one.",
            content_type=CONTENT_TYPES[1],
            examples=[{"name": "symbol", "payload": {"symbol": "EURUSD"}}, {"name": "portfolio", "payload": {}}],
        ),
        _sent(
            "AnalyticsFigures",
            "Analytics figures",
            "The symbol's (or the portfolio's, `symbol` null) live figures, in the request's encoding "
            "(worker/services/analytics_api.py).",
            "SymbolFiguresReply",
            "PortfolioFiguresReply",
            content_type=CONTENT_TYPES[1],
        ),
        _sent(
            "AnalyticsExport",
            "Analytics export",
            "A symbol's figures, equity curve and recent trades (or the portfolio's, `symbol` null, with "
            "`symbols`); bounded per reply (worker/services/analytics_api.py).",
            "SymbolExport",
            "PortfolioExport",
            content_type=CONTENT_TYPES[1],
        ),
        _message(
            "ModelQualityRequest",
            "Model quality request",
            "JSON; an empty body asks for the figures only.",
            _ref(_SCHEMAS + "ModelQualityRequest"),
            content_type="application/json",
            headers=header_schema({}, _CONTENT_TYPE),
        ),
        _sent(
            "BodyErrorReply",
            "Error reply (body only)",
            "A refused request of a subject outside the micro service: the error body, no error headers.",
            "ErrorReply",
            content_type="application/json",
        ),
        _sent(
            "ModelQuality",
            "Model quality",
            "One worker's live-quality figures per served version.",
            content_type="application/json",
        ),
        _sent(
            "PnlUpdate",
            "Live PnL update",
            "Paper-trading analytics of one symbol: at most every 50 ms, at least every second with data.",
        ),
    ]
    return {message["name"]: message for message in messages}


def _channel(address: str | None, description: str, messages: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "address": address,
        "description": description,
        "messages": {key: _ref(_MESSAGES + name) for key, name in messages.items()},
        **extra,
    }


def _reply_channel(answer: dict[str, str], error: str = "ErrorReply", what: str = "") -> dict[str, Any]:
    """The channel of a request's reply (its NATS inbox): the answer's messages or the error."""
    return _channel(None, f"The request's reply subject{what}.", {**answer, "error": error})


def _channels(partitions: int) -> dict[str, Any]:
    symbol = {"symbol": _symbol_parameter()}
    partition = {"partition": _partition_parameter(partitions)}
    return {
        "snapshot": _channel(
            subjects.SNAPSHOT,
            "Snapshots without a symbol in the subject (the payload's, else `_`); one worker forwards them to "
            "`market.snapshot.<SYMBOL>`. Prefer the per-symbol subject.",
            {"snapshot": "MarketSnapshot"},
        ),
        "snapshotBySymbol": _channel(
            f"{subjects.SNAPSHOT}.{{symbol}}",
            "Snapshots of one symbol (the payload's `symbol` wins over the subject's). The server maps them onto "
            "`market.snapshot.part.<N>.<SYMBOL>`.",
            {"snapshot": "MarketSnapshot"},
            parameters=symbol,
        ),
        "snapshotPartitioned": _channel(
            f"{PART_PREFIX}.{{partition}}.{{symbol}}",
            "Where the server's mapping (core mode) or the stream's subject transform (JetStream mode) puts "
            "`market.snapshot.<SYMBOL>`: the owner of partition N subscribes here. Publishers use the subject above.",
            {"snapshot": "MarketSnapshot"},
            parameters={**partition, **symbol},
        ),
        "prediction": _channel(subjects.PREDICTION, "Predictions of the live model.", {"prediction": "Prediction"}),
        "predictionShadow": _channel(
            subjects.PREDICTION_SHADOW,
            "Predictions of the shadow model (when one is set), for the same snapshots.",
            {"prediction": "Prediction"},
        ),
        "deadLetters": _channel(subjects.DLQ, "Refused snapshots, unchanged.", {"deadLetter": "DeadLetter"}),
        "predict": _channel(
            subjects.PREDICT,
            "Request-reply (micro service `spark-ml`, endpoint `predict`, queue group `ml-workers`): any worker takes "
            "it and hands it to the owner of the symbol's partition.",
            {"request": "PredictRequest"},
        ),
        "predictPartition": _channel(
            f"{PREDICT_PART_PREFIX}.{{partition}}",
            "Request-reply answered only by the owner of partition N (the HTTP gateway and the Python client "
            "address it directly).",
            {"request": "PredictRequest"},
            parameters=partition,
        ),
        "predictReply": _reply_channel({"prediction": "PredictReply"}, what=" (its NATS inbox)"),
        "modelInfo": _channel(
            subjects.MODEL_INFO, "Request-reply (endpoint `model-info`).", {"request": "ModelInfoRequest"}
        ),
        "modelInfoReply": _reply_channel({"modelInfo": "ModelInfo"}),
        "modelQuality": _channel(
            subjects.MODEL_QUALITY,
            "Request-reply answered by every worker (no queue group): gather the replies until a quiet time "
            "(`spark-ml model compare`).",
            {"request": "ModelQualityRequest"},
        ),
        "modelQualityReply": _reply_channel(
            {"quality": "ModelQuality"}, error="BodyErrorReply", what=" (one reply per worker)"
        ),
        "analyticsGet": _channel(
            subjects.ANALYTICS_GET,
            f"Request-reply (micro service `{subjects.ANALYTICS_SERVICE}`, endpoint `get`): served by the active "
            "analytics instance only.",
            {"request": "AnalyticsQuery"},
        ),
        "analyticsGetReply": _reply_channel({"figures": "AnalyticsFigures"}),
        "analyticsExport": _channel(
            subjects.ANALYTICS_EXPORT,
            f"Request-reply (micro service `{subjects.ANALYTICS_SERVICE}`, endpoint `export`).",
            {"request": "AnalyticsQuery"},
        ),
        "analyticsExportReply": _reply_channel({"export": "AnalyticsExport"}),
        "analyticsPnl": _channel(
            f"{subjects.ANALYTICS_PNL_PREFIX}.{{symbol}}",
            "Live paper-trading analytics per symbol (`spark-ml up` or `spark-ml analytics`).",
            {"update": "PnlUpdate"},
            parameters=symbol,
        ),
    }


def _op(action: str, channel: str, summary: str, messages: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "action": action,
        "channel": _ref(f"#/channels/{channel}"),
        "summary": summary,
        "messages": [_ref(f"#/channels/{channel}/messages/{m}") for m in messages],
        **extra,
    }


def _reply(channel: str, messages: list[str]) -> dict[str, Any]:
    return {
        "channel": _ref(f"#/channels/{channel}"),
        "messages": [_ref(f"#/channels/{channel}/messages/{m}") for m in messages],
    }


def _answer(channel: str, summary: str, reply_channel: str, answer: str) -> dict[str, Any]:
    """A request-reply operation: a request on ``channel``, its answer or an error on ``reply_channel``."""
    return _op("receive", channel, summary, ["request"], reply=_reply(reply_channel, [answer, "error"]))


def _operations() -> dict[str, Any]:
    return {
        "receiveSnapshot": _op("receive", "snapshot", "Take bare snapshots (forwarded by one worker).", ["snapshot"]),
        "receiveSnapshotBySymbol": _op(
            "receive", "snapshotBySymbol", "Take a symbol's snapshots (published here).", ["snapshot"]
        ),
        "receivePartitionedSnapshot": _op(
            "receive", "snapshotPartitioned", "The owner of a partition takes its snapshots.", ["snapshot"]
        ),
        "sendPrediction": _op("send", "prediction", "Publish each snapshot's prediction.", ["prediction"]),
        "sendShadowPrediction": _op("send", "predictionShadow", "Publish the shadow model's.", ["prediction"]),
        "sendDeadLetter": _op("send", "deadLetters", "Dead-letter a refused snapshot.", ["deadLetter"]),
        "answerPredict": _answer(
            "predict", "Answer a predict request (or relay its owner's answer).", "predictReply", "prediction"
        ),
        "answerPredictPartition": _answer(
            "predictPartition", "The partition's owner answers a predict request.", "predictReply", "prediction"
        ),
        "answerModelInfo": _answer("modelInfo", "Tell the model served.", "modelInfoReply", "modelInfo"),
        "answerModelQuality": _answer(
            "modelQuality", "Tell this worker's live quality.", "modelQualityReply", "quality"
        ),
        "answerAnalyticsGet": _answer(
            "analyticsGet", "Tell a symbol's or the portfolio's live figures.", "analyticsGetReply", "figures"
        ),
        "answerAnalyticsExport": _answer(
            "analyticsExport", "Export a symbol's equity curve and trades.", "analyticsExportReply", "export"
        ),
        "sendPnl": _op("send", "analyticsPnl", "Publish a symbol's live PnL.", ["update"]),
    }


def asyncapi_document(*, version: str, partitions: int, servers: list[str]) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document (plain data, ready for ``json.dumps``).

    Args:
        version: spark-ml's version (``info.version``).
        partitions: SPARK_ML_PARTITIONS (the partition parameter's values).
        servers: NATS URLs (``nats://host:port``), each a server of the document.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "spark-ml",
            "version": version,
            "description": (
                "Real-time ML predictions for market data over NATS. Payloads are msgpack by default; JSON is "
                "accepted (a `Content-Type: application/json` header, or a payload starting with `{`), and a "
                "prediction or reply goes out in the encoding its input came in. Wire names are camelCase. "
                "The micro service `spark-ml` also answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS`."
            ),
            "license": {"name": "MIT"},
        },
        "defaultContentType": CONTENT_TYPES[0],
        "servers": {f"nats{i}" if i else "nats": _server(url) for i, url in enumerate(servers)},
        "channels": _channels(partitions),
        "operations": _operations(),
        "components": {"schemas": component_schemas(_SCHEMAS), "messages": _messages()},
    }


def _server(url: str) -> dict[str, Any]:
    scheme, sep, rest = url.partition("://")
    host = rest.rsplit("@", 1)[-1] if sep else url  # never a user or password in the document
    tls = " over TLS" if scheme in ("tls", "wss") else ""
    return {"host": host.rstrip("/"), "protocol": "nats", "description": f"NATS server{tls}"}
