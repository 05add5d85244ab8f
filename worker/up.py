"""``spark-ml up``: the whole service in one process, on an embedded nats-server when none answers.

The HTTP gateway comes in as a service factory from the composition root (``spark_ml.worker.cli``), so that the
worker layer never imports the gateway layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from spark_ml.core.partition import server_mappings
from spark_ml.worker.app import ServiceFactory, WorkerApp
from spark_ml.worker.connect import safe_url
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.run import predict_service
from spark_ml.worker.settings import Settings

__all__ = ["PortService", "up"]

log = logging.getLogger(__name__)
EMBEDDED_DIR = Path(".spark-ml/nats")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


async def ensure_nats(settings: Settings) -> NatsServer | None:
    """Start the embedded nats-server (JetStream under .spark-ml/nats, the partition mapping of
    ``settings.partitions``) when nothing answers on loopback."""
    url = urlsplit(settings.servers[0])
    host, port = url.hostname or "127.0.0.1", url.port or 4222
    if await _answers(host, port):
        return None
    if not _is_loopback(host):
        where = safe_url(settings.servers[0])
        raise SystemExit(f"spark-ml up: nothing answers at {where} and it is not a loopback address")
    # With the partition mapping, as deploy/nats/nats.conf: core-mode workers find their partitions on it.
    server = NatsServer(
        host="127.0.0.1" if host == "localhost" else host,
        port=port,
        store_dir=EMBEDDED_DIR,
        mappings=server_mappings(settings.partitions),
    )
    await asyncio.to_thread(server.start)
    return server


class PortService(Protocol):
    """A started service that listens on a port (the HTTP gateway)."""

    port: int

    async def stop(self) -> None: ...


async def up(settings: Settings, *, http: ServiceFactory | None = None, analytics: bool = True) -> int:
    """Run the worker, ``ml.predict``, the analytics service and ``http`` (when given) until a signal.

    Args:
        settings: process settings.
        http: starts the HTTP gateway on the worker's connection and returns it (its ``port`` is printed).
        analytics: run the live analytics service too.
    """
    server = await ensure_nats(settings)
    try:
        async with WorkerApp(settings, services=[predict_service], handle_signals=True) as app:
            assert app.nc is not None
            if server is not None:  # a second Ctrl-C must not leave the embedded server behind
                app.on_hard_exit.append(server.kill)
            extras: list[Any] = []
            http_port = None
            if http is not None:
                gw = await http(app)
                extras.append(gw)
                http_port = getattr(gw, "port", None)
            if analytics:
                from spark_ml.worker.services.analytics import analytics_from_settings

                svc = analytics_from_settings(app.nc, settings)
                await svc.start()
                extras.append(svc)
            _banner(settings, server, app, http_port, analytics=analytics)
            try:
                await app.stop_event.wait()
            finally:
                for extra in reversed(extras):
                    with contextlib.suppress(Exception):
                        await extra.stop()
    finally:
        if server is not None:
            await asyncio.to_thread(server.cleanup)
    return 0


def _banner(
    settings: Settings, server: NatsServer | None, app: WorkerApp, http_port: int | None, *, analytics: bool = False
) -> None:
    host = settings.bind_host
    # Never the URL as given: it may carry a user and password (nats://svc:secret@host:4222).
    given = ", ".join(safe_url(s) for s in settings.servers)
    nats_line = f"{safe_url(server.url)} (embedded, JetStream in {server.store_dir})" if server else given
    lines = [
        "spark-ml up",
        f"  NATS      {nats_line}",
        "  stream    market.snapshot, market.snapshot.<SYMBOL>  ->  ml.prediction   (bad input -> ml.dlq.snapshot)",
        f"  model     {app.engine.model.version}   (registry: {settings.registry})",
        "  predict   nats request ml.predict '{\"snapshot\": {...}}'",
    ]
    if http_port is not None:
        lines.append(
            f"  HTTP      POST http://{host}:{http_port}/ml/predict   GET /ml/health /ml/model/info /ml/metrics"
        )
    if analytics:
        where = f"   GET http://{host}:{http_port}/ml/analytics[/SYMBOL]" if http_port is not None else ""
        lines.append(f'  analytics nats request analytics.get \'{{"symbol": "EURUSD"}}\'{where}')
    if app.sidecar is not None:
        lines.append(f"  metrics   http://{host}:{app.sidecar.port}/metrics   /healthz /readyz")
    lines.append("  Ctrl-C to stop")
    print("\n".join(lines), flush=True)
