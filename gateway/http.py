"""The HTTP bridge (aiohttp): the seeds' routes in front of the ``ml.predict`` NATS service.

Routes: ``POST /ml/predict``, ``GET /ml/health``, ``GET /ml/model/info``, ``GET /ml/metrics``, and the live trading
analytics ``GET /ml/analytics`` (the portfolio) and ``GET /ml/analytics/{symbol}`` (one symbol, percent-encoded in
the path), which ask ``analytics.get`` (:mod:`spark_ml.worker.services.analytics_api`) with ``{"symbol": ...}`` or
``{}`` and answer its JSON body: 200, 404 ``unknown_symbol``, 400 ``schema`` (a symbol that is not 1..64 printable
characters), 503 when no analytics instance is active (a take-over in progress), 504 on no reply, behind the same
API key and rate limit as ``/ml/predict``. ``GET /openapi.json`` is the OpenAPI 3.1 document of these routes
(:func:`spark_ml.core.specs.openapi.openapi_document`, for this gateway's settings), served like the health check,
without the API key or the rate limit.

The bridge never parses a prediction request: it checks who is asking (API key, rate limit) and how
much (size), forwards the bytes over NATS request-reply with a timeout, and maps the outcome:

====================================  ======
outcome                               status
====================================  ======
a Prediction                          200
worker refused the input (its body)   400 (413 when oversized)
body over ``max_payload``             413
Content-Type not printable ASCII      400 (``bad_header``)
API key missing or wrong              401
client over its rate limit            429 + ``Retry-After``
not connected, or no worker (NATS     503, at once
no-responders)
no reply within ``request_timeout_s``  504
body not sent within the read timeout  408, then the connection closes
model failure (the worker's body)     500
====================================  ======

Partitions (docs/SCALEOUT.md): a symbol's state lives with the worker that owns its partition. The bridge reads
the request's ``snapshot.symbol`` (JSON or msgpack, as the Content-Type says; ``"_"`` when absent) and asks that
owner directly on ``ml.predict.part.<partition_of(symbol, settings.partitions)>``: no hop through a worker that
would forward it. When nobody listens there (an older worker, another partition count, a hand-over in progress)
it asks plain ``ml.predict`` once, within what is left of the timeout; a worker answers or forwards it, and
answers 503 ``unavailable`` when the partition has no owner. A body it cannot read goes to plain ``ml.predict``,
whose worker answers the 400.

Slow clients are bounded by ``http_read_timeout_s``: a connection without a complete header block that long
after it opened (or after its previous response) is closed, and so is one whose body takes longer than that
after its headers; a client trickling bytes cannot hold a connection for ever.

A late reply after a 504 cannot reach another caller: every request waits on its own inbox token, and
nats-py drops replies whose token is no longer awaited.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from nats.aio.client import Client
from nats.errors import ConnectionClosedError, ConnectionDrainingError, NoRespondersError, OutboundBufferLimitError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro.request import ERROR_CODE_HEADER
from nats.micro.service import ServiceVerb, control_subject
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry

from spark_ml.core.codec import decode
from spark_ml.core.contracts import ErrorReply
from spark_ml.core.partition import partition_of, predict_part
from spark_ml.core.specs.openapi import SPEC_ROUTE, openapi_document
from spark_ml.core.subjects import ANALYTICS_GET, PREDICT, SERVICE_NAME
from spark_ml.core.tracecontext import TRACEPARENT, clean_traceparent
from spark_ml.gateway.ratelimit import ClientRateLimiter
from spark_ml.worker.connect import connect_options, safe_url
from spark_ml.worker.lifecycle import Lifecycle
from spark_ml.worker.metrics import HttpMetrics
from spark_ml.worker.services.predict import CONTENT_TYPES, MODEL_INFO
from spark_ml.worker.settings import Settings
from spark_ml.worker.tracing_optional import tracing_for

if TYPE_CHECKING:  # the SDK is optional: imported only when tracing is on
    from spark_ml.worker.tracing import Tracing

__all__ = ["HttpGateway", "run_gateway"]

log = logging.getLogger(__name__)

_R_PREDICT, _R_HEALTH, _R_INFO, _R_METRICS = "/ml/predict", "/ml/health", "/ml/model/info", "/ml/metrics"
_R_ANALYTICS, _R_ANALYTICS_SYMBOL = "/ml/analytics", "/ml/analytics/{symbol}"
_OPEN = frozenset({_R_HEALTH, SPEC_ROUTE})
"""Routes served without the API key: a liveness probe and the API's description reveal nothing and carry no secret."""
_LIMITED = frozenset({_R_PREDICT, _R_INFO, _R_ANALYTICS, _R_ANALYTICS_SYMBOL})
"""Routes that cost a worker a request, hence rate limited."""
_HEALTH_TIMEOUT_S = 1.0
_PING = control_subject(ServiceVerb.PING, name=SERVICE_NAME)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _MalformedRequestLog(logging.Filter):
    """aiohttp answers a malformed request (bad bytes in a header, a broken request line) with a 400 itself, but
    logs it as an error with a traceback: any client could fill the log. One warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and exc.code is not None and 400 <= exc.code < 500:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "gateway: malformed HTTP request refused with %d: %s", (exc.code, exc.message)
            record.exc_info, record.exc_text = None, None
        return True


_server_log = logging.getLogger(f"{__name__}.server")
_server_log.addFilter(_MalformedRequestLog())


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(ErrorReply.of(code, message).wire(), status=status, headers=headers)


def _too_large(limit: int) -> web.Response:
    return _error(413, "payload_too_large", f"the body limit is {limit} bytes")


async def _hang_up(request: web.Request, timeout_s: float) -> web.StreamResponse:
    """Answer 408 and close the connection at once: lingering to read the rest would serve the slow client."""
    response = _error(408, "request_timeout", f"the request body did not arrive within {timeout_s:g}s")
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()  # the 408 is already written: the transport flushes it before closing
    return response


def _symbol_of(body: bytes, content_type: str | None, max_bytes: int) -> str | None:
    """The request's ``snapshot.symbol`` (``"_"`` when it has none), or None when the body cannot tell."""
    try:
        data, _ = decode(body, content_type=content_type, max_bytes=max_bytes)
    except Exception:
        return None
    snapshot = data.get("snapshot") if type(data) is dict else None
    if type(snapshot) is not dict:
        return None
    symbol = snapshot.get("symbol", "_")
    return symbol if type(symbol) is str and symbol else None


def _package_version() -> str:
    try:
        return version("spark-ml")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def _reply_status(code: str) -> int:
    """HTTP status for a worker's ``Nats-Service-Error-Code`` (502 for anything that is not an HTTP error)."""
    try:
        status = int(code)
    except ValueError:
        return 502
    return status if 400 <= status <= 599 else 502


class HttpGateway(Lifecycle):
    """The HTTP bridge; ``start()``/``stop()`` or ``async with``.

    Args:
        nc: a NATS client; it may still be connecting (requests get 503 until it is connected).
        settings: ``bind_host``, ``http_port`` (0: an ephemeral port, see :attr:`port`), ``api_key``,
            ``rate_limit``, ``request_timeout_s`` and ``max_payload`` are used.
        registry: where the ``ml_http_*`` metrics live (served on ``/ml/metrics``); a new one when None.
        tracing: a ``POST /ml/predict`` span per predict call, child of the caller's ``traceparent``, whose
            context the NATS request carries (None: no span; a caller's ``traceparent`` goes on unchanged).

    Raises:
        ValueError: when ``settings.rate_limit`` is not in ``limits`` notation.
    """

    def __init__(
        self,
        nc: Client,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._nc = nc
        self._tracing = tracing
        self._settings = settings
        self._limiter = ClientRateLimiter(settings.rate_limit)
        self._metrics = HttpMetrics(registry)
        self._key = settings.api_key.get_secret_value().encode() if settings.api_key is not None else None
        self._runner: web.AppRunner | None = None
        self._openapi = openapi_document(
            version=_package_version(),
            api_key=self._key is not None,
            max_payload=settings.max_payload,
            rate_limit=settings.rate_limit,
            request_timeout_s=settings.request_timeout_s,
        )
        self.port: int = settings.http_port
        """The bound port (the ephemeral one when ``http_port`` is 0), known after :meth:`start`."""

    @property
    def registry(self) -> CollectorRegistry:
        return self._metrics.registry

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self._settings.max_payload, middlewares=[self._observe, self._guard])
        app.router.add_post(_R_PREDICT, self._predict)
        app.router.add_get(_R_HEALTH, self._health)
        app.router.add_get(_R_INFO, self._info)
        app.router.add_get(_R_METRICS, self._render_metrics)
        app.router.add_get(_R_ANALYTICS, self._analytics)
        app.router.add_get(_R_ANALYTICS_SYMBOL, self._analytics)
        app.router.add_get(SPEC_ROUTE, self._spec)
        return app

    async def start(self) -> None:
        """Bind ``bind_host:http_port`` and serve."""
        s = self._settings
        # aiohttp's keep-alive timer runs from the connection's start (and from each response) until a complete
        # header block arrives, and is not reset by partial data: it bounds the headers of slow clients. The
        # lingering time bounds the reading of a body the handler left unread (after a 401, 413, 429).
        read_s = s.http_read_timeout_s
        runner = web.AppRunner(
            self._app(),
            shutdown_timeout=s.request_timeout_s + 1.0,
            logger=_server_log,
            keepalive_timeout=read_s,
            lingering_time=read_s,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, s.bind_host, s.http_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("gateway: http://%s:%d/ml/predict -> %s", s.bind_host, self.port, PREDICT)

    async def stop(self) -> None:
        """Stop accepting connections and let in-flight requests finish (bounded by the request timeout)."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- middlewares ----------------------------------------------------------------------------------

    @web.middleware
    async def _observe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "other"  # unmatched paths: one series, not one each
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:  # aiohttp's own 404/405: counted like any answer
            status = exc.status
            raise
        finally:
            self._metrics.observe(route, status, (time.perf_counter() - start) * 1000.0)

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else ""
        if self._key is not None and route not in _OPEN and not self._authorized(request):
            return _error(401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": "Bearer"})
        if route in _LIMITED:
            wait_s = self._limiter.hit("api-key" if self._key is not None else request.remote or "?")
            if wait_s is not None:
                retry = ClientRateLimiter.retry_after(wait_s)
                return _error(429, "rate_limited", f"over {self._settings.rate_limit}", {"Retry-After": retry})
        return await handler(request)

    def _authorized(self, request: web.Request) -> bool:
        assert self._key is not None
        supplied = request.headers.get("X-API-Key")
        if supplied is None:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer":
                return False
            supplied = token.strip()
        return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), self._key)

    # --- routes ---------------------------------------------------------------------------------------

    async def _predict(self, request: web.Request) -> web.StreamResponse:
        limit = self._settings.max_payload
        if request.content_length is not None and request.content_length > limit:
            return _too_large(limit)
        try:
            async with asyncio.timeout(self._settings.http_read_timeout_s):
                body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large(limit)
        except TimeoutError:
            return await _hang_up(request, self._settings.http_read_timeout_s)
        if len(body) > limit:
            return _too_large(limit)
        content_type = request.headers.get("Content-Type", "")
        if not (content_type.isascii() and content_type.isprintable()):
            # aiohttp hands undecodable bytes on as surrogates: forwarding them would fail in the NATS client (a 500)
            return _error(400, "bad_header", "the Content-Type header must be printable ASCII (RFC 9110 field value)")
        forward = {"Content-Type": content_type} if "json" in content_type or "msgpack" in content_type else None
        symbol = _symbol_of(body, forward["Content-Type"] if forward else None, limit)
        subject = PREDICT if symbol is None else predict_part(partition_of(symbol, self._settings.partitions))
        trace = clean_traceparent(request.headers.get(TRACEPARENT))
        if self._tracing is None:
            if trace is not None:
                forward = {**(forward or {}), TRACEPARENT: trace}
            return await self._forward(subject, body, forward)
        attributes = {"http.request.method": "POST", "http.route": _R_PREDICT, "url.path": request.path}
        with self._tracing.server_span(f"POST {_R_PREDICT}", trace, attributes) as span:
            mine = self._tracing.current_traceparent()
            if mine is not None:
                forward = {**(forward or {}), TRACEPARENT: mine}
            response = await self._forward(subject, body, forward)
            span.set_attribute("http.response.status_code", response.status)
            return response

    async def _analytics(self, request: web.Request) -> web.Response:
        symbol = request.match_info.get("symbol")
        body = json.dumps({"symbol": symbol} if symbol is not None else {}).encode()
        return await self._forward(ANALYTICS_GET, body, {"Content-Type": "application/json"})

    async def _info(self, request: web.Request) -> web.Response:
        return await self._forward(MODEL_INFO, b"", None)

    async def _health(self, request: web.Request) -> web.Response:
        connected = self._nc.is_connected
        worker = False
        if connected:
            try:
                await self._nc.request(_PING, b"", timeout=min(_HEALTH_TIMEOUT_S, self._settings.request_timeout_s))
                worker = True
            except (NoRespondersError, NatsTimeoutError, ConnectionClosedError, ConnectionDrainingError):
                worker = False
        body = {"status": "ok" if connected and worker else "unavailable", "nats": connected, "worker": worker}
        return web.json_response(body, status=200 if connected and worker else 503)

    async def _spec(self, request: web.Request) -> web.Response:
        return web.json_response(self._openapi)

    async def _render_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _forward(self, subject: str, body: bytes, headers: dict[str, str] | None) -> web.Response:
        nc = self._nc
        if not nc.is_connected:
            return _error(503, "nats_unavailable", "the gateway is not connected to NATS")
        timeout = self._settings.request_timeout_s
        deadline = time.monotonic() + timeout
        try:
            try:
                msg = await nc.request(subject, body, timeout=timeout, headers=headers)
            except NoRespondersError:
                if not subject.startswith(PREDICT + "."):
                    raise
                # No owner listens on the partition's subject: a worker of the queue group forwards or says why.
                subject = PREDICT
                msg = await nc.request(subject, body, timeout=max(deadline - time.monotonic(), 0.001), headers=headers)
        except NoRespondersError:
            return _error(503, "no_worker", f"no worker is serving {subject}")
        except NatsTimeoutError:
            return _error(504, "timeout", f"no reply from a worker within {timeout:g}s")
        except (ConnectionClosedError, ConnectionDrainingError, OutboundBufferLimitError) as exc:
            return _error(503, "nats_unavailable", str(exc))
        reply_headers = msg.headers or {}
        code = reply_headers.get(ERROR_CODE_HEADER)
        status = 200 if code is None else _reply_status(code)
        content_type = reply_headers.get("Content-Type") or CONTENT_TYPES["json" if msg.data[:1] == b"{" else "msgpack"]
        return web.Response(status=status, body=msg.data, headers={"Content-Type": content_type})


async def run_gateway(settings: Settings, *, stop: asyncio.Event) -> None:
    """``spark-ml gateway``: serve HTTP at once, connect to NATS in the background (retrying forever), run until
    ``stop`` is set. Until NATS is reachable, requests get 503 right away."""
    nc = Client()
    tracing = tracing_for(settings, "spark-ml-gateway")
    gateway = HttpGateway(nc, settings, tracing=tracing)
    await gateway.start()
    connecting = asyncio.create_task(_connect(nc, settings), name="gateway-nats-connect")
    try:
        await stop.wait()
    finally:
        await gateway.stop()
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        if nc.is_connected:
            await nc.drain()
        elif not nc.is_closed:
            await nc.close()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)  # flushes the exporter: network I/O
        log.info("gateway: stopped")


async def _connect(nc: Client, settings: Settings) -> None:
    await nc.connect(**connect_options(settings, name="spark-ml-gateway", **_log_callbacks()))
    log.info("gateway: nats: connected to %s", safe_url(nc.connected_url.geturl()) if nc.connected_url else "?")


def _log_callbacks() -> dict[str, Any]:
    """Connection callbacks that log each distinct connection problem once, not at every retry."""
    last: list[str] = []

    async def error_cb(exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        if last != [text]:
            last[:] = [text]
            log.warning("gateway: nats: %s", text)

    async def disconnected_cb() -> None:
        log.warning("gateway: nats: disconnected")

    async def reconnected_cb() -> None:
        last.clear()
        log.info("gateway: nats: connected")

    return {"error_cb": error_cb, "disconnected_cb": disconnected_cb, "reconnected_cb": reconnected_cb}
