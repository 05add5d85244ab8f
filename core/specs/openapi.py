"""The OpenAPI 3.1 document of the HTTP gateway (``GET /openapi.json``, ``spark-ml openapi``).

aiohttp has no OpenAPI of its own, so the document is built here from the same contracts as the AsyncAPI one
(:mod:`spark_ml.core.specs.schemas`), route by route as :mod:`spark_ml.gateway.http` serves them, every status it
answers included. ``tests/core/test_openapi.py`` checks it with openapi-spec-validator;
``tests/gateway/test_openapi_live.py`` runs schemathesis against a live gateway, worker and nats-server.

Pure: the gateway passes what its settings decide (the API key's presence, the limits).
"""

from __future__ import annotations

from typing import Any

from spark_ml.core.specs.schemas import component_schemas

__all__ = ["OPENAPI_VERSION", "ROUTES", "openapi_document"]

OPENAPI_VERSION = "3.1.0"
ROUTES = {
    "predict": "/ml/predict",
    "health": "/ml/health",
    "info": "/ml/model/info",
    "metrics": "/ml/metrics",
    "analytics": "/ml/analytics",
    "analytics_symbol": "/ml/analytics/{symbol}",
}
SPEC_ROUTE = "/openapi.json"
_SCHEMAS = "#/components/schemas/"
_WIRE = ("application/json", "application/msgpack")


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _SCHEMAS + name}


def _content(schema: str, media: tuple[str, ...] = _WIRE) -> dict[str, Any]:
    return {m: {"schema": _ref(schema)} for m in media}


def _error(description: str, media: tuple[str, ...] = ("application/json",), **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": _content("ErrorReply", media), **extra}


def _limited(rate_limit: str) -> dict[str, Any]:
    return {
        "429": _error(
            f"Over the client's rate limit ({rate_limit}, a moving window; code `rate_limited`).",
            headers={
                "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
            },
        )
    }


def _unavailable(timeout_s: float) -> dict[str, Any]:
    return {
        "503": _error(
            "No worker answers (`no_worker`), the gateway is not connected to NATS (`nats_unavailable`), or nobody "
            "owns the symbol's partition now (`unavailable`): retry.",
            _WIRE,
        ),
        "504": _error(f"No reply from a worker within SPARK_ML_REQUEST_TIMEOUT_S ({timeout_s:g} s; code `timeout`)."),
    }


def _predict(max_payload: int, rate_limit: str, timeout_s: float, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": "predict",
            "summary": "The prediction of one snapshot, from the owner of the symbol's partition",
            "description": (
                "Forwarded to `ml.predict.part.<N>` over NATS. JSON or msgpack, as `Content-Type` says (else a body "
                "starting with `{` is JSON); the reply comes in the request's encoding. The request reads the "
                "symbol's feature state of the stream without advancing it."
            ),
            "requestBody": {
                "required": True,
                "content": _content("PredictRequest"),
            },
            "responses": {
                "200": {"description": "The Prediction.", "content": _content("Prediction")},
                "400": _error(
                    "The worker refused the request (`decode`, `schema`, `out_of_order`, `non_finite_features`, "
                    "`unknown_model`), or the Content-Type is not printable ASCII (`bad_header`).",
                    _WIRE,
                ),
                **auth,
                "408": _error("The body did not arrive within SPARK_ML_HTTP_READ_TIMEOUT_S; the connection closes."),
                "413": _error(f"The body is over SPARK_ML_MAX_PAYLOAD ({max_payload} bytes).", _WIRE),
                **_limited(rate_limit),
                "500": _error("The model failed (`model_error`, `model_output`).", _WIRE),
                **_unavailable(timeout_s),
            },
        }
    }


def _info(rate_limit: str, timeout_s: float, auth: dict[str, Any]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": "modelInfo",
            "summary": "The model the workers serve now (`ml.model.info`)",
            "responses": {
                "200": {"description": "The active model.", "content": _content("ModelInfo", ("application/json",))},
                **auth,
                **_limited(rate_limit),
                "500": _error("The worker could not describe its model (`internal`)."),
                **_unavailable(timeout_s),
            },
        }
    }


def _analytics(rate_limit: str, timeout_s: float, auth: dict[str, Any], *, symbol: bool) -> dict[str, Any]:
    what = "one symbol's" if symbol else "the portfolio's"
    op: dict[str, Any] = {
        "operationId": "analyticsSymbol" if symbol else "analyticsPortfolio",
        "summary": f"Live trading analytics: {what} figures (`analytics.get`)",
        "responses": {
            "200": {
                "description": "The figures, as the active analytics instance answers them (JSON).",
                "content": {"application/json": {"schema": {"type": "object"}}},
            },
            "400": _error("The symbol is not 1..64 printable characters (`schema`)."),
            **auth,
            "404": _error("No such symbol in the live analytics (`unknown_symbol`)."),
            **_limited(rate_limit),
            "500": _error("The analytics instance failed (`internal`)."),
            "503": _error(
                "No analytics instance is active (a take-over in progress: `no_worker`), or the gateway is not "
                "connected to NATS (`nats_unavailable`): retry."
            ),
            "504": _error(f"No reply within SPARK_ML_REQUEST_TIMEOUT_S ({timeout_s:g} s; code `timeout`)."),
        },
    }
    if symbol:
        op["parameters"] = [
            {
                "name": "symbol",
                "in": "path",
                "required": True,
                "description": "The symbol, percent-encoded.",
                "schema": {"type": "string", "minLength": 1},
            }
        ]
    return {"get": op}


def _health() -> dict[str, Any]:
    body = _content("GatewayHealth", ("application/json",))
    return {
        "get": {
            "operationId": "health",
            "summary": "Liveness: connected to NATS and a worker answers (no API key, no rate limit)",
            "security": [],
            "responses": {
                "200": {"description": "Connected, and a worker answered.", "content": body},
                "503": {"description": "Not connected, or no worker answered within 1 s.", "content": body},
            },
        }
    }


def _metrics(auth: dict[str, Any]) -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    return {
        "get": {
            "operationId": "metrics",
            "summary": "The process's Prometheus metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format 0.0.4.",
                    "content": {"text/plain": text},
                },
                **auth,
            },
        }
    }


def _spec() -> dict[str, Any]:
    return {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {
                "200": {"description": "The OpenAPI 3.1 document.", "content": {"application/json": {"schema": {}}}}
            },
        }
    }


def openapi_document(
    *, version: str, api_key: bool, max_payload: int, rate_limit: str, request_timeout_s: float
) -> dict[str, Any]:
    """The gateway's OpenAPI 3.1.0 document (plain data).

    Args:
        version: spark-ml's version (``info.version``).
        api_key: SPARK_ML_API_KEY is set: every route but ``/ml/health`` and this document requires it.
        max_payload: SPARK_ML_MAX_PAYLOAD, the largest body.
        rate_limit: SPARK_ML_RATE_LIMIT, as the 429s describe it.
        request_timeout_s: SPARK_ML_REQUEST_TIMEOUT_S, as the 504s describe it.
    """
    auth = {"401": _error("The API key is missing or wrong (`unauthorized`).")} if api_key else {}
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "spark-ml HTTP gateway",
            "version": version,
            "description": "The HTTP bridge in front of the `ml.predict` NATS service. Errors are "
            '`{"error": {"code", "message"}}`.',
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "paths": {
            ROUTES["predict"]: _predict(max_payload, rate_limit, request_timeout_s, auth),
            ROUTES["health"]: _health(),
            ROUTES["info"]: _info(rate_limit, request_timeout_s, auth),
            ROUTES["metrics"]: _metrics(auth),
            ROUTES["analytics"]: _analytics(rate_limit, request_timeout_s, auth, symbol=False),
            ROUTES["analytics_symbol"]: _analytics(rate_limit, request_timeout_s, auth, symbol=True),
            SPEC_ROUTE: _spec(),
        },
        "components": {"schemas": component_schemas(_SCHEMAS)},
    }
    if api_key:
        doc["components"]["securitySchemes"] = {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer", "description": "The API key as a bearer token."},
        }
        doc["security"] = [{"apiKey": []}, {"bearer": []}]
    return doc
