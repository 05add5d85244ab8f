"""The peer: ``python -m spark_ml.scripts.harness.fs_peer --url ...``: the echo job, idiomatic FastStream.

FastStream is what a Python developer would reach for to write a NATS consumer. This app does the
ceiling's job (decode the msgpack snapshot, re-encode it, publish it on the prediction subject) the way
FastStream's documentation shows: a subscriber in the queue group, a custom msgpack decoder, the return
value published by a ``@publisher`` decorator, access logging switched off. It does strictly less work
than ``spark-ml worker``, so "N times FastStream" measured against it is a conservative figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgpack
from faststream import FastStream
from faststream.nats import NatsBroker, NatsMessage

from spark_ml.scripts.harness.payloads import PREDICTION_SUBJECT, SNAPSHOT_SUBJECT

__all__ = ["build_app", "main"]

QUEUE_GROUP = "ml-workers"


async def _decode_msgpack(msg: NatsMessage) -> Any:
    return msgpack.unpackb(msg.body)


def build_app(url: str, subject: str = SNAPSHOT_SUBJECT, out: str = PREDICTION_SUBJECT) -> FastStream:
    """The FastStream application: one subscriber, one publisher, no logger."""
    broker = NatsBroker(url, logger=None)

    @broker.subscriber(subject, queue=QUEUE_GROUP, decoder=_decode_msgpack)
    @broker.publisher(out)
    async def handle(body: dict[str, Any]) -> bytes:
        return msgpack.packb(body)

    return FastStream(broker, logger=None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.fs_peer")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default=SNAPSHOT_SUBJECT)
    ap.add_argument("--out", default=PREDICTION_SUBJECT)
    args = ap.parse_args(argv)
    # FastStream.run() installs its own SIGINT/SIGTERM handlers and stops the broker gracefully.
    asyncio.run(build_app(args.url, args.subject, args.out).run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
