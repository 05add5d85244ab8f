"""Core NATS intake: queue-group subscriptions on the snapshot subjects, at-most-once.

When a shard is full the intake waits, it does not drop: on the direct route (the usual one) the client's
reader pauses, so the backlog stays in the socket and the server's buffer for this client; on nats-py's plain
callback route the client buffers up to the pending limits below, then drops and reports a slow consumer.
"""

from __future__ import annotations

import contextlib
import logging

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from spark_ml.core import subjects
from spark_ml.worker.intake.base import AtMostOnce, Processor
from spark_ml.worker.natsio.directsub import subscribe_direct, unroute
from spark_ml.worker.pipeline.publish import NatsOutput

__all__ = ["CoreIntake"]

log = logging.getLogger(__name__)

# Bounds on what the NATS client buffers for a core subscription on its plain callback route: beyond them
# it drops and reports a slow consumer (counted in ml_slow_consumer_drops_total), so a burst cannot grow
# memory without limit. The direct route buffers nothing in the client: its reader waits instead.
_PENDING_MSGS = 65_536
_PENDING_BYTES = 64 * 1024 * 1024


class CoreIntake:
    """Queue-group subscriptions on ``market.snapshot`` and ``market.snapshot.>`` (at-most-once).

    Args:
        nc: the connection; predictions and dead letters go out on it as core publishes.
    """

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self.settlement = AtMostOnce()
        self.output = NatsOutput(nc)
        self._subs: list[Subscription] = []
        self.direct = False
        """Whether messages go from the client's parser straight to the processor (see
        spark_ml.worker.natsio.directsub)."""

    async def start(self, processor: Processor) -> None:
        for subject in (subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD):
            sub, self.direct = await subscribe_direct(
                self.nc,
                subject,
                queue=subjects.QUEUE_GROUP,
                handler=processor.on_raw,
                fast=processor.on_raw_sync,
                undecodable=processor.reject,
                pending_msgs_limit=_PENDING_MSGS,
                pending_bytes_limit=_PENDING_BYTES,
            )
            self._subs.append(sub)
        if not self.direct:
            log.warning("nats-py internals changed: core intake runs through plain callbacks (slower)")

    async def stop(self) -> None:
        # drain, not unsubscribe: messages already buffered in the client are still processed.
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()  # type: ignore[no-untyped-call]
            unroute(self.nc, sub)
        self._subs.clear()
