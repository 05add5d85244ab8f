"""Runners for the long-lived worker-side commands: worker (one or several processes), analytics, health check.

The HTTP gateway is another layer: the CLI (the composition root) starts it, never this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING, Any

from spark_ml.worker.settings import Settings
from spark_ml.worker.settings_flags import env_var

if TYPE_CHECKING:
    from spark_ml.worker.app import Stoppable, WorkerApp

__all__ = ["analytics", "check", "predict_service", "run_procs", "stop_on_signals", "worker"]

log = logging.getLogger(__name__)


def stop_on_signals() -> asyncio.Event:
    """An event set by the first SIGTERM/SIGINT; a second one exits at once."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def handler(sig: int) -> None:
        if stop.is_set():
            log.warning("second %s: exiting at once", signal.Signals(sig).name)
            os._exit(1)
        log.info("%s: stopping", signal.Signals(sig).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig)
    return stop


async def predict_service(app: WorkerApp) -> Stoppable:
    """The ``ml.predict`` micro service on the worker's connection, engine and models, answering for the
    partitions the worker's intake owns (``app.owned``)."""
    from spark_ml.worker.services.predict import PredictService

    assert app.nc is not None
    return await PredictService.start(
        app.nc,
        engine=app.engine,
        metrics=app.metrics,
        resolve_model=app.models.resolve,
        model_info=app.model_info,
        max_payload=app.settings.max_payload,
        partitions=app.settings.partitions,
        owned=app.owned,
        forward_timeout_s=app.settings.request_timeout_s,
        tracing=app.tracing,
    )


async def worker(settings: Settings) -> int:
    from spark_ml.worker.app import run_worker

    await run_worker(settings, services=[predict_service])
    return 0


async def analytics(settings: Settings) -> int:
    from spark_ml.worker.connect import connect
    from spark_ml.worker.services.analytics import analytics_from_settings

    stop = stop_on_signals()
    nc = await connect(settings, name=f"spark-ml-analytics-{os.getpid()}")
    try:
        async with analytics_from_settings(nc, settings):
            await stop.wait()
    finally:
        await nc.close()
    return 0


def check(settings: Settings) -> int:
    """Health check for compose and Kubernetes probes: GET /readyz on the local metrics port."""
    host = "127.0.0.1" if settings.bind_host in ("0.0.0.0", "::") else settings.bind_host
    url = f"http://{host}:{settings.metrics_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            ok = resp.status == 200
    except Exception as exc:
        print(f"spark-ml worker --check: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


def _env_for(settings: Settings, **overrides: Any) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if name.endswith("_file"):
            # The secret it named is passed read (below), and a child refuses both spellings at once.
            env.pop(f"SPARK_ML_{name.upper()}", None)
            continue
        if value is None:
            continue
        secret = getattr(value, "get_secret_value", None)
        if secret is not None:
            value = secret()
        elif isinstance(value, (tuple, list)):
            value = ",".join(str(v) for v in value)
        env[env_var(name)] = str(value)  # OTEL_* for the settings that read a standard variable
    for name, value in overrides.items():
        env[f"SPARK_ML_{name.upper()}"] = str(value)
    return env


def run_procs(settings: Settings, procs: int) -> int:
    """Run ``procs`` partitioned worker processes: each its own member, splitting the symbol partitions with
    every other worker of the deployment (docs/SCALEOUT.md); metrics ports counted up from the base port
    (each a free port when the base is 0).

    The children run in their own process group, so a terminal's Ctrl-C reaches them once, through this
    process (a second one exits them at once, as for one worker); SIGHUP stops them too.
    """
    children = []
    for i in range(procs):
        port = settings.metrics_port + i if settings.metrics_port else 0
        env = _env_for(settings, metrics_port=port)
        cmd = [sys.executable, "-c", "from spark_ml.worker.cli import main; raise SystemExit(main())", "worker"]
        children.append(subprocess.Popen(cmd, env=env, process_group=0))
        log.info("worker process %d: pid %d, metrics port %s", i, children[-1].pid, port or "any free")

    def forward(sig: int, _: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGINT if sig == signal.SIGINT else signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
