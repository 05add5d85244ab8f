"""The publisher process: ``python -m spark_ml.scripts.harness.publisher --url ... --count N [--rate R]``.

Without ``--rate`` it writes all snapshots as fast as the server takes them (sustained-throughput
phases). With ``--rate`` it paces them at R per second, sending whatever is due after each short sleep,
and writes each snapshot's send time (``time.perf_counter()``, CLOCK_MONOTONIC, comparable across
processes) to ``--times`` as float64 (latency phases). It prints one JSON line with what it did.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from array import array

from spark_ml.scripts.harness.payloads import SNAPSHOT_SUBJECT, frames
from spark_ml.scripts.harness.wire import RawNats

__all__ = ["main"]

_MIN_SLEEP = 0.0002
"""Shortest sleep between paced writes: below it a wake-up costs more CPU than the sleep saves."""


def _paced(conn: RawNats, batch: list[bytes], rate: float, deadline: float, times: array[float]) -> int:
    sent, count = 0, len(batch)
    t0 = time.perf_counter()
    while sent < count:
        now = time.perf_counter()
        if now > deadline:
            break
        due = min(count, int((now - t0) * rate) + 1)
        if due > sent:
            conn.send(b"".join(batch[sent:due]))
            times.extend([now] * (due - sent))
            sent = due
        delay = t0 + sent / rate - time.perf_counter()
        if delay > 0:
            time.sleep(max(delay, _MIN_SLEEP))
    return sent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.publisher")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default=SNAPSHOT_SUBJECT)
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--rate", type=float, default=0.0, help="messages per second; 0 = as fast as possible")
    ap.add_argument("--times", default="", help="file for the send times (float64), paced mode")
    ap.add_argument("--timeout", type=float, default=60.0)
    args = ap.parse_args(argv)

    batch = frames(args.ts0, args.seq0, args.count, args.symbols, args.subject)
    conn = RawNats(args.url)
    deadline = time.perf_counter() + args.timeout
    times: array[float] = array("d")
    try:
        t_first = time.perf_counter()
        if args.rate > 0:
            sent = _paced(conn, batch, args.rate, deadline, times)
        else:
            conn.send(b"".join(batch))
            sent = len(batch)
        t_last = time.perf_counter()
        conn.ping(max(1.0, deadline - time.perf_counter()))
    finally:
        conn.close()
    if args.times:
        with open(args.times, "wb") as fh:
            times.tofile(fh)
    span = t_last - t_first
    out = {"sent": sent, "t_first": t_first, "t_last": t_last, "rate": sent / span if span > 0 else None}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if sent == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
