"""Predictions as an async iterator of typed objects (:class:`PredictionStream`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Literal

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from spark_ml.client.wire import prediction_from
from spark_ml.core.contracts import Prediction
from spark_ml.core.errors import InvalidInput

__all__ = ["OnBadMessage", "PredictionStream"]

log = logging.getLogger(__name__)

OnBadMessage = Literal["raise", "skip"]


class PredictionStream:
    """The predictions published on one subject, as :class:`Prediction` objects, in the order they arrive.

    An async context manager (subscribes on entry, unsubscribes on exit) and an async iterator; iterated without
    ``async with`` it subscribes at the first ``__anext__`` and stays subscribed until :meth:`close` or the
    client's ``close()``. Enter it before publishing what it should see: NATS delivers only what is published
    after the subscription reached the server.

    Args:
        nc: a connected NATS client.
        subject: ``ml.prediction`` (or ``ml.prediction.shadow``).
        queue: a queue group, so that several subscribers share the predictions instead of each getting all.
        on_bad_message: ``raise`` (:class:`InvalidInput` from ``__anext__``; the stream stays usable) or
            ``skip`` (log and go on) for a message that is not a Prediction.
    """

    def __init__(self, nc: Client, subject: str, *, queue: str = "", on_bad_message: OnBadMessage = "raise") -> None:
        self._nc = nc
        self.subject = subject
        self._queue = queue
        self._on_bad = on_bad_message
        self._sub: Subscription | None = None
        self._messages: AsyncIterator[Msg] | None = None
        self._closed = False

    async def open(self) -> PredictionStream:
        """Subscribe, and return once the server has the subscription (idempotent)."""
        if self._sub is None and not self._closed:
            self._sub = await self._nc.subscribe(self.subject, queue=self._queue)
            self._messages = self._sub.messages
            # nats-py 2.16: one flush's PING can overtake a SUB still in the client's buffer; the second follows it.
            await self._nc.flush()
            await self._nc.flush()
        return self

    async def close(self) -> None:
        """Unsubscribe; iteration then ends."""
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None and not self._nc.is_closed:
            await sub.unsubscribe()

    async def __aenter__(self) -> PredictionStream:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __aiter__(self) -> PredictionStream:
        return self

    async def __anext__(self) -> Prediction:
        await self.open()
        while True:
            if self._messages is None:
                raise StopAsyncIteration
            msg = await anext(self._messages)
            try:
                return prediction_from(msg.data, msg.headers)
            except InvalidInput as exc:
                if self._on_bad == "raise":
                    raise
                log.warning("%s: skipped a message that is not a Prediction: %s", self.subject, exc.message)
