"""The spark-ml client: publish snapshots, follow predictions, request a prediction (:class:`SparkMlClient`)."""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Iterable
from types import TracebackType
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.errors import APIError, NoStreamResponseError

from spark_ml.client.stream import OnBadMessage, PredictionStream
from spark_ml.client.wire import (
    SnapshotLike,
    decode,
    encode_request,
    error_from_reply,
    headers_for,
    prediction_from,
    snapshot_wire,
)
from spark_ml.core.codec import Encoding, encode
from spark_ml.core.contracts import ModelInfo, Prediction
from spark_ml.core.errors import RequestTimeout, Unavailable
from spark_ml.core.partition import DEFAULT_PARTITIONS, partition_of, predict_part
from spark_ml.core.subjects import (
    JS_STREAM,
    MODEL_INFO,
    PREDICT,
    PREDICTION,
    PREDICTION_SHADOW,
    SNAPSHOT,
    snapshot_for,
)

__all__ = ["DEFAULT_URL", "SparkMlClient", "connect"]

DEFAULT_URL = "nats://127.0.0.1:4222"


class SparkMlClient:
    """A connection to spark-ml over NATS, speaking its wire contracts (README "Python client").

    Build it with :meth:`connect` (it then owns the connection and drains it on :meth:`close`), or around a
    connected nats-py client of yours (left open). An async context manager.

    Every snapshot is checked against :class:`~spark_ml.core.contracts.MarketSnapshot` before it is sent (a refusal
    is the :class:`~spark_ml.core.errors.InvalidInput` a worker would dead-letter it with) and published in
    ``encoding`` with its ``Content-Type``, on ``market.snapshot.<SYMBOL>`` (bare ``market.snapshot`` when it names
    no symbol). Error replies raise the exception of :mod:`spark_ml.core.errors` the worker answered with.

    Args:
        nc: a connected NATS client.
        encoding: ``msgpack`` (the default, as the workers) or ``json``; predictions of your snapshots and replies
            to your requests come back in it.
        partitions: the deployment's ``SPARK_ML_PARTITIONS``; :meth:`predict` asks the owner of the symbol's
            partition directly (``ml.predict.part.<N>``), as the HTTP gateway does.
        timeout_s: how long :meth:`predict` and :meth:`model_info` wait for a reply.
        owns_connection: drain and close ``nc`` on :meth:`close`.
    """

    def __init__(
        self,
        nc: Client,
        *,
        encoding: Encoding = "msgpack",
        partitions: int = DEFAULT_PARTITIONS,
        timeout_s: float = 2.0,
        owns_connection: bool = False,
    ) -> None:
        if encoding not in ("msgpack", "json"):
            raise ValueError(f"encoding must be 'msgpack' or 'json', not {encoding!r}")
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, not {partitions}")
        self.nc = nc
        self.encoding: Encoding = encoding
        self.partitions = partitions
        self.timeout_s = timeout_s
        self._owns = owns_connection
        self._headers = headers_for(encoding)
        self._streams: list[PredictionStream] = []

    @classmethod
    async def connect(
        cls,
        servers: str | list[str] = DEFAULT_URL,
        *,
        encoding: Encoding = "msgpack",
        partitions: int = DEFAULT_PARTITIONS,
        timeout_s: float = 2.0,
        **nats_options: Any,
    ) -> SparkMlClient:
        """Connect to NATS (``nats_options`` go to ``nats.connect``: credentials, TLS, name, ...) and wrap it."""
        nc = await nats.connect(servers, **nats_options)
        return cls(nc, encoding=encoding, partitions=partitions, timeout_s=timeout_s, owns_connection=True)

    async def close(self) -> None:
        """Close the prediction streams; drain and close the connection when the client made it."""
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.close()
        if self._owns and not self.nc.is_closed:
            await self.nc.drain()

    async def __aenter__(self) -> SparkMlClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- the stream ---------------------------------------------------------------------------------------

    async def publish(self, snapshot: SnapshotLike, *, subject: str | None = None, stored: bool = False) -> int | None:
        """Publish one snapshot (a :class:`MarketSnapshot` or a mapping with wire names); see the class docstring.

        ``subject`` overrides where it goes. Without ``stored`` the NATS client buffers it (:meth:`flush` to know the
        server has it; core mode is at-most-once) and this returns None. With ``stored`` (JetStream mode) it returns
        once the stream ``MARKET_SNAPSHOTS`` has stored it, with its stream sequence.

        Raises:
            InvalidInput: the snapshot breaks the contract (nothing is sent).
            Unavailable: ``stored``, and no stream stores the subject (code ``no_stream``) or the stream refused it
                (code ``not_stored``: full, no leader, ...).
            RequestTimeout: ``stored``, and no PubAck within ``timeout_s``.
        """
        wire = snapshot_wire(snapshot)
        return await self._send(subject or _subject_of(wire), encode(wire, self.encoding), stored)

    async def publish_many(self, snapshots: Iterable[SnapshotLike], *, stored: bool = False) -> int:
        """Publish snapshots in order (all are checked first: one refusal publishes none); returns how many.

        With ``stored`` each waits for its PubAck before the next goes (see :meth:`publish`)."""
        wires = [snapshot_wire(s) for s in snapshots]
        for wire in wires:
            await self._send(_subject_of(wire), encode(wire, self.encoding), stored)
        return len(wires)

    async def _send(self, subject: str, payload: bytes, stored: bool) -> int | None:
        if not stored:
            await self.nc.publish(subject, payload, headers=self._headers)
            return None
        js = self.nc.jetstream()
        try:
            ack = await js.publish(
                subject, payload, timeout=self.timeout_s, stream=JS_STREAM, headers=dict(self._headers)
            )
        except NoStreamResponseError:
            raise Unavailable(
                f"no stream stores {subject} (is spark-ml in jetstream mode?)", code="no_stream"
            ) from None
        except NatsTimeoutError:
            raise RequestTimeout(f"no PubAck for {subject} within {self.timeout_s:g}s") from None
        except APIError as exc:
            raise Unavailable(f"{JS_STREAM} did not store it: {exc.description or exc}", code="not_stored") from exc
        seq: int = ack.seq
        return seq

    async def flush(self, timeout_s: int = 10) -> None:
        """Return once the server has received everything published so far."""
        await self.nc.flush(timeout=timeout_s)

    def predictions(
        self, *, shadow: bool = False, queue: str = "", on_bad_message: OnBadMessage = "raise"
    ) -> PredictionStream:
        """The predictions on ``ml.prediction`` (``ml.prediction.shadow`` with ``shadow``) as typed objects.

        Use ``async with client.predictions() as stream: async for p in stream: ...`` (see
        :class:`PredictionStream`).
        """
        stream = PredictionStream(
            self.nc, PREDICTION_SHADOW if shadow else PREDICTION, queue=queue, on_bad_message=on_bad_message
        )
        self._streams.append(stream)
        return stream

    # --- request-reply ------------------------------------------------------------------------------------

    async def predict(
        self, snapshot: SnapshotLike, *, model: str | None = None, direct: bool = True, timeout_s: float | None = None
    ) -> Prediction:
        """Ask ``ml.predict`` for the prediction of one snapshot, from the symbol's state on its owner.

        It reads the worker's per-symbol state without changing it. ``model`` asks for a registry version instead
        of the live one. With ``direct`` the request goes to ``ml.predict.part.<N>`` (the owner of the symbol's
        partition; plain ``ml.predict`` when nobody listens there), else to ``ml.predict`` (a worker forwards it).

        Raises:
            InvalidInput: the snapshot or the request was refused (``code`` says why; PayloadTooLarge: 413).
            RegistryError: ``model`` is not a version of the registry (code ``unknown_model``).
            ModelError: the model failed.
            Unavailable: no worker answers for the symbol now (retry shortly).
            RequestTimeout: no reply within ``timeout_s`` (also a :class:`TimeoutError`).
        """
        body, symbol = encode_request(snapshot, model, self.encoding)
        subject = predict_part(partition_of(symbol, self.partitions)) if direct else PREDICT
        timeout = self.timeout_s if timeout_s is None else timeout_s
        msg = await self._request(subject, body, timeout, fallback=direct)
        headers = msg.headers or {}
        error = error_from_reply(msg.data, headers)
        if error is not None:
            raise error
        return prediction_from(msg.data, headers)

    async def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        """The model the workers serve now (``ml.model.info``)."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        msg = await self._request(MODEL_INFO, b"", timeout, fallback=False)
        headers = msg.headers or {}
        error = error_from_reply(msg.data, headers)
        if error is not None:
            raise error
        return ModelInfo.model_validate(decode(msg.data, headers))

    async def _request(self, subject: str, body: bytes, timeout: float, *, fallback: bool) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            try:
                return await self.nc.request(subject, body, timeout=timeout, headers=self._headers)
            except NoRespondersError:
                if not fallback:
                    raise
                # Nobody on the partition's subject (a hand-over, an older worker): a worker forwards or says why.
                subject = PREDICT
                left = max(deadline - loop.time(), 0.001)
                return await self.nc.request(subject, body, timeout=left, headers=self._headers)
        except NoRespondersError:
            raise Unavailable(f"no worker is serving {subject}", code="no_worker") from None
        except NatsTimeoutError:
            raise RequestTimeout(f"no reply on {subject} within {timeout:g}s") from None


def _subject_of(wire: dict[str, Any]) -> str:
    """``market.snapshot.<SYMBOL>`` for a snapshot that names its symbol, else bare ``market.snapshot``."""
    symbol = wire.get("symbol")
    return snapshot_for(symbol) if symbol is not None else SNAPSHOT


class _Connecting:
    """What :func:`connect` returns: await it for a client, or ``async with`` it for one closed on exit."""

    def __init__(self, servers: str | list[str], options: dict[str, Any]) -> None:
        self._servers = servers
        self._options = options
        self._client: SparkMlClient | None = None

    def __await__(self) -> Generator[Any, None, SparkMlClient]:
        return SparkMlClient.connect(self._servers, **self._options).__await__()

    async def __aenter__(self) -> SparkMlClient:
        self._client = await SparkMlClient.connect(self._servers, **self._options)
        return self._client

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._client is not None:
            await self._client.close()


def connect(servers: str | list[str] = DEFAULT_URL, **options: Any) -> _Connecting:
    """Connect a :class:`SparkMlClient` (same arguments as :meth:`SparkMlClient.connect`).

    ``async with connect(url) as ml: ...`` closes it on exit; ``ml = await connect(url)`` leaves that to you.
    """
    return _Connecting(servers, options)
