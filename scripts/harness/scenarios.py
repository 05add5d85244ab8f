"""The subjects under test. Adding one is one small function decorated with :func:`scenario`.

A scenario turns a :class:`Context` (the NATS URL of the server started for it, a scratch directory,
a free-port picker) into a :class:`Target`: the command that starts the process under test and its
environment. It raises :class:`Unavailable` with a reason when the thing it measures does not exist
yet; the benchmark then reports the scenario as skipped instead of failing. Stream scenarios are
measured with the publisher and sink on ``market.snapshot`` -> ``ml.prediction``; request-reply
scenarios with a NATS caller on ``ml.predict``, HTTP ones with an HTTP caller on ``/ml/predict``; the
analytics scenario with paced snapshots and a sink on ``analytics.pnl.>`` (see :mod:`spark_ml.scripts.harness.pnl`).

Snapshots go out on ``market.snapshot.<SYMBOL>``. The beds of ``spark-ml`` workers run a server with JetStream
(core mode keeps its partition leases there) and the partition mapping (docs/SCALEOUT.md), as
``deploy/nats/nats.conf`` does: a worker is partitioned by default. The ``-solo`` scenarios are the reference
for what partitioning costs: the unpartitioned queue group (core; a server without JetStream and
``SPARK_ML_SOLO=true``) or shared durable (JetStream, ``SPARK_ML_SOLO=true``) the worker ran before it,
measured in the same run (``runner.PAIRS``). The failover scenarios are measured by
:mod:`spark_ml.scripts.harness.failover`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from spark_ml.core.partition import DEFAULT_PARTITIONS, server_mappings
from spark_ml.scripts.harness.payloads import PREDICTION_SUBJECT, SNAPSHOT_WILDCARD
from spark_ml.scripts.harness.pnl import PNL_SUBJECT

__all__ = [
    "SCENARIOS",
    "Context",
    "Scenario",
    "Target",
    "Unavailable",
    "free_port",
    "scenario",
    "spark_ml_exe",
    "worker_scenario",
]

Kind = Literal["stream", "request", "http", "analytics", "analytics-api", "failover"]


class Unavailable(Exception):
    """The scenario cannot run in this tree yet (the reason is shown in the results)."""


@dataclass(frozen=True)
class Context:
    """What a scenario may use to build its target."""

    nats_url: str
    workdir: Path
    python: str = sys.executable


@dataclass(frozen=True)
class Target:
    """A process to start: the command, extra environment, and a note for the report."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    sink_subject: str = PREDICTION_SUBJECT
    """Where the sink listens (the ``floor`` scenario listens to the snapshots themselves)."""
    measure_process: bool = True
    """Whether the process's CPU and memory mean anything (not for the floor's idle placeholder)."""
    metrics_url: str = ""
    """The target's Prometheus endpoint, read at the end for its own drop and error counters."""
    http_url: str = ""
    """``POST /ml/predict`` of the target (HTTP scenarios)."""
    publisher_args: tuple[str, ...] = ()
    """Extra flags of the publisher (``--traceparent``)."""


@dataclass(frozen=True)
class Scenario:
    """A registered subject under test."""

    name: str
    title: str
    build: Callable[[Context], Target]
    kind: Kind = "stream"
    default: bool = True
    """Part of a plain ``spark-ml bench`` (otherwise only with ``--only``)."""
    jetstream: bool = False
    """Start its nats-server with JetStream."""
    partitions: int = 0
    """Give its nats-server the partition mapping for this many partitions (0: no mapping)."""

    def mappings(self) -> dict[str, str] | None:
        """The ``mappings`` of its nats-server's config, if any."""
        return server_mappings(self.partitions) if self.partitions else None


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str,
    title: str,
    *,
    kind: Kind = "stream",
    default: bool = True,
    jetstream: bool = False,
    partitions: int = 0,
) -> Callable[[Callable[[Context], Target]], Callable[[Context], Target]]:
    """Register ``fn(ctx) -> Target`` as the scenario ``name``."""

    def register(fn: Callable[[Context], Target]) -> Callable[[Context], Target]:
        SCENARIOS[name] = Scenario(name, title, fn, kind, default, jetstream, partitions)
        return fn

    return register


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def spark_ml_exe() -> str:
    """The ``spark-ml`` console script of the interpreter running the benchmark."""
    exe = Path(sys.executable).parent / "spark-ml"
    if not exe.exists():
        raise Unavailable(f"{exe} not found: install the project (pip install -e .)")
    return str(exe)


def _worker_help() -> str:
    """``spark-ml worker --help``, or Unavailable when the subcommand does not exist yet."""
    try:
        done = subprocess.run(
            [spark_ml_exe(), "worker", "--help"], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        raise Unavailable("`spark-ml worker --help` did not answer within 60 s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(f"`spark-ml worker` is not available yet ({last[:160]})")
    return done.stdout


def _worker_target(ctx: Context, *args: str, note: str = "", **extra: str) -> Target:
    """``spark-ml worker ARGS`` with the bed's environment plus ``extra`` (``SPARK_ML_*`` settings)."""
    env = _worker_env(ctx, **extra)
    return Target([spark_ml_exe(), "worker", *args], env, note=note, metrics_url=_metrics_url(env))


def _up_target(env: dict[str, str], *, http_url: str = "", sink_subject: str = PREDICTION_SUBJECT) -> Target:
    """``spark-ml up`` (worker, ml.predict, the HTTP bridge and analytics in one process) with ``env``."""
    argv = [spark_ml_exe(), "up"]
    return Target(
        argv, env, note="spark-ml up", metrics_url=_metrics_url(env), http_url=http_url, sink_subject=sink_subject
    )


def _metrics_url(env: dict[str, str]) -> str:
    return f"http://127.0.0.1:{env['SPARK_ML_METRICS_PORT']}/metrics"


def _worker_env(ctx: Context, **extra: str) -> dict[str, str]:
    registry = ctx.workdir / "registry"
    registry.mkdir(parents=True, exist_ok=True)
    return {
        "SPARK_ML_NATS_URL": ctx.nats_url,
        "SPARK_ML_BIND_HOST": "127.0.0.1",
        "SPARK_ML_METRICS_PORT": str(free_port()),
        "SPARK_ML_HTTP_PORT": str(free_port()),
        "SPARK_ML_REGISTRY": str(registry),
        **extra,
    }


@scenario("floor", "no worker: publisher -> nats-server -> sink")
def _floor(ctx: Context) -> Target:
    # The instruments' own limits: the sink reads the snapshots directly. A sleeping process stands in
    # for the worker so that every bed has the same shape.
    idle = [ctx.python, "-c", "import signal; signal.pause()"]
    return Target(idle, sink_subject=SNAPSHOT_WILDCARD, measure_process=False, note="the harness's own floor")


@scenario("ceiling", "bare nats-py echo (ceiling)")
def _ceiling(ctx: Context) -> Target:
    return Target([ctx.python, "-m", "spark_ml.scripts.harness.echo", "--url", ctx.nats_url])


P = DEFAULT_PARTITIONS
"""Partitions of the workers' beds (the worker's default)."""
_SOLO = "the unpartitioned queue group (reference)"
_TRACEPARENT = ("--traceparent",)


def prepare_tree_registry(registry: Path, kind: str = "lgbm") -> str:
    """Put a tree model (``lgbm`` or ``xgb``) trained on the synthetic bed in ``registry`` and make it active;
    returns its version."""
    from spark_ml.scripts.harness.models import train_tree_registry  # imports the library: only when one runs

    return train_tree_registry(registry, kind)


def worker_scenario(
    name: str,
    title: str,
    *,
    env: dict[str, str] | None = None,
    note: str = "",
    procs: int = 0,
    model: str = "",
    publisher_args: tuple[str, ...] = (),
    kind: Kind = "stream",
    default: bool = True,
    jetstream: bool = True,
    partitions: int = P,
) -> None:
    """Register a scenario of ``spark-ml worker`` with the ``SPARK_ML_*`` settings ``env``.

    ``procs``: run ``--procs N`` (its note says how many and whether partitioned); ``model``: train a tree model
    of this kind into the bed's registry first (the note names its version); ``publisher_args``: the publisher's
    extra flags. The rest as :func:`scenario`.
    """
    settings = env or {}

    def build(ctx: Context) -> Target:
        help_text = _worker_help()
        args: tuple[str, ...] = ()
        text = note
        if procs:
            if "--procs" not in help_text:
                raise Unavailable("`spark-ml worker --procs` does not exist yet")
            how = "unpartitioned (SPARK_ML_SOLO)" if settings.get("SPARK_ML_SOLO") == "true" else "partitioned"
            args, text = ("--procs", str(procs)), f"{procs} {how} worker processes"
        if model:
            text = f"model {prepare_tree_registry(ctx.workdir / 'registry', model)}"
        target = _worker_target(ctx, *args, note=text, **settings)
        return replace(target, publisher_args=publisher_args) if publisher_args else target

    scenario(name, title, kind=kind, default=default, jetstream=jetstream, partitions=partitions)(build)


worker_scenario("worker", "spark-ml worker, baseline model (partitioned)")
# The same msgpack snapshots as `worker`; every prediction goes out as JSON (the slow encoder, per row).
worker_scenario(
    "worker-json",
    "spark-ml worker, JSON output (SPARK_ML_OUTPUT_ENCODING=json)",
    env={"SPARK_ML_OUTPUT_ENCODING": "json"},
    note="SPARK_ML_OUTPUT_ENCODING=json",
    default=False,
)
worker_scenario(
    "worker-tp",
    "spark-ml worker, snapshots with a traceparent each, tracing off (passed on)",
    note="snapshots with traceparent, SPARK_ML_TRACING=off",
    publisher_args=_TRACEPARENT,
    default=False,
)
# OTEL_TRACES_EXPORTER=none: spans are made, linked and ended, but no exporter runs (the bed has no collector).
worker_scenario(
    "worker-traced",
    "spark-ml worker, tracing on (spans made, not exported), snapshots with a traceparent each",
    env={"SPARK_ML_TRACING": "on", "OTEL_TRACES_EXPORTER": "none"},
    note="snapshots with traceparent, SPARK_ML_TRACING=on, OTEL_TRACES_EXPORTER=none",
    publisher_args=_TRACEPARENT,
    default=False,
)
# The mapping is there (same subjects as the partitioned beds), JetStream is not: SPARK_ML_SOLO runs the
# plain queue group on market.snapshot.>, the worker as it was before partitions.
worker_scenario(
    "worker-solo",
    f"spark-ml worker, {_SOLO}",
    env={"SPARK_ML_SOLO": "true"},
    note="SPARK_ML_SOLO=true, server without JetStream",
    jetstream=False,
)
# Beside "worker" in one run: what labelling every prediction (live quality) costs.
worker_scenario(
    "worker-nolq",
    "spark-ml worker, live quality off (its reference)",
    env={"SPARK_ML_LIVE_QUALITY": "false"},
    note="SPARK_ML_LIVE_QUALITY=false",
    default=False,
)
worker_scenario("worker-tree", "spark-ml worker, trained tree model", model="lgbm")
worker_scenario("worker-xgb", "spark-ml worker, trained XGBoost model", model="xgb")
worker_scenario("worker-2p", "spark-ml worker --procs 2 (2 partitioned workers)", procs=2, default=False)
# Today's two workers without partitions (wrong features, but the CPU reference for two processes): the
# fixed costs of a second process and the halved batches count on both sides of the comparison.
worker_scenario(
    "worker-2p-solo",
    f"spark-ml worker --procs 2, {_SOLO}",
    env={"SPARK_ML_SOLO": "true"},
    procs=2,
    default=False,
    jetstream=False,
)
_JS = {"SPARK_ML_MODE": "jetstream"}
_JS_SOLO = {**_JS, "SPARK_ML_SOLO": "true"}
worker_scenario("worker-js", "spark-ml worker, JetStream mode (partitioned)", env=_JS, default=False, partitions=0)
worker_scenario(
    "worker-js-solo",
    f"spark-ml worker, JetStream mode, {_SOLO}",
    env=_JS_SOLO,
    note="SPARK_ML_SOLO=true",
    default=False,
    partitions=0,
)
worker_scenario(
    "worker-js-2p",
    "spark-ml worker --procs 2, JetStream mode (partitioned)",
    env=_JS,
    procs=2,
    default=False,
    partitions=0,
)
worker_scenario(
    "worker-js-2p-solo",
    f"spark-ml worker --procs 2, JetStream mode, {_SOLO}",
    env=_JS_SOLO,
    procs=2,
    default=False,
    partitions=0,
)


@scenario("faststream", "FastStream echo (peer)")
def _faststream(ctx: Context) -> Target:
    argv = [ctx.python, "-m", "spark_ml.scripts.harness.fs_peer", "--url", ctx.nats_url]
    return Target(argv + ["--subject", SNAPSHOT_WILDCARD])


@scenario("rr-ceiling", "bare nats-py responder on ml.predict (request-reply ceiling)", kind="request")
def _rr_ceiling(ctx: Context) -> Target:
    return Target([ctx.python, "-m", "spark_ml.scripts.harness.echo", "--url", ctx.nats_url, "--respond", "ml.predict"])


worker_scenario("rr", "spark-ml worker answering ml.predict (partitioned)", kind="request")
worker_scenario(
    "rr-solo",
    f"spark-ml worker answering ml.predict, {_SOLO}",
    env={"SPARK_ML_SOLO": "true"},
    note="SPARK_ML_SOLO=true, server without JetStream",
    kind="request",
    jetstream=False,
)


@scenario(
    "http", "spark-ml up: HTTP POST /ml/predict -> gateway -> ml.predict", kind="http", jetstream=True, partitions=P
)
def _http(ctx: Context) -> Target:
    _worker_help()
    # `spark-ml up` on the bed's server: worker, ml.predict and the HTTP bridge in one process, as a user
    # runs it. The rate limit is lifted: the benchmark measures the path, not the limiter.
    env = _worker_env(ctx, SPARK_ML_RATE_LIMIT="1000000/second")
    return _up_target(env, http_url=f"http://127.0.0.1:{env['SPARK_ML_HTTP_PORT']}/ml/predict")


@scenario(
    "analytics-api",
    "spark-ml up: analytics.get at 1 and 64 callers, and analytics.pnl.<SYMBOL> meanwhile",
    kind="analytics-api",
    jetstream=True,
    partitions=P,
)
@scenario(
    "analytics",
    "spark-ml up: market.snapshot -> analytics.pnl.<SYMBOL> (live PnL)",
    kind="analytics",
    jetstream=True,
    partitions=P,
)
def _analytics(ctx: Context) -> Target:
    _worker_help()
    # The whole of `spark-ml up` on the bed's server, as a user runs it: the worker's predictions reach the
    # analytics consumer too, and both share the process and its event loop, so their costs add up. In
    # "analytics-api" its active analytics instance also answers the queries on that event loop, so queries and
    # updates compete there (runner.api_phases).
    return _up_target(_worker_env(ctx), sink_subject=PNL_SUBJECT)


# Each one of the workers; spark_ml.scripts.harness.failover starts several, each with its own ports.
worker_scenario(
    "failover",
    "3 partitioned workers, one SIGKILLed: kill -> first prediction of a moved partition",
    kind="failover",
    default=False,
)
worker_scenario(
    "failover-js",
    "3 partitioned workers, JetStream mode, one SIGKILLed: kill -> first prediction of a moved partition",
    env=_JS,
    kind="failover",
    default=False,
)


def child_env(target: Target) -> dict[str, str]:
    """The environment a target runs with: ours, minus proxies (loopback only), plus its own."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(target.env)
    return env
