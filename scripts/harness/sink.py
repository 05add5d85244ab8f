"""The sink process: ``python -m spark_ml.scripts.harness.sink --url ... --seq0 S --count N --out PREFIX [--pnl]``.

It subscribes (to the predictions, or with ``--pnl`` to ``analytics.pnl.>``), prints ``READY`` once the
server has registered the subscription, and timestamps every socket read (the moment those bytes reached
this process). It stops when its phase is complete, or, after the runner wrote ``stop`` on its stdin (the
publisher is done), when nothing moved it forward for ``--idle`` seconds or ``--grace`` seconds passed, or
at ``--timeout``.

- Predictions: complete when all N expected predictions arrived. Only then does it decode the payloads
  (decoding during the run would steal CPU from the worker under test), keep the first arrival of each
  expected sequence number, and write ``PREFIX.seq`` (int64) and ``PREFIX.t`` (float64).
- ``--pnl``: updates are few (at most ~20 per symbol per second by design), so it decodes as it goes: it
  is complete when, after ``stop``, every symbol of the phase has an update at or past its last snapshot;
  heartbeats repeat the last state and do not count as progress. It writes the updates as
  :class:`spark_ml.scripts.harness.pnl.PnlUpdates`.

It prints one JSON line of counts and why it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import sys
import time
from array import array
from typing import Any, Protocol

import msgpack
import numpy as np

from spark_ml.scripts.harness.payloads import PREDICTION_SUBJECT, seq_of
from spark_ml.scripts.harness.pnl import PNL_SUBJECT, PnlUpdates
from spark_ml.scripts.harness.wire import RawNats

__all__ = ["main"]
_SYMBOL_PREFIX = "SYM"


class _Tracker(Protocol):
    progress_at: float
    """When the phase last moved forward (perf_counter seconds)."""

    def feed(self, payloads: list[bytes], times: list[float]) -> None: ...

    def complete(self, conn: RawNats, stopped: bool) -> bool: ...

    def finish(self, conn: RawNats, out: str) -> dict[str, Any]: ...


class _Predictions:
    """Predictions: any arrival is progress; matched with their sequence numbers only at the end."""

    def __init__(self, ts0: int, seq0: int, expect: int) -> None:
        self.ts0, self.seq0, self.expect = ts0, seq0, expect
        self.check = expect
        self.progress_at = time.perf_counter()

    def feed(self, payloads: list[bytes], times: list[float]) -> None:
        self.progress_at = time.perf_counter()

    def complete(self, conn: RawNats, stopped: bool) -> bool:
        if len(conn.payloads) < self.check:
            return False
        seqs = self.matched(conn)[0]
        # Stray messages (late probes, duplicates) can fill the count early: keep listening then.
        self.check = len(conn.payloads) + self.expect - len(seqs)
        return len(seqs) >= self.expect

    def matched(self, conn: RawNats) -> tuple[array[int], array[float], int, int]:
        """First arrival of each expected sequence number; also counts duplicates and foreign messages."""
        seen = bytearray(self.expect)
        seqs: array[int] = array("q")
        times: array[float] = array("d")
        dups = foreign = 0
        for payload, t in zip(conn.payloads, conn.times, strict=True):
            i = seq_of(payload, self.ts0) - self.seq0
            if not 0 <= i < self.expect:
                foreign += 1
            elif seen[i]:
                dups += 1
            else:
                seen[i] = 1
                seqs.append(i + self.seq0)
                times.append(t)
        return seqs, times, dups, foreign

    def finish(self, conn: RawNats, out: str) -> dict[str, Any]:
        seqs, times, dups, foreign = self.matched(conn)
        with open(out + ".seq", "wb") as fh:
            seqs.tofile(fh)
        with open(out + ".t", "wb") as fh:
            times.tofile(fh)
        return {"received": len(conn.payloads), "matched": len(seqs), "duplicates": dups, "foreign": foreign}


class _PnlTracker:
    """``--pnl``: decoded updates so far, and how far each of the phase's symbols has got."""

    def __init__(self, ts0: int, seq0: int, count: int, symbols: int) -> None:
        self.ts0 = ts0
        self.symbols = symbols
        self.t: list[float] = []
        self.sym: list[int] = []
        self.seq: list[int] = []
        self.lag: list[float] = []
        self.done_upto = 0
        # The last sequence number of each symbol in this phase (-1: the symbol has none).
        self.last = [-1] * symbols
        for s in range(max(seq0, seq0 + count - symbols), seq0 + count):
            self.last[s % symbols] = s
        self.reach = [-1] * symbols
        self.progress_at = time.perf_counter()

    def feed(self, payloads: list[bytes], times: list[float]) -> None:
        """Decode what arrived since the last call; a symbol moving forward is progress."""
        for i in range(self.done_upto, len(payloads)):
            k, seq, lag = self._decode(payloads[i])
            self.t.append(times[i])
            self.sym.append(k)
            self.seq.append(seq)
            self.lag.append(lag)
            if k >= 0 and seq > self.reach[k]:
                self.reach[k] = seq
                self.progress_at = times[i]
        self.done_upto = len(payloads)

    def _decode(self, payload: bytes) -> tuple[int, int, float]:
        try:
            body = msgpack.unpackb(payload)
        except (ValueError, TypeError, msgpack.UnpackException):
            return -1, -1, math.nan
        if not isinstance(body, dict):
            return -1, -1, math.nan
        name, ts, lag = body.get("symbol"), body.get("ts"), body.get("lagMs")
        k = -1
        if isinstance(name, str) and name.startswith(_SYMBOL_PREFIX) and name[len(_SYMBOL_PREFIX) :].isdigit():
            k = int(name[len(_SYMBOL_PREFIX) :])
            k = k if k < self.symbols else -1
        seq = ts - self.ts0 if type(ts) is int else -1
        return k, seq, float(lag) if isinstance(lag, int | float) else math.nan

    def complete(self, conn: RawNats, stopped: bool) -> bool:
        """Every symbol of the phase has an update at or past its last snapshot (checked once the publisher is
        done: before, a symbol's last snapshot may not be sent yet)."""
        return stopped and all(r >= last for r, last in zip(self.reach, self.last, strict=True))

    def finish(self, conn: RawNats, out: str) -> dict[str, Any]:
        self.feed(conn.payloads, conn.times)
        self.updates().save(out)
        return {"received": len(conn.payloads), "foreign": self.sym.count(-1)}

    def updates(self) -> PnlUpdates:
        return PnlUpdates(
            t=np.asarray(self.t, dtype=np.float64),
            sym=np.asarray(self.sym, dtype=np.int64),
            seq=np.asarray(self.seq, dtype=np.int64),
            lag_ms=np.asarray(self.lag, dtype=np.float64),
        )


def _run(conn: RawNats, tr: _Tracker, idle: float, grace: float, timeout: float) -> str:
    """Receive until done; returns why it stopped."""
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ, "nats")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "ctl")
    start = time.perf_counter()
    stop_at: float | None = None
    try:
        while True:
            for key, _ in sel.select(0.05):
                if key.data == "nats":
                    if conn.read_available():
                        tr.feed(conn.payloads, conn.times)
                elif stop_at is None:
                    os.read(sys.stdin.fileno(), 4096)  # "stop" or EOF: either means the publisher is done
                    sel.unregister(sys.stdin.fileno())
                    stop_at = time.perf_counter()
            if tr.complete(conn, stop_at is not None):
                return "complete"
            now = time.perf_counter()
            if conn.closed:
                return "server closed the connection"
            if stop_at is not None and now - max(tr.progress_at, stop_at) > idle:
                return "idle"
            if stop_at is not None and now > stop_at + grace:
                return "grace expired"
            if now - start > timeout:
                return "timeout"
    finally:
        sel.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.sink")
    ap.add_argument("--url", required=True)
    ap.add_argument("--pnl", action="store_true", help="the analytics updates instead of the predictions")
    ap.add_argument("--subject", default=None, help="default: ml.prediction, or analytics.pnl.> with --pnl")
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--count", type=int, required=True, help="snapshots the phase sends")
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--out", required=True, help="prefix of the files it writes")
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)

    tr: _Tracker
    if args.pnl:
        tr = _PnlTracker(args.ts0, args.seq0, args.count, args.symbols)
    else:
        tr = _Predictions(args.ts0, args.seq0, args.count)
    conn = RawNats(args.url)
    try:
        conn.subscribe(args.subject or (PNL_SUBJECT if args.pnl else PREDICTION_SUBJECT))
        conn.ping()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        why = _run(conn, tr, args.idle, args.grace, args.timeout)
    finally:
        conn.close()
    out = {**tr.finish(conn, args.out), "stop": why}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
