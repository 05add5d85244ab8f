"""The ``ml.predict`` NATS micro service (``spark-ml``): decode, score one snapshot, reply in the request's encoding.

Every request gets exactly one reply: a Prediction, or ``{"error": {"code", "message"}}`` with the micro
error headers ``Nats-Service-Error`` / ``Nats-Service-Error-Code`` (400 bad input, 413 oversized, 500 model
failure, 503 ``unavailable``: no owner of the symbol's partition now). The service also answers
``$SRV.PING|INFO|STATS`` through ``nats.micro``; in ``$SRV.INFO`` each endpoint's metadata carries its request, reply
and error schemas (:func:`spark_ml.core.specs.micro.endpoint_metadata`).

Why the handler replies to errors itself: in nats-py 2.16 an endpoint counts an error only when its
handler raises, and for a raised ``ServiceError`` it replies ``respond_error(code, description)`` with an
empty body (``nats/micro/service.py``, ``Endpoint._handle_request``), so the ``{"error": ...}`` body of our
contract cannot travel that way. The handler therefore sends the error reply with its body and counts it,
and the service's ``stats_handler`` (the documented STATS hook, which receives each endpoint's stats before
they are serialized) adds those counts to ``num_errors``/``last_error``: ``$SRV.STATS`` stays honest.

Partitions (docs/SCALEOUT.md, ``ml.predict``): a symbol's features live with the worker that owns its
partition, so a request is answered there. The service follows the worker's :class:`OwnedUnits`: for each
partition n it owns it answers ``ml.predict.part.<n>`` (callers that know the partition, like the HTTP gateway,
address the owner directly). A plain ``ml.predict`` (queue group: any worker) is decoded; when this worker owns
the symbol's partition it answers at once (no extra hop), otherwise it requests ``ml.predict.part.<n>`` with the
same bytes and headers and relays the owner's reply (body and headers, error headers included) unchanged.
When nobody answers there (no owner during a hand-over, or no reply within ``forward_timeout_s``) the reply is
503 ``unavailable``: never an answer from a worker that does not own the symbol's state. A request on
``ml.predict.part.<n>`` that reaches a worker which no longer owns the symbol's partition (it was given up while
the request was queued) gets the same 503; requests there are never forwarded again. A worker that is stopping
(its connection draining) answers 503 ``unavailable`` for partitions it does not own instead of forwarding.
``num_requests`` in STATS counts the requests of the partition subjects too (a forwarded request is counted by
the worker that forwarded it and by the owner).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, Unpack, cast

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import EndpointStats, Service, ServiceConfig

from spark_ml.core import subjects
from spark_ml.core.codec import CONTENT_TYPES, DEFAULT_MAX_PAYLOAD, Encoding, SnapshotParser, detect_encoding, encode
from spark_ml.core.contracts import ErrorReply, ModelInfo, Prediction, PredictRequest
from spark_ml.core.engine import Engine
from spark_ml.core.errors import InvalidInput, SparkMlError
from spark_ml.core.models.base import Model
from spark_ml.core.outcomes import Outcome, internal_failure, outcome_of, unavailable
from spark_ml.core.partition import DEFAULT_PARTITIONS, partition_of, predict_part
from spark_ml.core.specs.micro import endpoint_metadata
from spark_ml.core.subjects import PREDICT, QUEUE_GROUP, SERVICE_NAME
from spark_ml.core.tracecontext import TRACEPARENT
from spark_ml.worker.cluster.owned import OwnedUnits
from spark_ml.worker.lifecycle import cancel_all
from spark_ml.worker.metrics import Metrics, Status

if TYPE_CHECKING:  # the SDK is optional: imported only when tracing is on
    from spark_ml.worker.tracing import Tracing

__all__ = ["CONTENT_TYPES", "MODEL_INFO", "PredictService"]

log = logging.getLogger(__name__)

MODEL_INFO = subjects.MODEL_INFO

_ENGINE_CACHE = 8
"""Engines kept for non-live versions asked by ``"model"``: each is a model in memory."""
_DESCRIPTION_MAX = 256
_FORWARDS_MAX = 1024
"""Forwarded requests awaiting their owner's reply at once. Beyond it the endpoint awaits the forward itself, so
that backpressure reaches the subscription's pending limits instead of piling up tasks."""
_PART_CACHE_MAX = 100_000


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
    partitions: NotRequired[int]
    owned: NotRequired[OwnedUnits | None]
    forward_timeout_s: NotRequired[float]
    tracing: NotRequired[Tracing | None]


class _Elsewhere(Exception):
    """Control flow, not a failure: the request's symbol lives in a partition this worker does not own."""

    def __init__(self, symbol: str, part: int) -> None:
        super().__init__(symbol, part)
        self.symbol = symbol
        self.part = part


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
    """The ``spark-ml`` micro service: endpoints ``ml.predict`` and ``ml.model.info`` in a queue group, and
    ``ml.predict.part.<n>`` for each partition n this worker owns (see the module docstring).

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
        partitions: the symbol partitions P (``settings.partitions``).
        owned: the units this worker owns, as its intake reports them; None: every unit (a single worker).
        forward_timeout_s: how long a forwarded request waits for its owner's reply.
        tracing: a span per request (``ml.predict``, child of the request's ``traceparent``); a forwarded
            request carries its context to the owner. None: no span, the headers go on unchanged.
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
        partitions: int = DEFAULT_PARTITIONS,
        owned: OwnedUnits | None = None,
        forward_timeout_s: float = 2.0,
        tracing: Tracing | None = None,
    ) -> None:
        self._nc = nc
        self._tracing = tracing
        self._engine = engine
        self._metrics = metrics
        self._parser = SnapshotParser(max_payload)
        self._resolve_model = resolve_model
        self._model_info = model_info
        self._engines: dict[str, Engine] = {}
        self._tallies: dict[str, _Tally] = {"predict": _Tally(), "model-info": _Tally()}
        self._service: Service | None = None
        self._stopped = False
        self._partitions = partitions
        self._owned = owned if owned is not None else OwnedUnits.everything(partitions)
        self._forward_timeout_s = forward_timeout_s
        self._part_subs: dict[int, Subscription] = {}
        self._part_requests = 0
        self._part_cache: dict[str, int] = {}
        self._forwards: set[asyncio.Task[None]] = set()
        self._owned_changed = asyncio.Event()
        self._follower: asyncio.Task[None] | None = None
        self._unlisten: Callable[[], None] | None = None

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
        meta = endpoint_metadata(PredictRequest, Prediction)
        await service.add_endpoint(name="predict", subject=PREDICT, handler=self._on_predict, metadata=meta)
        meta = endpoint_metadata(None, ModelInfo, content_types="application/json")
        await service.add_endpoint(name="model-info", subject=MODEL_INFO, handler=self._on_model_info, metadata=meta)
        self._unlisten = self._owned.listen(lambda _owned: self._owned_changed.set())
        await self._follow_owned()
        self._follower = asyncio.create_task(self._follow_loop(), name="spark-ml-predict-parts")
        # add_endpoint does not flush: without this a request sent right after start() may find no responder.
        await _server_has_seen(nc)
        log.info("service %s %s serving %s and %s", SERVICE_NAME, config.version, PREDICT, MODEL_INFO)
        return self

    async def stop(self) -> None:
        """Unsubscribe the endpoints and the control subjects (see the class docstring for the order)."""
        if self._stopped or self._service is None:
            return
        self._stopped = True
        if self._unlisten is not None:
            self._unlisten()
        if self._follower is not None:
            await cancel_all([self._follower])
        if self._forwards:
            _, late = await asyncio.wait(set(self._forwards), timeout=self._forward_timeout_s)
            for task in late:
                task.cancel()
        if self._nc.is_closed or self._nc.is_draining:
            return  # the drain has taken down (and answered) every subscription already
        subs, self._part_subs = list(self._part_subs.values()), {}
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
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

    @property
    def answering(self) -> frozenset[int]:
        """The partitions whose ``ml.predict.part.<n>`` this service is subscribed to now."""
        return frozenset(self._part_subs)

    async def _follow_loop(self) -> None:
        while True:
            await self._owned_changed.wait()
            self._owned_changed.clear()
            try:
                await self._follow_owned()
            except Exception:
                log.exception("ml.predict: following the owned partitions failed; retrying at the next change")

    async def _follow_owned(self) -> None:
        """Subscribe ``ml.predict.part.<n>`` for each partition owned now, drain those given up."""
        owned = {n for n in self._owned.current if n < self._partitions}
        for n in sorted(owned - self._part_subs.keys()):
            self._part_subs[n] = await self._nc.subscribe(predict_part(n), queue=QUEUE_GROUP, cb=self._on_part)
        gone = [self._part_subs.pop(n) for n in sorted(self._part_subs.keys() - owned)]
        if gone:
            # Drain rather than unsubscribe: the requests already queued get a reply (503: the partition is gone).
            await asyncio.gather(*(sub.drain() for sub in gone), return_exceptions=True)  # type: ignore[no-untyped-call]

    def _part_of(self, symbol: str) -> int:
        part = self._part_cache.get(symbol)
        if part is None:
            part = partition_of(symbol, self._partitions)
            if len(self._part_cache) >= _PART_CACHE_MAX:
                self._part_cache.clear()
            self._part_cache[symbol] = part
        return part

    async def _on_predict(self, request: Request) -> None:
        if self._tracing is None:
            await self._predict(request, forward=True)
        else:
            await self._traced(request, forward=True)

    async def _on_part(self, msg: Msg) -> None:
        self._part_requests += 1
        if self._tracing is None:
            await self._predict(Request(msg), forward=False)
        else:
            await self._traced(Request(msg), forward=False)

    async def _traced(self, request: Request, *, forward: bool) -> None:
        """:meth:`_predict` inside an ``ml.predict`` span; a forwarded request carries the span's context."""
        assert self._tracing is not None
        parent = request.headers.get(TRACEPARENT) if request.headers else None
        attributes = {"messaging.system": "nats", "messaging.destination.name": request.subject}
        with self._tracing.server_span(PREDICT, parent, attributes):
            await self._predict(request, forward=forward)

    async def _predict(self, request: Request, *, forward: bool) -> None:
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
            part = self._part_of(snap.symbol)
            if part not in self._owned.current:
                raise _Elsewhere(snap.symbol, part)
            engine = live if wanted is None or wanted == model_version else await self._engine_for(wanted)
            model_version = engine.model.version
            result = engine.run_batch([snap], commit=False)
            if result.rejected:
                raise result.rejected[0][1]
            prediction = result.wire(time.perf_counter())[0]
            body = encode(prediction, encoding)
        except _Elsewhere as elsewhere:
            await self._hand_on(request, elsewhere.symbol, elsewhere.part, encoding, model_version, forward=forward)
            return
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

    async def _hand_on(
        self, request: Request, symbol: str, part: int, encoding: Encoding, model_version: str, *, forward: bool
    ) -> None:
        """A request for a partition this worker does not own: forward it to the owner, or refuse it (503)."""
        if not forward:
            why = "this worker does not own it (given up while the request was queued); retry"
            await self._unavailable(request, symbol, part, why, encoding, model_version)
        elif self._nc.is_draining:
            await self._unavailable(request, symbol, part, "this worker is stopping; retry", encoding, model_version)
        elif len(self._forwards) >= _FORWARDS_MAX:
            await self._forward(request, symbol, part, encoding, model_version)
        else:
            # A task: the endpoint's subscription handles one request at a time, and must not wait a round trip.
            task = asyncio.create_task(self._forward(request, symbol, part, encoding, model_version))
            self._forwards.add(task)
            task.add_done_callback(self._forwards.discard)

    async def _forward(self, request: Request, symbol: str, part: int, encoding: Encoding, model_version: str) -> None:
        """Ask the owner of ``part`` (``ml.predict.part.<part>``) and relay its reply, headers included."""
        timeout = self._forward_timeout_s
        headers = request.headers
        if self._tracing is not None:  # the owner's span is a child of this one (the task inherited it)
            tp = self._tracing.current_traceparent()
            if tp is not None:
                headers = {**(headers or {}), TRACEPARENT: tp}
        try:
            reply = await self._nc.request(predict_part(part), request.data, timeout=timeout, headers=headers)
        except NoRespondersError:
            why = "no worker owns it now (a hand-over in progress?); retry shortly"
        except NatsTimeoutError:
            why = f"its owner did not answer within {timeout:g}s"
        except Exception as exc:  # the connection is closing or closed: nobody to ask
            why = f"could not reach its owner ({type(exc).__name__}: {exc})"
        else:
            await self._send(request.respond(reply.data, headers=reply.headers))
            return
        await self._unavailable(request, symbol, part, why, encoding, model_version)

    async def _unavailable(
        self, request: Request, symbol: str, part: int, why: str, encoding: Encoding, model_version: str
    ) -> None:
        self._metrics.predict_requests.labels(model_version, Status.ERROR).inc()
        outcome = unavailable(f"symbol {symbol!r} (partition {part} of {self._partitions}): {why}")
        await self._refuse(request, "predict", outcome, encoding, None)

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
        if stats.name == "predict":
            stats.num_requests += self._part_requests
        stats.num_errors += tally.errors
        if tally.last_error:
            stats.last_error = tally.last_error
        return {"errors_by_status": dict(tally.by_status)}
