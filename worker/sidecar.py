"""The metrics sidecar: ``/metrics``, ``/healthz`` (liveness: restart me when it fails) and ``/readyz`` (it takes
traffic)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from spark_ml.worker.lifecycle import Lifecycle
from spark_ml.worker.metrics import Metrics

__all__ = ["MetricsServer"]


@dataclass(eq=False)
class MetricsServer(Lifecycle):
    """A small aiohttp server on the event loop of the worker.

    Args:
        metrics: what ``/metrics`` exposes.
        host, port: where to listen (port 0 picks a free one; see :attr:`port`).
        ready: returns True when the worker is connected and consuming.
        before_scrape: refreshes gauges (queue depth) just before rendering.
        alive: returns False when the worker cannot recover by itself (its connection is closed for good, or
            its read loop has stopped); ``/healthz`` then answers 503. None: alive while the server answers.
    """

    metrics: Metrics
    _: KW_ONLY
    host: str
    port: int
    ready: Callable[[], bool]
    before_scrape: Callable[[], None] | None = None
    alive: Callable[[], bool] | None = None
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)

    async def _metrics(self, _: web.Request) -> web.Response:
        if self.before_scrape is not None:
            self.before_scrape()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        if self.alive is not None and not self.alive():
            return web.json_response({"status": "down"}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        ready = self.ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            # aiohttp does not expose the bound port; the runner's first address holds it.
            self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
