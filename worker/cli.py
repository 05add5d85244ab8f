"""``spark-ml``: one entry point with subcommands.

Service commands (up, worker, gateway, analytics) build one Settings object from flags over
``SPARK_ML_*`` environment variables; offline commands (train, eval, backtest, model, bench) are thin
scripts under ``scripts/`` that parse their own arguments and are imported only when asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from spark_ml.worker.app import Stoppable, WorkerApp

__all__ = ["main"]

log = logging.getLogger("spark_ml.worker.cli")

_SCRIPTS = {
    "train": ("spark_ml.scripts.train", "train a model with walk-forward evaluation and register it"),
    "eval": ("spark_ml.scripts.eval", "gate a model version against the SLOs and the baseline"),
    "backtest": ("spark_ml.scripts.backtest", "backtest ML signals against the baseline and buy-and-hold"),
    "model": ("spark_ml.scripts.model", "registry: list | info | promote V | rollback | shadow V | compare"),
    "bench": ("spark_ml.scripts.bench", "measure throughput and latency against the raw nats-py ceiling"),
    "soak": ("spark_ml.scripts.soak", "steady load for minutes: throughput, latency and memory growth each minute"),
    "drift": ("spark_ml.scripts.drift", "calibrate feature drift (PSI) levels on normal periods and a regime change"),
    "asyncapi": ("spark_ml.scripts.asyncapi", "print the AsyncAPI 3.0 document of every NATS subject (or --output it)"),
    "openapi": ("spark_ml.scripts.openapi", "print the HTTP gateway's OpenAPI 3.1 document (or --output it)"),
}


def _add_settings_flags(p: argparse.ArgumentParser, command: str) -> None:
    from spark_ml.worker.settings_flags import add_settings_flags

    add_settings_flags(p, command)


def _settings(args: argparse.Namespace) -> Any:
    from spark_ml.worker.settings import Settings
    from spark_ml.worker.settings_flags import overrides

    return Settings(**overrides(args))


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("spark-ml")
    except metadata.PackageNotFoundError:
        return "unknown"


def _environment_epilog() -> str:
    """Every SPARK_ML_* variable, for the top-level help (each command's help details those it reads)."""
    import textwrap

    from spark_ml.worker.settings import Settings
    from spark_ml.worker.settings_flags import env_var

    names = ", ".join(env_var(name) for name in Settings.model_fields)
    body = textwrap.fill(names, width=100, initial_indent="  ", subsequent_indent="  ")
    return (
        "Settings come from SPARK_ML_* environment variables, read once at start; a command's flags override\n"
        "them ('spark-ml COMMAND --help' lists the ones it reads, with defaults). Secrets may come from files:\n"
        "SPARK_ML_API_KEY_FILE, SPARK_ML_NATS_PASSWORD_FILE, SPARK_ML_NATS_TOKEN_FILE, SPARK_ML_NATS_CREDS_FILE.\n"
        f"Environment variables:\n{body}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spark-ml",
        description="Real-time ML predictions for market data over NATS",
        epilog=_environment_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"spark-ml {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("up", help="run everything: embedded NATS when none answers, worker, gateway, analytics")
    _add_settings_flags(p, "up")
    p.add_argument("--no-gateway", action="store_true", help="do not serve the HTTP gateway")
    p.add_argument("--no-analytics", action="store_true", help="do not run the live analytics consumer")

    p = sub.add_parser("worker", help="run a stream worker (and the ml.predict service) against an existing NATS")
    _add_settings_flags(p, "worker")
    p.add_argument(
        "--procs",
        type=int,
        default=1,
        help="worker processes, each owning its share of the symbol partitions (metrics ports from the base up)",
    )
    p.add_argument("--check", action="store_true", help="exit 0 when the local worker's /readyz answers 200, else 1")

    p = sub.add_parser("gateway", help="run the HTTP gateway in front of ml.predict")
    _add_settings_flags(p, "gateway")

    p = sub.add_parser("analytics", help="run the live PnL analytics consumer (or: analytics export ...)")
    _add_settings_flags(p, "analytics")
    _add_analytics_export(p)

    p = sub.add_parser("replay", help="publish snapshots from real or synthetic market data")
    _add_settings_flags(p, "replay")
    p.add_argument(
        "--data",
        default="synthetic",
        help="synthetic (default) | eurusd | goog | btcusd | PATH to an OHLCV CSV (all but synthetic: spark-ml[data])",
    )
    p.add_argument("--rate", type=float, default=1000.0, help="snapshots per second (0 = as fast as possible)")
    p.add_argument("--count", type=int, default=0, help="stop after this many (0 = the whole series once)")
    p.add_argument("--symbol", default=None, help="symbol to publish as (default: the data set's name)")
    p.add_argument("--json", action="store_true", help="publish JSON instead of msgpack")
    p.add_argument("--per-symbol-subject", action="store_true", help="publish on market.snapshot.<SYMBOL>")

    p = sub.add_parser("tail", help="print predictions (or any subject) as they arrive")
    _add_settings_flags(p, "tail")
    p.add_argument("--subject", default="ml.prediction", help="subject or wildcard to follow (default ml.prediction)")
    p.add_argument("--count", type=int, default=0, help="exit after this many messages (0 = forever)")

    for name, (_, help_text) in _SCRIPTS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


_EXPORT_FORMATS = ("csv", "json", "parquet")
"""``spark_ml.core.io.exports.FORMATS`` spelt out, so building the parser imports no report code (a test compares)."""


def _add_analytics_export(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="analytics_action", metavar="ACTION")
    e = actions.add_parser(
        "export",
        help="write the live equity curves and trades of every symbol and the portfolio, and a tear sheet",
        description="Fetch the live equity curves and trades from the running analytics service (analytics.export) "
        "and write them per symbol and for the portfolio, with index.json and tearsheet.html, under --out.",
    )
    _add_settings_flags(e, "tail")  # the NATS and log settings, as tail takes them
    for action in e._actions:
        if action.dest.startswith("s_"):  # unset here: keep what was given before "export" (argparse would reset it)
            action.default = argparse.SUPPRESS
    e.add_argument("--format", choices=_EXPORT_FORMATS, default="csv", help="file format of the tables (default csv)")
    e.add_argument("--out", type=Path, required=True, help="output folder (created when missing)")
    e.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply (default 5)")
    e.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _run(coro_fn: Callable[[], Coroutine[Any, Any, int | None]]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from spark_ml.core.errors import ClusterRefused
    from spark_ml.worker.connect import NatsRefused

    try:
        return asyncio.run(coro_fn()) or 0
    except KeyboardInterrupt:
        return 130
    except (NatsRefused, ClusterRefused) as exc:  # a configuration problem, not a crash: one line says what to fix
        print(f"spark-ml: {exc}", file=sys.stderr)
        return 1


async def _http_gateway(app: WorkerApp) -> Stoppable:
    """``spark-ml up``'s HTTP gateway, on the worker's connection and metrics registry."""
    from spark_ml.gateway.http import HttpGateway

    assert app.nc is not None
    gw = HttpGateway(app.nc, app.settings, registry=app.metrics.registry, tracing=app.tracing)
    await gw.start()
    return gw


async def _gateway(settings: Any) -> int:
    """``spark-ml gateway``: the HTTP gateway alone, until a signal."""
    from spark_ml.gateway.http import run_gateway
    from spark_ml.worker.run import stop_on_signals

    await run_gateway(settings, stop=stop_on_signals())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _SCRIPTS:
        return _script(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    from spark_ml.core.errors import SecretFileError
    from spark_ml.worker.logs import setup_logging

    try:
        settings = _settings(args)
    except SecretFileError as exc:
        print(f"spark-ml: {exc}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            print(f"spark-ml: invalid setting {loc}: {err['msg']}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    return _dispatch(args, settings)


def _script(name: str, argv: list[str]) -> int:
    """An offline command; exit 1 naming the extra to install when one of its packages is missing."""
    from spark_ml.core.errors import MissingExtra
    from spark_ml.core.extras import extra_of

    try:
        module = importlib.import_module(_SCRIPTS[name][0])
        code: int = module.main(argv)
    except MissingExtra as exc:
        print(f"spark-ml {name}: {exc}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as exc:
        extra = extra_of(exc.name or "")
        if extra is None:
            raise
        hint = f"pip install 'spark-ml[{extra}]'"
        print(f"spark-ml {name} needs {exc.name}, which is not installed: {hint}", file=sys.stderr)
        return 1
    return code


def _dispatch(args: argparse.Namespace, settings: Any) -> int:
    cmd = args.command
    if cmd == "worker":
        from spark_ml.worker import run

        if args.check:
            return run.check(settings)
        if args.procs > 1:
            return run.run_procs(settings, args.procs)
        return _run(lambda: run.worker(settings))
    if cmd == "up":
        from spark_ml.worker import up

        http = None if args.no_gateway else _http_gateway
        return _run(lambda: up.up(settings, http=http, analytics=not args.no_analytics))
    if cmd == "gateway":
        return _run(lambda: _gateway(settings))
    if cmd == "analytics" and args.analytics_action == "export":
        from spark_ml.worker.tools import analytics_export

        return _run(
            lambda: analytics_export.export(
                settings, fmt=args.format, out=args.out, timeout=args.timeout, progress=not args.no_progress
            )
        )
    if cmd == "analytics":
        from spark_ml.worker import run

        return _run(lambda: run.analytics(settings))
    if cmd == "replay":
        from spark_ml.worker.tools import replay

        return _run(lambda: replay.replay(settings, args))
    if cmd == "tail":
        from spark_ml.worker.tools import tail

        return _run(lambda: tail.tail(settings, subject=args.subject, count=args.count))
    raise AssertionError(cmd)
