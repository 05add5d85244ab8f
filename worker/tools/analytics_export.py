"""``spark-ml analytics export``: the live equity curves and trades, fetched from the running analytics service.

It asks ``analytics.export`` for the portfolio (``{}``: its figures, its equity curve and the symbols' names),
then for each symbol in turn (one reply each keeps every reply small; a progress bar on stderr counts them),
and writes, under ``--out``: the equity curve and trade list of every symbol and of the portfolio in the chosen
format with ``index.json`` (:func:`spark_ml.core.io.exports.write_export`, the service's figures as each one's
``metrics``), and ``tearsheet.html`` (:mod:`spark_ml.core.io.tearsheet`). A symbol that disappears between the
two requests (evicted) is left out with a warning.

Exit codes: 0 written; 1 NATS not reachable, no analytics service answering within ``--timeout`` (it may be
between a crashed active instance and its standby: asked again until then), an error or malformed reply; 2 bad
arguments (an output path that is a file, parquet without pyarrow).
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client
from tqdm import tqdm

from spark_ml.core import subjects
from spark_ml.core.codec import decode, encode
from spark_ml.core.errors import InvalidInput
from spark_ml.worker.connect import connect, safe_url
from spark_ml.worker.settings import Settings

__all__ = ["ExportFailed", "export", "fetch"]

PROG = "spark-ml analytics export"
_MAX_REPLY = 64 << 20
_RETRY_S = 0.2


class ExportFailed(Exception):
    """The export cannot be fetched or written; the message says why and what to do.

    Args:
        message: why, and what to do.
        exit_code: the command's exit code (1: NATS or the service; 2: bad arguments or an unwritable path).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def _ask(nc: Client, body: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """One ``analytics.export`` request; None for an unknown symbol (404), ExportFailed for any other refusal.

    No responder is asked again every 0.2 s until ``timeout``: between a crashed active instance and its standby's
    take-over (at most the lease TTL, ``SPARK_ML_MEMBER_TTL_S``) nobody answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = await nc.request(subjects.ANALYTICS_EXPORT, encode(body, "json"), timeout=timeout)
            break
        except nats.errors.NoRespondersError:
            if time.monotonic() + _RETRY_S > deadline:
                raise ExportFailed(
                    f"no analytics service answers on {subjects.ANALYTICS_EXPORT} (waited {timeout} s): start "
                    "`spark-ml up` or `spark-ml analytics` against this NATS"
                ) from None
            await asyncio.sleep(_RETRY_S)
        except nats.errors.TimeoutError:
            raise ExportFailed(
                f"the analytics service did not answer {subjects.ANALYTICS_EXPORT} in {timeout} s"
            ) from None
    try:
        reply, _ = decode(msg.data, content_type=(msg.headers or {}).get("Content-Type"), max_bytes=_MAX_REPLY)
    except InvalidInput as exc:
        raise ExportFailed(f"the analytics service's reply is not JSON or msgpack: {exc.message}") from None
    if not isinstance(reply, dict):
        raise ExportFailed("the analytics service's reply is not an object")
    error = reply.get("error")
    if isinstance(error, dict):
        if error.get("code") == "unknown_symbol":
            return None
        raise ExportFailed(f"the analytics service refused the export: {error.get('code')}: {error.get('message')}")
    return reply


async def fetch(nc: Client, *, timeout: float, progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The portfolio's export and each symbol's, in the order the service lists them (unknown ones left out)."""
    whole = await _ask(nc, {}, timeout)
    if whole is None:
        raise ExportFailed("the analytics service does not know the portfolio")
    names = whole.get("symbols", [])
    if not isinstance(names, list) or not all(isinstance(s, str) for s in names):
        raise ExportFailed("the analytics service's portfolio export has no list of symbols")
    out = []
    with tqdm(total=len(names), desc="analytics export", unit="symbol", file=sys.stderr, disable=not progress) as bar:
        for symbol in names:
            body = await _ask(nc, {"symbol": symbol}, timeout)
            if body is None:
                tqdm.write(f"{PROG}: warning: {symbol} is no longer tracked; left out", file=sys.stderr)
            else:
                out.append(body)
            bar.update()
    return whole, out


def write(out: Path, fmt: str, whole: dict[str, Any], symbols: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """Shape the replies into books and write the tables, ``index.json`` and ``tearsheet.html``; the index."""
    from spark_ml.core.io.exports import write_export
    from spark_ml.core.trading.exports import PORTFOLIO
    from spark_ml.core.trading.live_books import book_from_export, figures_row, whole_book
    from spark_ml.core.trading.tearsheet import from_live

    books, metrics = [], {}
    for body in symbols:
        book = book_from_export(body)
        if book is None:
            tqdm.write(f"{PROG}: warning: {body['symbol']} has no priced update yet; left out", file=sys.stderr)
            continue
        books.append(book)
        metrics[book.symbol] = figures_row(body.get("figures") or {})
    portfolio = whole_book(whole, books)
    if portfolio is None or not books:
        raise ExportFailed("the analytics service has no equity curve yet: nothing has been traded")
    metrics = {PORTFOLIO: figures_row(whole.get("figures") or {}), **metrics}
    made = datetime.now(tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    configured = (whole.get("figures") or {}).get("weights") == "configured"
    weights = "the configured weights (SPARK_ML_ANALYTICS_WEIGHTS)" if configured else "equal weight"
    lines = [
        f"Live paper trading of {len(books)} symbol(s) as the analytics service at {source} held it at {made}.",
        f"Portfolio: {weights}; figures after costs.",
    ]
    sheet = from_live(portfolio, books, metrics, title="Live trading analytics: the portfolio", lines=lines)
    return write_export(out, books, fmt, whole=portfolio, metrics=metrics, sheet=sheet)


async def _quiet() -> None:
    """The export closes its own connection: no "disconnected" warning for it."""


async def export(settings: Settings, *, fmt: str, out: Path, timeout: float, progress: bool = True) -> int:
    """Fetch and write (see the module docstring); the exit code."""
    try:
        index = await _export(settings, fmt=fmt, out=out, timeout=timeout, progress=progress)
    except ExportFailed as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"wrote {len(index['symbols'])} symbol(s) and the portfolio as {fmt} under {out}; "
        f"tear sheet {index['tearsheet']}; index {index['index']}"
    )
    return 0


async def _export(settings: Settings, *, fmt: str, out: Path, timeout: float, progress: bool) -> dict[str, Any]:
    """:func:`export`'s work: the index written, or ExportFailed with the exit code."""
    from spark_ml.core.io.exports import FORMATS, MissingDependency, require_pyarrow

    if fmt not in FORMATS:
        raise ExportFailed(f"--format must be one of {', '.join(FORMATS)}", 2)
    if not timeout > 0:
        raise ExportFailed("--timeout must be > 0", 2)
    if out.exists() and not out.is_dir():
        raise ExportFailed(f"--out {out} is a file, not a folder", 2)
    try:
        if fmt == "parquet":
            require_pyarrow()
    except MissingDependency as exc:
        raise ExportFailed(str(exc), 2) from None
    source = ", ".join(safe_url(s) for s in settings.servers)
    try:
        # One round of attempts (not the services' reconnect-forever): a CLI says at once that nothing answers.
        nc = await connect(
            settings,
            name="spark-ml-analytics-export",
            max_reconnect_attempts=1,
            disconnected_cb=_quiet,
            closed_cb=_quiet,
        )
    except (nats.errors.NoServersError, OSError) as exc:
        raise ExportFailed(f"cannot reach NATS at {source}: {type(exc).__name__} {exc}".rstrip()) from None
    try:
        whole, symbols = await fetch(nc, timeout=timeout, progress=progress)
    finally:
        await nc.close()
    try:
        return write(out, fmt, whole, symbols, source)
    except ValueError as exc:
        raise ExportFailed(f"the analytics service's export is malformed: {exc}") from None
    except OSError as exc:
        raise ExportFailed(f"cannot write to {out}: {exc}", 2) from None
