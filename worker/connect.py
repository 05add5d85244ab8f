"""NATS connection from settings: servers, authentication, TLS, reconnect policy, and callbacks that log and count."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client
from nats.errors import AuthorizationError, SlowConsumerError

from spark_ml.core.errors import NatsRefused
from spark_ml.worker.metrics import Metrics
from spark_ml.worker.natsio import fastparser, router
from spark_ml.worker.settings import Settings

__all__ = ["NatsRefused", "connect", "connect_options", "safe_url"]

log = logging.getLogger(__name__)


def safe_url(url: str) -> str:
    """``scheme://host:port`` of a server URL, without any user or password in it (for logs and errors)."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or "?"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def _refusal(exc: BaseException) -> bool:
    if isinstance(exc, (AuthorizationError, ssl.SSLError)):
        return True
    text = str(exc).lower()
    return "authorization violation" in text or "authentication" in text


def connect_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect`` (or ``Client.connect``), then ``overrides`` (name, callbacks).

    Every spark-ml connection reconnects forever, every 0.5 s, giving each attempt 2 s: a worker or gateway
    outlives a NATS restart. Secrets come from settings and are never logged.
    """
    opts: dict[str, Any] = {
        "servers": settings.servers,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 0.5,
        "connect_timeout": 2,
    }
    if settings.nats_user:
        opts["user"] = settings.nats_user
        if settings.nats_password is not None:
            opts["password"] = settings.nats_password.get_secret_value()
    if settings.nats_token is not None:
        opts["token"] = settings.nats_token.get_secret_value()
    if settings.nats_creds is not None:
        opts["user_credentials"] = str(settings.nats_creds)
    if settings.nats_nkey_seed is not None:
        opts["nkeys_seed"] = str(settings.nats_nkey_seed)
    if settings.nats_tls_ca is not None or settings.nats_tls_cert is not None:
        ctx = ssl.create_default_context(cafile=str(settings.nats_tls_ca) if settings.nats_tls_ca else None)
        if settings.nats_tls_cert is not None:
            ctx.load_cert_chain(
                str(settings.nats_tls_cert), str(settings.nats_tls_key) if settings.nats_tls_key else None
            )
        opts["tls"] = ctx
    opts.update(overrides)
    return opts


async def connect(settings: Settings, *, name: str, metrics: Metrics | None = None, **extra: Any) -> Client:
    """Connect, reconnecting forever; disconnects, reconnects and slow-consumer drops are logged and counted."""

    loop = asyncio.get_running_loop()
    refused: asyncio.Future[BaseException] = loop.create_future()

    async def error_cb(exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            if metrics is not None:
                metrics.slow_consumer_drops.inc()
            return
        if not refused.done() and _refusal(exc):
            refused.set_result(exc)
        log.warning("nats: %s: %s", type(exc).__name__, exc)

    async def disconnected_cb() -> None:
        log.warning("nats: disconnected")

    async def reconnected_cb() -> None:
        if metrics is not None:
            metrics.nats_reconnects.inc()
        log.warning("nats: reconnected to %s", safe_url(nc.connected_url.geturl()) if nc.connected_url else "?")

    async def closed_cb() -> None:
        log.info("nats: connection closed")

    opts = connect_options(
        settings,
        name=name,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        closed_cb=closed_cb,
        drain_timeout=settings.drain_timeout_s,
    )
    opts.update(extra)
    # Reconnecting forever is right for an outage, wrong for a refused credential or certificate: the first
    # connection ends at the first such refusal, so the process exits with the reason instead of retrying.
    attempt: asyncio.Future[Any] = asyncio.ensure_future(nats.connect(**opts))
    await asyncio.wait([attempt, refused], return_when=asyncio.FIRST_COMPLETED)
    if not attempt.done():
        attempt.cancel()
        with contextlib.suppress(BaseException):
            await attempt
        exc = refused.result()
        servers = ", ".join(safe_url(u) for u in settings.servers)
        raise NatsRefused(f"NATS at {servers} refused this client: {type(exc).__name__}: {exc}")
    nc: Client = attempt.result()
    if not fastparser.install(nc):
        log.warning("nats-py internals changed: using its own protocol parser (slower)")
    # A frame nats-py cannot decode (any publisher can send one) must not end the read loop: skipped, counted.
    if metrics is not None:
        wire_errors = metrics.wire_errors
        fastparser.on_wire_error(nc, lambda kind: wire_errors.labels(kind).inc())
    if not router.guard(nc):
        log.warning("nats-py internals changed: an undecodable message can stop this connection's reader")
    return nc
