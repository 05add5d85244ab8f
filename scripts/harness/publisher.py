"""The publisher process: ``python -m spark_ml.scripts.harness.publisher --url ... --count N [--rate R]``.

Without ``--rate`` it writes all snapshots as fast as the server takes them (sustained-throughput
phases). With ``--rate`` it paces them at R per second, sending whatever is due after each short sleep,
and writes each snapshot's send time (``time.perf_counter()``, CLOCK_MONOTONIC, comparable across
processes) to ``--times`` as float64 (latency phases). With ``--live`` (the soak: minutes of traffic) it
builds each snapshot when it is due rather than all before the clock starts, and appends the send times
to ``--times`` as it goes, so a reader can follow them. SIGTERM ends it early. It prints one JSON line
with what it did.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from array import array
from collections.abc import Callable
from types import FrameType
from typing import IO

from spark_ml.scripts.harness.payloads import frames
from spark_ml.scripts.harness.wire import RawNats

__all__ = ["main"]

_MIN_SLEEP = 0.0002
"""Shortest sleep between paced writes: below it a wake-up costs more CPU than the sleep saves."""

_stopping = False
"""Set by SIGTERM: the paced loop stops and the process reports what it sent."""

Frames = Callable[[int, int], bytes]
"""``(lo, hi)`` -> the ``PUB`` commands of snapshots ``lo .. hi - 1`` of the phase, joined."""


class _Times:
    """Send times: kept for one write at the end, or appended to ``live`` and flushed as they come."""

    def __init__(self, live: IO[bytes] | None) -> None:
        self.kept: array[float] = array("d")
        self._live = live

    def add(self, t: float, n: int) -> None:
        if self._live is None:
            self.kept.extend([t] * n)
        else:
            array("d", [t] * n).tofile(self._live)
            self._live.flush()  # the soak reads the file while it grows


def _paced(conn: RawNats, batch: Frames, count: int, rate: float, deadline: float, times: _Times, sleep: float) -> int:
    sent = 0
    t0 = time.perf_counter()
    while sent < count and not _stopping:
        now = time.perf_counter()
        if now > deadline:
            break
        due = min(count, int((now - t0) * rate) + 1)
        if due > sent:
            data = batch(sent, due)
            now = time.perf_counter()
            conn.send(data)
            times.add(now, due - sent)
            sent = due
        delay = t0 + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(max(delay, sleep))
    return sent


def _on_term(sig: int, frame: FrameType | None) -> None:
    global _stopping
    _stopping = True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.publisher")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default="", help="one subject for all; default: market.snapshot.<SYMBOL> each")
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible")
    ap.add_argument("--times", default="", help="file for the send times (float64), paced mode")
    ap.add_argument("--live", action="store_true", help="build snapshots when due; append send times as they come")
    ap.add_argument("--min-sleep", type=float, default=_MIN_SLEEP, help="shortest pause of the paced mode (s)")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--traceparent", action="store_true", help="each snapshot with a W3C traceparent of its own")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)

    if args.live:

        def batch(lo: int, hi: int) -> bytes:
            return b"".join(frames(args.ts0, args.seq0 + lo, hi - lo, args.symbols, args.subject, args.traceparent))

    else:
        built = frames(args.ts0, args.seq0, args.count, args.symbols, args.subject, args.traceparent)

        def batch(lo: int, hi: int) -> bytes:
            return b"".join(built[lo:hi])

    live = open(args.times, "wb") if args.live and args.times else None
    times = _Times(live)
    conn = RawNats(args.url)
    deadline = time.perf_counter() + args.timeout
    try:
        t_first = time.perf_counter()
        if args.rate > 0:
            sent = _paced(conn, batch, args.count, args.rate, deadline, times, args.min_sleep)
        else:
            conn.send(batch(0, args.count))
            sent = args.count
        t_last = time.perf_counter()
        conn.ping(max(1.0, deadline - time.perf_counter()))
    finally:
        conn.close()
        if live is not None:
            live.close()
    if args.times and live is None:
        with open(args.times, "wb") as fh:
            times.kept.tofile(fh)
    span = t_last - t_first
    out = {
        "sent": sent,
        "t_first": t_first,
        "t_last": t_last,
        "seconds": span,
        "rate": sent / span if span > 0 else None,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if sent == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
