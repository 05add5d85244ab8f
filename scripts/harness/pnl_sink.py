"""The analytics sink: ``python -m spark_ml.scripts.harness.pnl_sink --url ... --seq0 S --count N --symbols K --out
PREFIX``.

It subscribes to ``analytics.pnl.>``, prints ``READY`` once the server has registered the subscription,
and timestamps every socket read (the moment the update reached this process). Unlike the prediction
sink it decodes as it goes: updates are few (at most ~20 per symbol per second by design), and it has to
know when it is done, which is when, after the runner wrote ``stop`` on its stdin (the publisher is
done), every symbol of the phase has an update at or past its last snapshot. It also stops when no
update has moved any symbol forward for ``--idle`` seconds after ``stop`` (heartbeats repeat the last
state and do not count as progress), after ``--grace`` seconds, or at ``--timeout``. It writes the
updates as :class:`spark_ml.scripts.harness.pnl.PnlUpdates` and prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import selectors
import sys
import time

import msgpack
import numpy as np

from spark_ml.scripts.harness.pnl import PNL_SUBJECT, PnlUpdates
from spark_ml.scripts.harness.wire import RawNats

__all__ = ["main"]
_SYMBOL_PREFIX = "SYM"


class _Tracker:
    """Decoded updates so far, and how far each of the phase's symbols has got."""

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

    def complete(self) -> bool:
        return all(r >= last for r, last in zip(self.reach, self.last, strict=True))

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
            now = time.perf_counter()
            if stop_at is not None and tr.complete():
                return "complete"
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
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.pnl_sink")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default=PNL_SUBJECT)
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--count", type=int, required=True, help="snapshots the phase sends")
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--out", required=True, help="prefix of the .pnl.* files")
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)

    tr = _Tracker(args.ts0, args.seq0, args.count, args.symbols)
    conn = RawNats(args.url)
    try:
        conn.subscribe(args.subject)
        conn.ping()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        why = _run(conn, tr, args.idle, args.grace, args.timeout)
    finally:
        conn.close()
    tr.feed(conn.payloads, conn.times)
    tr.updates().save(args.out)
    out = {"received": len(conn.payloads), "foreign": tr.sym.count(-1), "stop": why}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
