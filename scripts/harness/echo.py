"""The ceiling: ``python -m spark_ml.scripts.harness.echo --url ...``, the least a nats-py worker can do per message.

It joins the worker queue group on the snapshot subjects, decodes each msgpack snapshot, re-encodes it
and publishes it on the prediction subject. No validation, features, model or metrics: whatever a real
worker does on top of this costs throughput, so its ratio to this process (measured in the same run,
with the same payloads) says how much of the client library's speed it keeps.

With ``--respond ml.predict`` it is the request-reply ceiling instead: it answers each
``{"snapshot": {...}}`` request with the re-encoded snapshot.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import msgpack
import nats
from nats.aio.msg import Msg

from spark_ml.scripts.harness.payloads import PREDICTION_SUBJECT, SNAPSHOT_SUBJECT

__all__ = ["main"]

QUEUE_GROUP = "ml-workers"


async def _serve(url: str, subject: str, out: str, respond: str) -> None:
    nc = await nats.connect(url, name="bench-ceiling", allow_reconnect=False)
    publish, unpackb, packb = nc.publish, msgpack.unpackb, msgpack.packb

    async def on_msg(msg: Msg) -> None:
        await publish(out, packb(unpackb(msg.data)))

    async def on_request(msg: Msg) -> None:
        await publish(msg.reply, packb(unpackb(msg.data)["snapshot"]))

    if respond:
        await nc.subscribe(respond, queue=QUEUE_GROUP, cb=on_request)
    else:
        await nc.subscribe(subject, queue=QUEUE_GROUP, cb=on_msg)
        await nc.subscribe(subject + ".>", queue=QUEUE_GROUP, cb=on_msg)
    await nc.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.echo")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default=SNAPSHOT_SUBJECT)
    ap.add_argument("--out", default=PREDICTION_SUBJECT)
    ap.add_argument("--respond", default="", help="answer requests on this subject instead (request-reply ceiling)")
    args = ap.parse_args(argv)
    asyncio.run(_serve(args.url, args.subject, args.out, args.respond))
    return 0


if __name__ == "__main__":
    sys.exit(main())
