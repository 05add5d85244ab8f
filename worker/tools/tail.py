"""``spark-ml tail``: print messages of a subject as JSON lines (predictions by default)."""

from __future__ import annotations

import asyncio
import json
import sys

from nats.aio.msg import Msg

from spark_ml.core.codec import decode
from spark_ml.core.errors import InvalidInput
from spark_ml.worker.connect import connect, safe_url
from spark_ml.worker.run import stop_on_signals
from spark_ml.worker.settings import Settings

__all__ = ["tail"]


async def tail(settings: Settings, *, subject: str, count: int = 0) -> int:
    stop = stop_on_signals()
    seen = 0
    nc = await connect(settings, name="spark-ml-tail")

    async def on_msg(msg: Msg) -> None:
        nonlocal seen
        try:
            body, _ = decode(msg.data, max_bytes=1 << 24)
        except InvalidInput:
            body = {"raw": msg.data.decode(errors="replace")}
        line: dict[str, object] = {"subject": msg.subject, "data": body}
        if msg.headers:
            line["headers"] = msg.headers
        print(json.dumps(line, default=str), flush=True)
        seen += 1
        if count and seen >= count:
            stop.set()

    await nc.subscribe(subject, cb=on_msg)
    servers = ", ".join(safe_url(s) for s in settings.servers)
    print(f"tailing {subject} on {servers} (Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await nc.drain()
    await asyncio.sleep(0)
    return 0
