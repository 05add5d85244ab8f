"""What the cluster modules share about KV buckets: opening one, and a create that sees through expiry markers."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Literal

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import KeyValueConfig
from nats.js.kv import KeyValue

from spark_ml.core.errors import ClusterRefused

__all__ = ["Prior", "create_key", "open_bucket"]

log = logging.getLogger(__name__)

_MARKER_TTL_S = 1.0
"""How long the server keeps the marker it writes when a key's TTL runs out (watchers see it as a PURGE)."""
_LEADER_WAIT_S = 10.0


async def _until_led(nc: Client, bucket: str) -> None:
    """Wait (bounded) until the bucket's stream has a leader: in a cluster a replicated stream answers nothing,
    writes included (no responders), between its creation and its first leader election."""
    js = nc.jetstream()
    deadline = time.monotonic() + _LEADER_WAIT_S
    while time.monotonic() < deadline:
        try:
            info = await js.stream_info(f"KV_{bucket}")
            if info.cluster is None or info.cluster.leader:
                return
        except Exception as exc:
            log.debug("KV bucket %s: no leader yet (%r)", bucket, exc)
        await asyncio.sleep(0.1)


async def open_bucket(nc: Client, bucket: str, *, ttl_s: float | None = None, replicas: int = 1) -> KeyValue:
    """Bind to ``bucket``, creating it when missing (with ``ttl_s`` as its TTL and expiry markers).

    Raises :class:`ClusterRefused` when the server has no JetStream.
    """
    js = nc.jetstream()
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        pass
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
        raise ClusterRefused(f"the NATS server has no JetStream (needed for KV bucket {bucket}): {exc!r}") from exc
    config = KeyValueConfig(bucket=bucket, ttl=ttl_s, history=1, replicas=replicas)
    if ttl_s:
        config.limit_marker_ttl = _MARKER_TTL_S
    try:
        kv = await js.create_key_value(config)
    except nats.js.errors.KeyValueLimitMarkerTTLNotSupportedError:
        # A server before 2.11: no marker when a key expires, so watchers learn it at the next resync.
        log.warning("KV bucket %s: the server writes no expiry markers (nats-server < 2.11)", bucket)
        config.limit_marker_ttl = None
        kv = await js.create_key_value(config)
    except nats.js.errors.BadRequestError:
        # Another worker created it between our look-up and our create, with its own idea of the config.
        kv = await js.key_value(bucket)
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError) as exc:
        raise ClusterRefused(f"the NATS server has no JetStream (needed for KV bucket {bucket}): {exc!r}") from exc
    if replicas > 1:
        await _until_led(nc, bucket)
    return kv


Prior = Literal["none", "released", "expired"]
"""What a key held before a create took it: nothing, a delete (a holder let go), or an expiry marker."""


async def create_key(nc: Client, bucket: str, kv: KeyValue, key: str, value: bytes) -> tuple[int, Prior]:
    """Create ``key`` of ``bucket`` if it holds no value: its revision and what it held before.

    Raises ``KeyWrongLastSequenceError`` when it holds a value. nats-py's ``create`` treats the server's expiry
    marker (``Nats-Marker-Reason``, nats-server >= 2.11) as a live value for the marker's own TTL, and does not
    say whether the key was deleted or expired; this does both.
    """
    try:
        return await kv.update(key, value, last=0), "none"
    except nats.js.errors.KeyWrongLastSequenceError:
        msg = await nc.jetstream().get_msg(f"KV_{bucket}", subject=f"$KV.{bucket}.{key}")
        headers = msg.headers or {}
        op = headers.get("KV-Operation")
        if op == "DEL":
            prior: Prior = "released"
        elif op == "PURGE" or "Nats-Marker-Reason" in headers:
            prior = "expired"
        else:
            raise
        return await kv.update(key, value, last=msg.seq), prior
