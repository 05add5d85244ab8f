"""Every running worker's live-quality windows, asked on ``ml.model.quality`` (``spark-ml model compare``).

Every worker answers that subject (it is no queue group), so one request with a private inbox gathers all
of them; answers are collected for ``wait_s`` (a worker answers within milliseconds; the wait covers the
slowest). Each answer carries the worker's windows, so the caller pools them exactly.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from nats.aio.msg import Msg
from nats.errors import NoServersError

from spark_ml.core import subjects
from spark_ml.worker.connect import connect, safe_url
from spark_ml.worker.settings import Settings

__all__ = ["gather"]


async def gather(settings: Settings, *, wait_s: float = 1.0) -> tuple[list[dict[str, Any]], list[str]]:
    """The answers of every worker that answered within ``wait_s`` (with windows), and the problems seen
    (answers that are not JSON objects, error replies); ConnectionError when NATS cannot be reached."""
    try:
        nc = await connect(settings, name="spark-ml-model-compare", allow_reconnect=False, max_reconnect_attempts=1)
    except (NoServersError, OSError) as exc:
        servers = ", ".join(safe_url(s) for s in settings.servers)
        raise ConnectionError(f"cannot reach NATS at {servers} ({type(exc).__name__})") from exc
    answers: list[dict[str, Any]] = []
    problems: list[str] = []

    async def on_reply(msg: Msg) -> None:
        try:
            doc = json.loads(msg.data)
        except ValueError as exc:
            problems.append(f"an answer that is not JSON ({exc})")
            return
        if not isinstance(doc, dict) or "error" in doc or not isinstance(doc.get("versions"), list):
            problems.append(f"an answer without versions: {str(doc)[:200]}")
            return
        answers.append(doc)

    try:
        inbox = nc.new_inbox()
        await nc.subscribe(inbox, cb=on_reply)
        await nc.publish(subjects.MODEL_QUALITY, json.dumps({"windows": True}).encode(), reply=inbox)
        await nc.flush()
        await asyncio.sleep(wait_s)
    finally:
        await nc.close()
    return answers, problems
