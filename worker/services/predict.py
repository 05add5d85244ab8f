"""The ``ml.predict`` NATS micro service (``spark-ml``): decode, score one snapshot, reply in the request's encoding.

Every request gets exactly one reply: a Prediction, or ``{"error": {"code", "message"}}`` with the micro
error headers ``Nats-Service-Error`` / ``Nats-Service-Error-Code`` (400 bad input, 413 oversized, 500 model
failure). The service also answers ``$SRV.PING|INFO|STATS`` through ``nats.micro``.

Why the handler replies to errors itself: in nats-py 2.16 an endpoint counts an error only when its
handler raises, and for a raised ``ServiceError`` it replies ``respond_error(code, description)`` with an
empty body (``nats/micro/service.py``, ``Endpoint._handle_request``), so the ``{"error": ...}`` body of our
contract cannot travel that way. The handler therefore sends the error reply with its body and counts it,
and the service's ``stats_handler`` (the documented STATS hook, which receives each endpoint's stats before
they are serialized) adds those counts to ``num_errors``/``last_error``: ``$SRV.STATS`` stays honest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, NotRequired, TypedDict, Unpack, cast

from nats.aio.client import Client
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service, ServiceConfig

from spark_ml.core import subjects
from spark_ml.core.codec import DEFAULT_MAX_PAYLOAD, Encoding, SnapshotParser, detect_encoding, encode
from spark_ml.core.contracts import ErrorReply
from spark_ml.core.engine import Engine
from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.core.models.base import Model
from spark_ml.core.outcomes import Outcome, internal_failure, outcome_of
from spark_ml.core.subjects import PREDICT, QUEUE_GROUP, SERVICE_NAME
from spark_ml.worker.metrics import Metrics, Status

__all__ = ["CONTENT_TYPES", "MODEL_INFO", "PredictService"]

log = logging.getLogger(__name__)

MODEL_INFO = subjects.MODEL_INFO
CONTENT_TYPES: dict[Encoding, str] = {"json": "application/json", "msgpack": "application/msgpack"}
"""Content type of each wire encoding, sent in the ``Content-Type`` header of every reply."""

_ENGINE_CACHE = 8
"""Engines kept for non-live versions asked by ``"model"``: each is a model in memory."""
_DESCRIPTION_MAX = 256


async def _server_has_seen(nc: Client) -> None:
    """Return once the server has processed every command sent so far (subscriptions included).

    One ``flush()`` does not prove it with nats-py 2.16: ``_send_ping`` writes its PING straight to the
    socket, ahead of commands still waiting in the client's pending buffer for the flusher task (seen here
    as no-responders for requests sent right after ``start()``, about 1 run in 10). By the time the first
    PONG is back the flusher has written that buffer, so the second PING follows it on the wire.
    """
    await nc.flush()
    await nc.flush()


def _service_version() -> str:
    try:
        return version("spark-ml")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


@dataclass(slots=True)
class _Tally:
    """Errors one endpoint answered itself (see the module docstring), by outcome."""

    errors: int = 0
    last_error: str = ""
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, status: int, code: str, message: str) -> None:
        self.errors += 1
        self.last_error = f"{status}:{code}: {message}"
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1


class _Options(TypedDict):
    """The collaborators of a :class:`PredictService` (see its docstring)."""

    engine: Engine
    metrics: Metrics
    resolve_model: Callable[[str], Model]
    model_info: Callable[[], dict[str, Any]]
    max_payload: NotRequired[int]


def _unpack(data: Any) -> tuple[Any, str | None]:
    """The snapshot and the optional model version of a request body (``{"snapshot": {...}, "model": ...}``)."""
    if type(data) is not dict:
        raise InvalidInput("request: must be a map/object with a 'snapshot'", code="schema")
    if "snapshot" not in data:
        raise InvalidInput("snapshot: required", code="schema")
    wanted = data.get("model")
    if wanted is not None and (type(wanted) is not str or not wanted):
        raise InvalidInput("model: must be a non-empty string (a registry version)", code="schema")
    return data["snapshot"], wanted


def _header_safe(text: str) -> str:
    """A header value: one line, bounded (a message may quote the sender's bytes)."""
    return " ".join(text.split())[:_DESCRIPTION_MAX]


class PredictService:
    """The ``spark-ml`` micro service: endpoints ``ml.predict`` and ``ml.model.info`` in a queue group.

    Build it with :meth:`start`. Predictions use the engine's per-symbol feature state without advancing
    it (a request must not rewrite the stream's history).

    Graceful shutdown: drain the connection (``await nc.drain()``), which answers every queued request,
    then :meth:`stop` (a no-op on a draining or closed connection). :meth:`stop` alone unsubscribes, as
    ``nats.micro`` does, and requests still queued in the client are dropped.

    Args:
        nc: a connected NATS client.
        engine: the stream's engine; its live model (``engine.model``) answers requests without ``"model"``.
        metrics: the process's metric set.
        resolve_model: a registry version -> its model; raises ``RegistryError`` when unknown.
        model_info: what ``ml.model.info`` replies (active version, kind, feature names, created, metrics).
        max_payload: largest request body accepted, in bytes.
    """

    def __init__(
        self,
        nc: Client,
        *,
        engine: Engine,
        metrics: Metrics,
        resolve_model: Callable[[str], Model],
        model_info: Callable[[], dict[str, Any]],
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._nc = nc
        self._engine = engine
        self._metrics = metrics
        self._parser = SnapshotParser(max_payload)
        self._resolve_model = resolve_model
        self._model_info = model_info
        self._engines: dict[str, Engine] = {}
        self._tallies: dict[str, _Tally] = {"predict": _Tally(), "model-info": _Tally()}
        self._service: Service | None = None
        self._stopped = False

    @classmethod
    async def start(cls, nc: Client, **options: Unpack[_Options]) -> PredictService:
        """Build the service (same arguments as the constructor) and register its endpoints; requests are
        answered once this returns."""
        self = cls(nc, **options)
        config = ServiceConfig(
            name=SERVICE_NAME,
            version=_service_version(),
            description="spark-ml predictions: request a Prediction for one market snapshot",
            queue_group=QUEUE_GROUP,
            stats_handler=self._stats,
        )
        service = self._service = await add_service(nc, config)
        await service.add_endpoint(name="predict", subject=PREDICT, handler=self._on_predict)
        await service.add_endpoint(name="model-info", subject=MODEL_INFO, handler=self._on_model_info)
        # add_endpoint does not flush: without this a request sent right after start() may find no responder.
        await _server_has_seen(nc)
        log.info("service %s %s serving %s and %s", SERVICE_NAME, config.version, PREDICT, MODEL_INFO)
        return self

    async def stop(self) -> None:
        """Unsubscribe the endpoints and the control subjects (see the class docstring for the order)."""
        if self._stopped or self._service is None:
            return
        self._stopped = True
        if self._nc.is_closed or self._nc.is_draining:
            return  # the drain has taken down (and answered) every subscription already
        await self._service.stop()

    async def __aenter__(self) -> PredictService:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @property
    def id(self) -> str:
        """The micro service instance id (as in ``$SRV.PING`` replies)."""
        return self._service.id if self._service is not None else ""

    # --- handlers -------------------------------------------------------------------------------------

    async def _on_predict(self, request: Request) -> None:
        recv = time.perf_counter()
        raw = request.data
        headers = request.headers
        content_type = headers.get("Content-Type") if headers else None
        encoding: Encoding = detect_encoding(raw, content_type)
        live = self._engine
        model_version = live.model.version
        parser = self._parser
        try:
            data, encoding = parser.decode(raw, content_type)
            snap_data, wanted = _unpack(data)
            snap = parser.validate(snap_data, raw, request.subject, encoding, recv)
            engine = live if wanted is None or wanted == model_version else await self._engine_for(wanted)
            model_version = engine.model.version
            result = engine.run_batch([snap], commit=False)
            if result.rejected:
                raise result.rejected[0][1]
            prediction = result.wire(time.perf_counter())[0]
            body = encode(prediction, encoding)
        except Exception as exc:
            if not isinstance(exc, SparkMlError):
                log.exception("ml.predict: unexpected failure")
            await self._refuse(request, "predict", outcome_of(exc), encoding, model_version)
            return
        await self._reply(request, body, encoding)
        m = self._metrics
        m.predict_requests.labels(model_version, Status.OK).inc()
        m.predict_latency.labels(model_version).observe(cast(float, prediction["latencyMs"]))
        m.feature_extractions.inc()

    async def _on_model_info(self, request: Request) -> None:
        try:
            body = json.dumps(self._model_info(), default=str).encode()
        except Exception as exc:
            log.exception("ml.model.info: model_info() failed")
            await self._refuse(request, "model-info", internal_failure(exc), "json", None)
            return
        await self._reply(request, body, "json")

    async def _engine_for(self, wanted: str) -> Engine:
        """An engine for a non-live registry version, sharing the live feature state (read-only here)."""
        engine = self._engines.get(wanted)
        if engine is None:
            # Loading an artifact reads files: keep it off the event loop.
            model = await asyncio.to_thread(self._resolve_model, wanted)
            live = self._engine
            engine = Engine(model, features=live.features, policy=live.policy)
            if len(self._engines) >= _ENGINE_CACHE:
                self._engines.pop(next(iter(self._engines)))
            self._engines[wanted] = engine
        return engine

    async def _refuse(
        self, request: Request, endpoint: str, outcome: Outcome, encoding: Encoding, model_version: str | None
    ) -> None:
        """Reply with the error body and the micro error headers, and count the refusal."""
        status, code, message = outcome.service_code, outcome.code, outcome.message
        body = encode(ErrorReply.of(code, message).wire(), encoding)
        self._tallies[endpoint].add(status, code, message)
        if model_version is not None:
            self._metrics.refused(outcome, model_version)
        log.debug("%s refused: %s %s: %s", endpoint, status, code, message)
        await self._send(
            request.respond_error(
                str(status),
                _header_safe(f"{code}: {message}"),
                data=body,
                headers={"Content-Type": CONTENT_TYPES[encoding]},
            )
        )

    async def _reply(self, request: Request, body: bytes, encoding: Encoding) -> None:
        await self._send(request.respond(body, headers={"Content-Type": CONTENT_TYPES[encoding]}))

    @staticmethod
    async def _send(reply: Awaitable[None]) -> None:
        try:
            await reply
        except ValueError:  # nats.micro's answer to a message published without a reply subject
            log.debug("request without a reply subject: nobody to answer")

    def _stats(self, stats: EndpointStats) -> dict[str, Any] | None:
        """STATS hook: add the errors answered in the handler; ``data`` holds them by status code."""
        tally = self._tallies.get(stats.name)
        if tally is None:
            return None
        stats.num_errors += tally.errors
        if tally.last_error:
            stats.last_error = tally.last_error
        return {"errors_by_status": dict(tally.by_status)}
