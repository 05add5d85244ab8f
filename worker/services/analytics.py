"""Live analytics: paper positions from ``ml.prediction`` marked to ``market.snapshot``, PnL on ``analytics.pnl.*``.

For every symbol the service keeps a :class:`spark_ml.core.trading.live_pnl.PaperPosition`: snapshots move its price,
predictions' signals move its position (at the last known price). After either it publishes the symbol's
figures (msgpack, camelCase keys, the fields of :class:`spark_ml.core.trading.live_pnl.PnlSnapshot` plus ``symbol``,
``publishedAt`` and ``lagMs``) on ``analytics.pnl.<SYMBOL>``, the symbol written as one literal subject token by
:func:`spark_ml.core.subjects.symbol_token` (``BRK.B`` -> ``analytics.pnl.BRK%2EB``; ``symbol`` in the body is as sent):

* at once when the symbol's last message is at least ``min_gap_s`` old, else as soon as it is; so a
  symbol costs at most ``1 / min_gap_s`` messages a second however fast its data comes, and every
  snapshot or prediction is reflected in a message at most ``min_gap_s`` (plus processing) after it
  arrived. ``lagMs`` is that delay for the oldest event in the message (receive to publish, this process);
* and at least every ``interval_s`` for every symbol that had data in the last ``idle_s`` seconds, as a
  heartbeat for dashboards: each symbol's own deadline, ``interval_s`` after its last message, less a
  slack (a tenth of it, at most 100 ms) so that timer jitter does not stretch a gap past ``interval_s``.
  A shared tick would not do: a symbol published just before one tick waits for the next.

Bad payloads are counted and skipped: the worker dead-letters snapshots, and analytics is a read-only
observer that must not add a second dead letter for the same message.

Intake cost matters because the service shares its process and event loop with the worker in
``spark-ml up`` and sees every snapshot and every prediction (two messages per snapshot). Messages go
from nats-py's parser straight to the handlers (:mod:`spark_ml.worker.natsio.directsub`: no ``Msg``, queue entry or task
switch each), and snapshots are validated by the stream's one-step :class:`spark_ml.core.codec.SnapshotParser`.
Measured with ``spark-ml bench --only analytics`` (see :mod:`spark_ml.scripts.harness.pnl`). The handlers then run
inside the client's read loop, where an exception would be taken for a protocol error and reconnect the
connection: they catch everything, log it, and count the message as skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from spark_ml.core import subjects
from spark_ml.core.codec import SnapshotParser, decode, encode
from spark_ml.core.contracts import valid_symbol
from spark_ml.core.errors import InvalidInput
from spark_ml.core.trading.live_pnl import PaperPosition
from spark_ml.worker.lifecycle import Lifecycle
from spark_ml.worker.natsio.directsub import subscribe_direct, unroute

__all__ = ["AnalyticsService"]

log = logging.getLogger(__name__)
_now = time.perf_counter
_MAX_PREDICTION_BYTES = 256 * 1024


class _Symbol:
    """Per-symbol state: the paper position and the bookkeeping of when it was last published."""

    __slots__ = ("dirty_since", "last_pub", "last_seen", "pp")

    def __init__(self, pp: PaperPosition) -> None:
        self.pp = pp
        self.dirty_since: float | None = None
        self.last_pub = -1e18
        self.last_seen = 0.0


class AnalyticsService(Lifecycle):
    """The live PnL consumer; an async context manager.

    Args:
        nc: connected NATS client (shared with the worker in ``spark-ml up``; the service never closes it).
        interval_s: heartbeat period for symbols that had data in the last ``idle_s`` seconds.
        min_gap_s: shortest time between two messages of one symbol (bounds both traffic and staleness).
        idle_s: a symbol without data for this long gets no more heartbeats.
        cost_bp: cost plus slippage of a position change, in basis points.
        long_short: ``sell`` goes short (true) or flat (false).
        var_window: returns kept per symbol for VaR.
        max_symbols: symbols tracked at most (least recently seen dropped first), against unbounded growth.
    """

    def __init__(
        self,
        nc: Client,
        *,
        interval_s: float = 1.0,
        min_gap_s: float = 0.05,
        idle_s: float = 10.0,
        cost_bp: float = 0.0,
        long_short: bool = False,
        var_window: int = 500,
        max_symbols: int = 10_000,
    ) -> None:
        if interval_s <= 0 or min_gap_s < 0 or idle_s <= 0:
            raise ValueError("interval_s and idle_s must be > 0, min_gap_s >= 0")
        if max_symbols < 1:
            raise ValueError("max_symbols must be >= 1")
        PaperPosition(cost_bp=cost_bp, var_window=var_window)  # validate the position settings now
        self.nc = nc
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.idle_s = idle_s
        self._pp_args: dict[str, Any] = {"cost_bp": cost_bp, "long_short": long_short, "var_window": var_window}
        self.max_symbols = max_symbols
        self._symbols: OrderedDict[str, _Symbol] = OrderedDict()
        self._held: dict[str, _Symbol] = {}
        """Symbols with news not yet published because their last message is younger than ``min_gap_s``."""
        self._by_pub: OrderedDict[str, _Symbol] = OrderedDict()
        """Symbols due a heartbeat some day, least recently published first (their deadlines in order)."""
        self._beat_s = interval_s - min(0.1, interval_s / 10)
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._running = False
        self._parser = SnapshotParser()
        self.snapshots = 0
        self.predictions = 0
        self.skipped = 0
        self.published = 0
        self.failures = 0
        """Messages whose handling raised unexpectedly (a bug or a closed connection), counted in ``skipped`` too."""

    async def start(self) -> None:
        """Subscribe to snapshots and predictions and start the timers."""
        if self._running:
            return
        self._running = True
        nc = self.nc
        for subject in (subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD):
            sub, _ = await subscribe_direct(nc, subject, queue="", handler=self._on_snapshot)
            self._subs.append(sub)
        sub, _ = await subscribe_direct(nc, subjects.PREDICTION, queue="", handler=self._on_prediction)
        self._subs.append(sub)
        await nc.flush()  # the subscriptions are live on the server before start() returns
        self._tasks = [
            asyncio.create_task(self._flusher(), name="analytics-flusher"),
            asyncio.create_task(self._heartbeat(), name="analytics-heartbeat"),
        ]
        log.info(
            "analytics: following %s, %s and %s", subjects.SNAPSHOT, subjects.SNAPSHOT_WILDCARD, subjects.PREDICTION
        )

    async def stop(self) -> None:
        """Drain the subscriptions, stop the timers, publish what is pending, flush."""
        if not self._running:
            return
        self._running = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()  # type: ignore[no-untyped-call]
            unroute(self.nc, sub)
        self._subs.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if not self.nc.is_closed:
            await self._publish_due(_now(), force=True)
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
        log.info(
            "analytics stopped: snapshots=%d predictions=%d skipped=%d published=%d symbols=%d",
            self.snapshots,
            self.predictions,
            self.skipped,
            self.published,
            len(self._symbols),
        )

    def position(self, symbol: str) -> PaperPosition | None:
        """The paper position of a symbol, if tracked."""
        st = self._symbols.get(symbol)
        return st.pp if st else None

    def _state(self, symbol: str) -> _Symbol:
        symbols = self._symbols
        st = symbols.get(symbol)
        if st is None:
            st = symbols[symbol] = _Symbol(PaperPosition(**self._pp_args))
            if len(symbols) > self.max_symbols:
                gone, _ = symbols.popitem(last=False)
                self._held.pop(gone, None)
                self._by_pub.pop(gone, None)
        else:
            symbols.move_to_end(symbol)
        return st

    async def _on_snapshot(self, subject: str, raw: bytes, content_type: str | None) -> None:
        recv = _now()
        try:
            snap = self._parser.parse(raw, subject, content_type, recv)
        except InvalidInput:
            self.skipped += 1
            return
        except Exception:  # never into the client's read loop (see the module docstring)
            self._failed("snapshot")
            return
        try:
            st = self._state(snap.symbol)
            pp = st.pp
            if pp.ts is not None and snap.ts < pp.ts:
                self.skipped += 1  # out of order: the worker refuses it too
                return
            pp.update(snap.mid, snap.ts)
            self.snapshots += 1
            await self._touch(snap.symbol, st, recv)
        except Exception:
            self._failed("snapshot")

    async def _on_prediction(self, subject: str, raw: bytes, content_type: str | None) -> None:
        recv = _now()
        try:
            data, _ = decode(raw, content_type=content_type, max_bytes=_MAX_PREDICTION_BYTES)
            symbol, signal = data["symbol"], data["signal"]
            if not (isinstance(symbol, str) and valid_symbol(symbol)):
                raise ValueError(symbol)
            st = self._state(symbol)
            st.pp.on_signal(signal)
        except (InvalidInput, KeyError, TypeError, ValueError):
            self.skipped += 1
            return
        except Exception:
            self._failed("prediction")
            return
        self.predictions += 1
        try:
            await self._touch(symbol, st, recv)
        except Exception:
            self._failed("prediction")

    def _failed(self, what: str) -> None:
        self.skipped += 1
        self.failures += 1
        if self.failures & (self.failures - 1) == 0:  # 1st, 2nd, 4th, 8th ...: visible, never a flood
            log.exception("analytics: handling a %s failed (%d failures so far)", what, self.failures)

    async def _touch(self, symbol: str, st: _Symbol, recv: float) -> None:
        st.last_seen = recv
        if st.dirty_since is None:
            st.dirty_since = recv
        now = _now()
        if now - st.last_pub >= self.min_gap_s:
            await self._publish(symbol, st, now)
        elif symbol not in self._held:
            self._held[symbol] = st
            self._wake.set()

    async def _publish(self, symbol: str, st: _Symbol, now: float) -> None:
        body = st.pp.snapshot().wire()
        body["symbol"] = symbol
        body["publishedAt"] = int(time.time() * 1000)
        body["lagMs"] = (now - st.dirty_since) * 1000.0 if st.dirty_since is not None else 0.0
        st.dirty_since = None
        st.last_pub = now
        self._held.pop(symbol, None)
        by_pub = self._by_pub
        by_pub[symbol] = st
        by_pub.move_to_end(symbol)
        await self.nc.publish(subjects.analytics_pnl(symbol), encode(body, "msgpack"))
        self.published += 1

    async def _publish_due(self, now: float, *, force: bool = False) -> float | None:
        """Publish every dirty symbol whose gap has passed; return the time the next one falls due."""
        gap = self.min_gap_s
        nxt: float | None = None
        for symbol, st in list(self._held.items()):
            due = st.last_pub + gap
            if force or due <= now:
                await self._publish(symbol, st, now)
            elif nxt is None or due < nxt:
                nxt = due
        return nxt

    async def _flusher(self) -> None:
        """Publish symbols whose messages were held back by ``min_gap_s`` as soon as they fall due."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                nxt = await _next_deadline(self._publish_due, "publishing")
                if nxt is None:
                    break
                await asyncio.sleep(max(nxt - _now(), 0.0))

    async def _heartbeat(self) -> None:
        """Publish each recently active symbol when its heartbeat deadline passes (see the module docstring)."""
        while True:
            nxt = await _next_deadline(self._beat_due, "heartbeat")
            # With nothing pending, any symbol published from now on falls due at least a period later.
            await asyncio.sleep(max(nxt - _now(), 0.0) if nxt is not None else self._beat_s)

    async def _beat_due(self, now: float) -> float | None:
        """Heartbeat every symbol past its deadline; return the next deadline, or None when none is pending."""
        by_pub, beat = self._by_pub, self._beat_s
        while by_pub:
            symbol, st = next(iter(by_pub.items()))
            due = st.last_pub + beat
            if due > now:
                return due
            if now - st.last_seen > self.idle_s:
                del by_pub[symbol]  # idle: no more heartbeats until it has data again (its next publish)
                continue
            await self._publish(symbol, st, now)  # moves it to the end
        return None


async def _next_deadline(step: Callable[[float], Awaitable[float | None]], what: str) -> float | None:
    """Run one timer step at the current time; a failure is logged and leaves nothing pending (timers live on)."""
    try:
        return await step(_now())
    except Exception:
        log.exception("analytics: %s failed", what)
        return None
