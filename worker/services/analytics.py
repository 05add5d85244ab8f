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

**Queries** (:mod:`spark_ml.worker.services.analytics_api`): the active instance answers ``analytics.get`` and
``analytics.export`` from the same positions, plus the portfolio of all symbols
(:class:`spark_ml.core.trading.portfolio.Portfolio`).

**One active instance, state in KV** (:mod:`spark_ml.worker.services.analytics_store`). Analytics may run in
several processes (``spark-ml up`` on several hosts, ``spark-ml analytics`` twice): one holds the lease and is
*active* (keeps the positions, publishes, answers queries, checkpoints the positions every ``checkpoint_s`` and at
stop); the others are *standbys*. A standby follows the same subjects but only keeps the raw messages of the last
``standby_buffer_s`` seconds. When the lease is free (released at a stop, or expired after a crash) a standby
takes it, loads the checkpoint, and replays its buffer over it, skipping what the checkpoint already holds (a
snapshot whose ``ts`` is not after the symbol's last price, a prediction whose ``ts`` is not after the symbol's
last applied one), then serves. So a hand-over loses nothing that arrived while the standby was listening, as
long as the checkpoint is younger than the buffer; what arrives while no instance is listening at all (a
single instance restarting) is lost to analytics, as core NATS is at-most-once. The figures never depend on a
clock, only on the messages in their order, so the new active instance answers what the old one would have.
Without a store (``store=None``: the tests, and ``SPARK_ML_SOLO`` without JetStream) the service is active at
once and keeps everything in memory.

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
import enum
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from nats.aio.client import Client
from nats.aio.subscription import Subscription

from spark_ml.core import subjects
from spark_ml.core.codec import Encoding, SnapshotParser, decode, encode
from spark_ml.core.contracts import valid_symbol
from spark_ml.core.errors import ClusterRefused, InvalidInput, UnknownSymbol
from spark_ml.core.trading.live_figures import symbol_export, symbol_figures
from spark_ml.core.trading.live_pnl import PaperPosition
from spark_ml.core.trading.portfolio import Portfolio, parse_weights
from spark_ml.worker.lifecycle import Lifecycle, cancel_all
from spark_ml.worker.natsio.directsub import subscribe_direct, unroute
from spark_ml.worker.pipeline.publish import content_headers
from spark_ml.worker.services.analytics_api import AnalyticsApi
from spark_ml.worker.services.analytics_store import ACTIVE_KEY, AnalyticsStore, Checkpoint, Saved, pack
from spark_ml.worker.settings import Settings

__all__ = ["AnalyticsService", "Phase", "analytics_encoding", "analytics_from_settings"]

log = logging.getLogger(__name__)
_now = time.perf_counter
_MAX_PREDICTION_BYTES = 256 * 1024
_SNAP, _PRED = 0, 1


class Phase(enum.Enum):
    """Where an instance is: waiting for the lease, loading and replaying, or serving."""

    STANDBY = "standby"
    RESTORING = "restoring"
    ACTIVE = "active"


class _Symbol:
    """Per-symbol state: the paper position, the ``ts`` of its last applied prediction, publishing bookkeeping."""

    __slots__ = ("dirty_since", "last_pub", "last_seen", "pp", "pred_ts")

    def __init__(self, pp: PaperPosition) -> None:
        self.pp = pp
        self.pred_ts: int | None = None
        self.dirty_since: float | None = None
        self.last_pub = -1e18
        self.last_seen = 0.0


def analytics_encoding(settings: Settings) -> Encoding:
    """The encoding of ``analytics.pnl.*`` under ``SPARK_ML_OUTPUT_ENCODING`` (``auto``: msgpack, as before)."""
    return "json" if settings.output_encoding == "json" else "msgpack"


class AnalyticsService(Lifecycle):
    """The live PnL consumer and query API; an async context manager.

    Args:
        nc: connected NATS client (shared with the worker in ``spark-ml up``; the service never closes it).
        interval_s: heartbeat period for symbols that had data in the last ``idle_s`` seconds.
        min_gap_s: shortest time between two messages of one symbol (bounds both traffic and staleness).
        idle_s: a symbol without data for this long gets no more heartbeats.
        cost_bp: cost plus slippage of a position change, in basis points.
        long_short: ``sell`` goes short (true) or flat (false).
        var_window: returns kept per symbol (and for the portfolio) for VaR, Sharpe and Sortino.
        max_symbols: symbols tracked at most (least recently seen dropped first), against unbounded growth.
        weights: portfolio weights per symbol; None: equal weights over every symbol.
        trades_kept: closed trades kept per symbol for ``analytics.export``.
        curve_points: equity curve points kept per symbol and for the portfolio (even).
        store: the lease and checkpoint in KV; None: active at once, in memory only.
        checkpoint_s: how often the active instance saves the changed positions.
        standby_buffer_s: how far back a standby keeps messages to replay over the checkpoint it takes over.
        standby_buffer_max: messages a standby keeps at most.
        api: serve ``analytics.get`` and ``analytics.export`` while active.
        query_share: the largest share of the event loop's time queries may take (1: no limit; see
            :mod:`spark_ml.worker.services.analytics_api`).
        memory_without_jetstream: when the server has no JetStream, run with the state in memory (the promise
            that this is the only instance, ``SPARK_ML_SOLO``) instead of raising ClusterRefused.
        encoding: of the messages it publishes (``Content-Type`` says which).
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
        weights: Mapping[str, float] | None = None,
        trades_kept: int = 500,
        curve_points: int = 1000,
        store: AnalyticsStore | None = None,
        checkpoint_s: float = 1.0,
        standby_buffer_s: float = 10.0,
        standby_buffer_max: int = 500_000,
        api: bool = True,
        memory_without_jetstream: bool = False,
        query_share: float = 1.0,
        encoding: Encoding = "msgpack",
    ) -> None:
        if interval_s <= 0 or min_gap_s < 0 or idle_s <= 0 or checkpoint_s <= 0 or standby_buffer_s <= 0:
            raise ValueError("interval_s, idle_s, checkpoint_s and standby_buffer_s must be > 0, min_gap_s >= 0")
        if max_symbols < 1 or standby_buffer_max < 1:
            raise ValueError("max_symbols and standby_buffer_max must be >= 1")
        self._pp_args: dict[str, Any] = {
            "cost_bp": cost_bp,
            "long_short": long_short,
            "var_window": var_window,
            "trades_kept": trades_kept,
            "curve_points": curve_points,
        }
        PaperPosition(**self._pp_args)  # validate the position settings now
        self._portfolio_args: dict[str, Any] = {
            "weights": weights,
            "var_window": var_window,
            "curve_points": curve_points,
        }
        self.nc = nc
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.idle_s = idle_s
        self.max_symbols = max_symbols
        self.store = store
        self.checkpoint_s = checkpoint_s
        self.standby_buffer_s = standby_buffer_s
        self._memory_without_jetstream = memory_without_jetstream
        self.encoding: Encoding = encoding
        self._headers = content_headers(encoding)
        self._symbols: OrderedDict[str, _Symbol] = OrderedDict()
        self._portfolio = Portfolio(**self._portfolio_args)
        self._held: dict[str, _Symbol] = {}
        """Symbols with news not yet published because their last message is younger than ``min_gap_s``."""
        self._by_pub: OrderedDict[str, _Symbol] = OrderedDict()
        """Symbols due a heartbeat some day, least recently published first (their deadlines in order)."""
        self._dirty: set[str] = set()
        """Symbols changed since the last checkpoint."""
        self._evicted: set[str] = set()
        self._slots: dict[str, int] = {}
        """Per symbol, the slot of its record in the last committed checkpoint (see ``analytics_store``)."""
        self._buffer: deque[tuple[int, str, bytes, str | None, float]] = deque(maxlen=standby_buffer_max)
        """A standby's (or restoring instance's) messages: kind, subject, payload, content type, arrival."""
        self._beat_s = interval_s - min(0.1, interval_s / 10)
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._running = False
        self._parser = SnapshotParser()
        self._api = AnalyticsApi(nc, get=self.figures, export=self.export, share=query_share) if api else None
        self.phase = Phase.STANDBY
        if store is not None:
            store.lease.on_lost = self.on_lost
        self.snapshots = 0
        self.predictions = 0
        self.skipped = 0
        self.published = 0
        self.replayed = 0
        """Buffered messages applied at a take-over (those the checkpoint already held are not counted)."""
        self.takeovers = 0
        self.failures = 0
        """Messages whose handling raised unexpectedly (a bug or a closed connection), counted in ``skipped`` too."""

    async def start(self) -> None:
        """Subscribe to snapshots and predictions, start the timers, and become active (or stand by)."""
        if self._running:
            return
        if self.store is not None:
            try:
                await self.store.start()
            except ClusterRefused:
                if not self._memory_without_jetstream:
                    raise
                log.warning("analytics: no JetStream: one instance, state in memory only (SPARK_ML_SOLO)")
                self.store = None
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
        if self.store is None:
            await self._activate(None)
        else:
            if await self.store.acquire():
                await self._take_over()
            self._tasks += [
                asyncio.create_task(self._campaign(), name="analytics-campaign"),
                asyncio.create_task(self._checkpointer(), name="analytics-checkpoint"),
            ]
        log.info(
            "analytics: following %s, %s and %s (%s)",
            subjects.SNAPSHOT,
            subjects.SNAPSHOT_WILDCARD,
            subjects.PREDICTION,
            self.phase.value,
        )

    async def stop(self) -> None:
        """Drain the subscriptions, stop the timers, publish what is pending, save a last checkpoint, stop
        serving queries, release the lease, flush."""
        if not self._running:
            return
        self._running = False
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.drain()  # type: ignore[no-untyped-call]
            unroute(self.nc, sub)
        self._subs.clear()
        await cancel_all(self._tasks)
        self._tasks.clear()
        if not self.nc.is_closed:
            if self.phase is Phase.ACTIVE:
                await self._publish_due(_now(), force=True)
                if self.store is not None:
                    try:
                        await self._checkpoint()
                    except Exception:
                        log.exception("analytics: the last checkpoint failed")
            if self._api is not None:
                with contextlib.suppress(Exception):
                    await self._api.stop()
            if self.store is not None:
                await self.store.stop()  # releases the lease: a standby takes over at once
            with contextlib.suppress(Exception):
                await self.nc.flush(timeout=2)
        log.info(
            "analytics stopped: snapshots=%d predictions=%d skipped=%d published=%d symbols=%d phase=%s",
            self.snapshots,
            self.predictions,
            self.skipped,
            self.published,
            len(self._symbols),
            self.phase.value,
        )

    # --- queries ----------------------------------------------------------------------------------------

    def position(self, symbol: str) -> PaperPosition | None:
        """The paper position of a symbol, if tracked."""
        st = self._symbols.get(symbol)
        return st.pp if st else None

    def _items(self) -> Iterator[tuple[str, PaperPosition]]:
        return ((symbol, st.pp) for symbol, st in self._symbols.items())

    def _pp(self, symbol: str) -> PaperPosition:
        st = self._symbols.get(symbol)
        if st is None:
            raise UnknownSymbol(f"no analytics for symbol {symbol!r} (no snapshot or prediction of it seen)")
        return st.pp

    def figures(self, symbol: str | None) -> dict[str, Any]:
        """``analytics.get``: the figures of ``symbol``, or of the portfolio (None); raises UnknownSymbol."""
        body = self._portfolio.figures(self._items()) if symbol is None else symbol_figures(symbol, self._pp(symbol))
        body["servedAt"] = int(time.time() * 1000)
        return body

    def export(self, symbol: str | None) -> dict[str, Any]:
        """``analytics.export``: figures, equity curve and trades of ``symbol``; for None the portfolio's figures
        and curve and the list of symbols (see :mod:`spark_ml.worker.services.analytics_api`)."""
        if symbol is not None:
            body = symbol_export(symbol, self._pp(symbol))
        else:
            body = self._portfolio.export(self._items())
            body["symbols"] = list(self._symbols)
        body["servedAt"] = int(time.time() * 1000)
        return body

    # --- active / standby -------------------------------------------------------------------------------

    async def _activate(self, saved: Saved | None) -> None:
        """Load ``saved``, replay the buffer over it, serve (see the module docstring)."""
        self.phase = Phase.RESTORING
        if saved is not None:
            self._restore(saved)
        while self._buffer:  # new messages keep landing here while a replayed one awaits its publish
            kind, subject, raw, content_type, recv = self._buffer.popleft()
            if kind == _SNAP:
                await self._snapshot(subject, raw, content_type, recv, replay=True)
            else:
                await self._prediction(raw, content_type, recv, replay=True)
        self.phase = Phase.ACTIVE  # no await since the buffer was seen empty: nothing was left behind
        if self._api is not None:
            await self._api.start()

    async def _take_over(self) -> None:
        assert self.store is not None
        self.phase = Phase.RESTORING
        try:
            saved = await self.store.load()
            buffered = len(self._buffer)
            await self._activate(saved)
            swept = await self.store.sweep(set(saved.symbols))
            if swept:
                log.info("analytics: %d checkpoint records no commit names were deleted", swept)
        except Exception:
            log.exception("analytics: taking over failed; standing by again")
            await self._stand_by(release=True)
            return
        self.takeovers += 1
        log.info(
            "analytics: active (holder %s): %d symbols from the checkpoint, %d buffered messages, %d replayed",
            self.store.lease.holder,
            len(saved.symbols),
            buffered,
            self.replayed,
        )

    def _restore(self, saved: Saved) -> None:
        self._reset()
        for symbol, record in saved.symbols.items():
            try:
                st = _Symbol(PaperPosition.from_state(record["pp"]))
                st.pred_ts = record.get("pred_ts")
            except Exception as exc:
                log.error("analytics checkpoint of %r: unusable (%r); it starts afresh", symbol, exc)
                continue
            self._symbols[symbol] = st
            self._slots[symbol] = saved.slots[symbol]
        if saved.portfolio is not None:
            try:
                self._portfolio.restore(saved.portfolio, self._symbols)
                return
            except Exception as exc:
                log.error("analytics checkpoint of the portfolio: unusable (%r); rebuilt from the symbols", exc)
                self._portfolio = Portfolio(**self._portfolio_args)
        for symbol, pp in self._items():
            self._portfolio.mark(symbol, pp.equity)

    def _reset(self) -> None:
        self._symbols.clear()
        self._held.clear()
        self._by_pub.clear()
        self._dirty.clear()
        self._evicted.clear()
        self._slots.clear()
        self._portfolio = Portfolio(**self._portfolio_args)

    async def _stand_by(self, *, release: bool) -> None:
        self.phase = Phase.STANDBY
        self._buffer.clear()
        self._reset()
        if self._api is not None:
            with contextlib.suppress(Exception):
                await self._api.stop()
        if release and self.store is not None:
            await self.store.lease.release(ACTIVE_KEY)

    async def on_lost(self, key: str) -> None:
        """The lease was lost (another instance may be active now): stop serving and stand by."""
        log.warning("analytics: lease %s lost; standing by", key)
        await self._stand_by(release=False)

    async def _campaign(self) -> None:
        """A standby takes the lease when it is free (released, or expired after a crash)."""
        assert self.store is not None
        retry_s = self.store.lease.ttl_s / 3
        while self._running:  # not only the cancel: an await that swallows it must not keep a stopped service alive
            if self.phase is Phase.STANDBY:
                try:
                    if await self.store.acquire():
                        await self._take_over()
                        continue
                except Exception as exc:
                    log.warning("analytics: acquiring the lease failed (%r)", exc)
                await self.store.wait_freed(retry_s)
            else:
                await asyncio.sleep(retry_s)

    async def _checkpointer(self) -> None:
        while self._running:
            await asyncio.sleep(self.checkpoint_s)
            if self.phase is Phase.ACTIVE:
                try:
                    await self._checkpoint()
                except Exception as exc:
                    log.warning("analytics: checkpoint failed (%r); retrying", exc)

    async def _checkpoint(self) -> None:
        """Save the changed symbols, each to its other slot, then commit them with the book (all encoded at one
        moment: no await in between; see ``analytics_store``)."""
        assert self.store is not None
        if not (self._dirty or self._evicted):
            return
        dirty, evicted = self._dirty, self._evicted
        self._dirty, self._evicted = set(), set()
        slots = self._slots
        records: dict[str, tuple[int, bytes]] = {}
        for symbol in dirty:
            st = self._symbols.get(symbol)
            if st is not None:
                record = pack({"symbol": symbol, "pp": st.pp.state(), "pred_ts": st.pred_ts})
                records[symbol] = (1 - slots.get(symbol, 1), record)
        # every live symbol with a record: in its new slot if written now, else in its committed one
        manifest = {s: slots[s] for s in self._symbols if s in slots} | {s: slot for s, (slot, _) in records.items()}
        dropped = {s for s in evicted if s not in manifest}
        try:
            committed = await self.store.save(Checkpoint.encode(records, self._portfolio.state(), manifest), dropped)
        except Exception:
            self._dirty |= dirty  # written again next time, to the same (uncommitted) slots
            self._evicted |= evicted
            raise
        if committed:
            self._slots = manifest

    # --- intake -----------------------------------------------------------------------------------------

    def _state(self, symbol: str) -> _Symbol:
        symbols = self._symbols
        st = symbols.get(symbol)
        if st is None:
            st = symbols[symbol] = _Symbol(PaperPosition(**self._pp_args))
            if len(symbols) > self.max_symbols:
                gone, _ = symbols.popitem(last=False)
                self._held.pop(gone, None)
                self._by_pub.pop(gone, None)
                self._dirty.discard(gone)
                self._evicted.add(gone)
                self._portfolio.drop(gone)
        else:
            symbols.move_to_end(symbol)
        return st

    def _keep(self, kind: int, subject: str, raw: bytes, content_type: str | None, recv: float) -> None:
        buf = self._buffer
        horizon = recv - self.standby_buffer_s
        while buf and buf[0][4] < horizon:
            buf.popleft()
        buf.append((kind, subject, raw, content_type, recv))

    async def _on_snapshot(self, subject: str, raw: bytes, headers: dict[str, str] | None) -> None:
        recv = _now()
        content_type = headers.get("Content-Type") if headers else None
        if self.phase is not Phase.ACTIVE:
            self._keep(_SNAP, subject, raw, content_type, recv)
            return
        await self._snapshot(subject, raw, content_type, recv, replay=False)

    async def _snapshot(self, subject: str, raw: bytes, content_type: str | None, recv: float, *, replay: bool) -> None:
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
            if pp.ts is not None and (snap.ts < pp.ts or (replay and snap.ts == pp.ts)):
                if not replay:
                    self.skipped += 1  # out of order: the worker refuses it too
                return
            self._portfolio.advance(snap.ts)
            pp.update(snap.mid, snap.ts)
            self._portfolio.mark(snap.symbol, pp.equity)
            self._dirty.add(snap.symbol)
            self.snapshots += 1
            self.replayed += replay
            await self._touch(snap.symbol, st, recv)
        except Exception:
            self._failed("snapshot")

    async def _on_prediction(self, subject: str, raw: bytes, headers: dict[str, str] | None) -> None:
        recv = _now()
        content_type = headers.get("Content-Type") if headers else None
        if self.phase is not Phase.ACTIVE:
            self._keep(_PRED, subject, raw, content_type, recv)
            return
        await self._prediction(raw, content_type, recv, replay=False)

    async def _prediction(self, raw: bytes, content_type: str | None, recv: float, *, replay: bool) -> None:
        try:
            data, _ = decode(raw, content_type=content_type, max_bytes=_MAX_PREDICTION_BYTES)
            symbol, signal = data["symbol"], data["signal"]
            if not (isinstance(symbol, str) and valid_symbol(symbol)):
                raise ValueError(symbol)
            ts = data.get("ts")
            ts = ts if type(ts) is int else None
            st = self._state(symbol)
            if replay and ts is not None and st.pred_ts is not None and ts <= st.pred_ts:
                return  # the checkpoint holds it already
            st.pp.on_signal(signal)
        except (InvalidInput, KeyError, TypeError, ValueError):
            self.skipped += 1
            return
        except Exception:
            self._failed("prediction")
            return
        if ts is not None:
            st.pred_ts = ts
        self.predictions += 1
        self.replayed += replay
        try:
            self._portfolio.mark(symbol, st.pp.equity)
            self._dirty.add(symbol)
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
        await self.nc.publish(subjects.analytics_pnl(symbol), encode(body, self.encoding), headers=self._headers)
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


def analytics_from_settings(nc: Client, settings: Settings, *, holder: str | None = None) -> AnalyticsService:
    """The service as ``spark-ml up`` and ``spark-ml analytics`` run it: lease and checkpoint in KV (or in memory
    with ``SPARK_ML_SOLO`` on a server without JetStream), the ``SPARK_ML_ANALYTICS_*`` settings."""
    store = AnalyticsStore(
        nc,
        holder=holder or f"{socket.gethostname()}-{os.getpid()}",
        ttl_s=settings.member_ttl_s,
        replicas=settings.js_replicas,
    )
    return AnalyticsService(
        nc,
        max_symbols=settings.max_symbols,
        weights=parse_weights(settings.analytics_weights) or None,
        trades_kept=settings.analytics_trades_kept,
        curve_points=settings.analytics_curve_points,
        store=store,
        checkpoint_s=settings.checkpoint_s,
        standby_buffer_s=settings.analytics_standby_buffer_s,
        memory_without_jetstream=settings.solo,
        query_share=settings.analytics_query_share,
        encoding=analytics_encoding(settings),
    )


async def _next_deadline(step: Callable[[float], Awaitable[float | None]], what: str) -> float | None:
    """Run one timer step at the current time; a failure is logged and leaves nothing pending (timers live on)."""
    try:
        return await step(_now())
    except Exception:
        log.exception("analytics: %s failed", what)
        return None
