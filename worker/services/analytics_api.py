"""The analytics query API: micro service ``spark-ml-analytics``, endpoints ``analytics.get``, ``analytics.export``.

Only the active analytics instance serves it (:mod:`spark_ml.worker.services.analytics`), in the queue group
``spark-ml-analytics``; with no active instance (a take-over in progress) a request finds no responders.

Requests (JSON or msgpack; the reply comes in the request's encoding, an empty body counts as ``{}`` in JSON):

* ``analytics.get`` ``{"symbol": "EURUSD"}``: that symbol's figures; ``{}``: the portfolio's (see
  :func:`spark_ml.core.trading.live_figures.symbol_figures`, :meth:`spark_ml.core.trading.portfolio.Portfolio.figures`).
* ``analytics.export`` ``{"symbol": "EURUSD"}``: ``{"symbol", "figures", "equityCurve": [[ts, equity, price], ...],
  "curveStride", "trades": [{"side", "entryTs", "entryPrice", "exitTs", "exitPrice", "pnl", "return"}, ...],
  "tradesTotal"}``; ``{}``: the portfolio's figures and equity curve plus ``"symbols"``, the names to export one
  by one. Bounded per reply: the equity curve has at most ``SPARK_ML_ANALYTICS_CURVE_POINTS`` + 1 points spread
  over the symbol's whole history (``curveStride`` updates per point), the trade list the
  ``SPARK_ML_ANALYTICS_TRADES_KEPT`` most recent trades (the open one last, ``exitTs`` null), while
  ``tradesTotal`` counts every trade. One symbol per request keeps a reply far below NATS's max payload.

**A share of the event loop.** The active instance follows the stream on the same event loop (in ``spark-ml up``
the worker's too), and a query costs a few hundred microseconds (the figures of a symbol, or of every symbol for
the portfolio). So that callers asking back to back cannot delay the ``analytics.pnl`` updates, queries get at
most ``share`` of the loop's time (``SPARK_ML_ANALYTICS_QUERY_SHARE``): after a request that took ``c`` seconds,
the next one (of either endpoint) waits until ``c * (1 - share) / share`` has passed. A lone caller does not
notice; many callers see the queue, and the updates keep their latency (``spark-ml bench --only analytics-api``).

Refusals are ``{"error": {"code", "message"}}`` with the micro error headers (``Nats-Service-Error-Code``), the
codes of :func:`spark_ml.core.outcomes.outcome_of`: 400 ``decode`` (not JSON/msgpack), 400 ``schema`` (not a
map, an unknown field, a symbol that is not a string of 1..64 printable characters), 413 ``payload_too_large``,
404 ``unknown_symbol``, 500 ``internal``. As in ``ml.predict``, the handler sends its error replies itself and
the STATS hook adds them to ``num_errors``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service, ServiceConfig

from spark_ml.core.codec import CONTENT_TYPES, Encoding, decode, detect_encoding, encode
from spark_ml.core.contracts import (
    SYMBOL_MAX_LEN,
    AnalyticsExportReply,
    AnalyticsFiguresReply,
    AnalyticsQuery,
    ErrorReply,
    valid_symbol,
)
from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.core.outcomes import outcome_of
from spark_ml.core.specs.micro import endpoint_metadata
from spark_ml.core.subjects import ANALYTICS_EXPORT, ANALYTICS_GET, ANALYTICS_SERVICE

__all__ = ["AnalyticsApi", "Answer", "parse_query"]

log = logging.getLogger(__name__)

Answer = Callable[[str | None], dict[str, Any]]
"""A symbol (None: the portfolio) -> the reply body; raises UnknownSymbol."""

_FIELDS = frozenset({"symbol"})
_MAX_REQUEST = 4096
_DESCRIPTION_MAX = 256
_CONTENT_TYPES = "application/json, application/msgpack"  # JSON first: an empty request is answered in JSON


def parse_query(raw: bytes, content_type: str | None) -> tuple[str | None, Encoding]:
    """The symbol asked for (None: the portfolio) and the reply's encoding; InvalidInput when malformed."""
    if not raw.strip():
        return None, "json"
    data, encoding = decode(raw, content_type=content_type, max_bytes=_MAX_REQUEST)
    if type(data) is not dict:
        raise InvalidInput('request: must be a map/object, {"symbol": "..."} or {}', code="schema")
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        raise InvalidInput(f"request: unknown field(s) {', '.join(unknown)}; the only field is 'symbol'", code="schema")
    symbol = data.get("symbol")
    if symbol is None:
        return None, encoding
    if type(symbol) is not str or not valid_symbol(symbol):
        rule = f"must be a string of 1..{SYMBOL_MAX_LEN} printable characters without spaces"
        raise InvalidInput(f"symbol: {rule}", code="schema")
    return symbol, encoding


class AnalyticsApi:
    """The micro service (see the module docstring); :meth:`start` builds it, :meth:`stop` unsubscribes.

    Args:
        nc: a connected NATS client.
        get: a symbol or None -> the ``analytics.get`` body.
        export: a symbol or None -> the ``analytics.export`` body.
        version: the service version for ``$SRV.INFO``.
        share: the largest share of the event loop's time queries may take (1: no limit).
    """

    def __init__(self, nc: Client, *, get: Answer, export: Answer, version: str = "0.0.0", share: float = 1.0) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self._nc = nc
        self._pause = (1.0 - share) / share
        self._free_at = 0.0
        self._answers = {"get": get, "export": export}
        self._version = version
        self._service: Service | None = None
        self._errors: dict[str, list[Any]] = {"get": [0, ""], "export": [0, ""]}

    async def start(self) -> None:
        config = ServiceConfig(
            name=ANALYTICS_SERVICE,
            version=self._version,
            description="spark-ml live trading analytics: figures, equity curve and trades per symbol and portfolio",
            queue_group=ANALYTICS_SERVICE,
            stats_handler=self._stats,
        )
        service = self._service = await add_service(self._nc, config)
        meta = endpoint_metadata(AnalyticsQuery, AnalyticsFiguresReply, content_types=_CONTENT_TYPES)
        await service.add_endpoint(name="get", subject=ANALYTICS_GET, handler=self._on_get, metadata=meta)
        meta = endpoint_metadata(AnalyticsQuery, AnalyticsExportReply, content_types=_CONTENT_TYPES)
        await service.add_endpoint(name="export", subject=ANALYTICS_EXPORT, handler=self._on_export, metadata=meta)
        await self._nc.flush()
        await self._nc.flush()  # see predict._server_has_seen: the second PING follows the SUBs on the wire

    async def stop(self) -> None:
        service, self._service = self._service, None
        if service is not None and not (self._nc.is_closed or self._nc.is_draining):
            await service.stop()

    async def _on_get(self, request: Request) -> None:
        await self._answer("get", request)

    async def _on_export(self, request: Request) -> None:
        await self._answer("export", request)

    async def _answer(self, endpoint: str, request: Request) -> None:
        wait = self._free_at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        start = time.perf_counter()
        try:
            await self._reply(endpoint, request)
        finally:
            end = time.perf_counter()
            self._free_at = end + (end - start) * self._pause

    async def _reply(self, endpoint: str, request: Request) -> None:
        headers = request.headers
        content_type = headers.get("Content-Type") if headers else None
        encoding: Encoding = detect_encoding(request.data, content_type) if request.data.strip() else "json"
        try:
            symbol, encoding = parse_query(request.data, content_type)
            body = encode(self._answers[endpoint](symbol), encoding)
        except Exception as exc:
            if not isinstance(exc, SparkMlError):
                log.exception("analytics.%s: unexpected failure", endpoint)
            outcome = outcome_of(exc)
            tally = self._errors[endpoint]
            tally[0] += 1
            tally[1] = f"{outcome.service_code}:{outcome.code}: {outcome.message}"
            description = " ".join(f"{outcome.code}: {outcome.message}".split())[:_DESCRIPTION_MAX]
            reply = encode(ErrorReply.of(outcome.code, outcome.message).wire(), encoding)
            await _send(
                request.respond_error(
                    str(outcome.service_code),
                    description,
                    data=reply,
                    headers={"Content-Type": CONTENT_TYPES[encoding]},
                )
            )
            return
        await _send(request.respond(body, headers={"Content-Type": CONTENT_TYPES[encoding]}))

    def _stats(self, stats: EndpointStats) -> dict[str, Any] | None:
        tally = self._errors.get(stats.name)
        if tally is None or not tally[0]:
            return None
        stats.num_errors += tally[0]
        stats.last_error = tally[1]
        return None


async def _send(reply: Any) -> None:
    try:
        await reply
    except ValueError:  # a message published without a reply subject: nobody to answer
        log.debug("analytics request without a reply subject")
