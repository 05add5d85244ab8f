"""NATS connection from settings: servers, authentication, TLS, and callbacks that log and count."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import SlowConsumerError

from worker import fastparser
from worker.metrics import Metrics
from worker.settings import Settings

__all__ = ["connect", "connect_options"]

log = logging.getLogger(__name__)


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``nats.connect``; secrets come from settings and are never logged."""
    opts: dict[str, Any] = {"servers": settings.servers}
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
    return opts


async def connect(settings: Settings, *, name: str, metrics: Metrics | None = None, **extra: Any) -> Client:
    """Connect, reconnecting forever; disconnects, reconnects and slow-consumer drops are logged and counted."""

    async def error_cb(exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError):
            if metrics is not None:
                metrics.slow_consumer_drops.inc()
            return
        log.warning("nats: %s: %s", type(exc).__name__, exc)

    async def disconnected_cb() -> None:
        log.warning("nats: disconnected")

    async def reconnected_cb() -> None:
        if metrics is not None:
            metrics.nats_reconnects.inc()
        log.warning("nats: reconnected to %s", nc.connected_url.netloc if nc.connected_url else "?")

    async def closed_cb() -> None:
        log.info("nats: connection closed")

    opts = connect_options(settings)
    opts.update(
        name=name,
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        reconnected_cb=reconnected_cb,
        closed_cb=closed_cb,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
    )
    opts.update(extra)
    nc: Client = await nats.connect(**opts)
    if not fastparser.install(nc):
        log.warning("nats-py internals changed: using its own protocol parser (slower)")
    return nc
