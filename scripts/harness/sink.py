"""The sink process: ``python -m spark_ml.scripts.harness.sink --url ... --seq0 S --expect N --out PREFIX``.

It subscribes to the predictions, prints ``READY`` once the server has registered the subscription,
and timestamps every socket read. It stops when all N expected predictions arrived, or, after the
runner wrote ``stop`` on its stdin (the publisher is done), when nothing arrived for ``--idle``
seconds or ``--grace`` seconds passed. Only then does it decode the payloads (decoding during the run
would steal CPU from the worker under test), keep the first arrival of each expected sequence number,
write ``PREFIX.seq`` (int64) and ``PREFIX.t`` (float64), and print one JSON line of counts.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import sys
import time
from array import array

from spark_ml.scripts.harness.payloads import PREDICTION_SUBJECT, seq_of
from spark_ml.scripts.harness.wire import RawNats

__all__ = ["main"]


def _matched(conn: RawNats, ts0: int, seq0: int, expect: int) -> tuple[array[int], array[float], int, int]:
    """First arrival of each expected sequence number; also counts duplicates and foreign messages."""
    seen = bytearray(expect)
    seqs: array[int] = array("q")
    times: array[float] = array("d")
    dups = foreign = 0
    for payload, t in zip(conn.payloads, conn.times, strict=True):
        i = seq_of(payload, ts0) - seq0
        if not 0 <= i < expect:
            foreign += 1
        elif seen[i]:
            dups += 1
        else:
            seen[i] = 1
            seqs.append(i + seq0)
            times.append(t)
    return seqs, times, dups, foreign


def _run(conn: RawNats, expect: int, idle: float, grace: float, timeout: float, check: int) -> str:
    """Receive until done; returns why it stopped."""
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ, "nats")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "ctl")
    start = last = time.perf_counter()
    stop_at: float | None = None
    try:
        while True:
            for key, _ in sel.select(0.05):
                if key.data == "nats":
                    if conn.read_available():
                        last = time.perf_counter()
                elif stop_at is None:
                    os.read(sys.stdin.fileno(), 4096)  # "stop" or EOF: either means the publisher is done
                    sel.unregister(sys.stdin.fileno())
                    stop_at = time.perf_counter() + grace
            if len(conn.payloads) >= check:
                return "complete"
            now = time.perf_counter()
            if conn.closed:
                return "server closed the connection"
            if stop_at is not None and now - max(last, stop_at - grace) > idle:
                return "idle"
            if stop_at is not None and now > stop_at:
                return "grace expired"
            if now - start > timeout:
                return "timeout"
    finally:
        sel.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.sink")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default=PREDICTION_SUBJECT)
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--out", required=True, help="prefix of the .seq and .t files")
    ap.add_argument("--idle", type=float, default=1.0)
    ap.add_argument("--grace", type=float, default=30.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    args = ap.parse_args(argv)

    conn = RawNats(args.url)
    try:
        conn.subscribe(args.subject)
        conn.ping()
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        check = args.expect
        while True:
            why = _run(conn, args.expect, args.idle, args.grace, args.timeout, check)
            seqs, times, dups, foreign = _matched(conn, args.ts0, args.seq0, args.expect)
            # Stray messages (late probes, duplicates) can fill the count early: keep listening then.
            if why != "complete" or len(seqs) >= args.expect:
                break
            check = len(conn.payloads) + args.expect - len(seqs)
    finally:
        conn.close()
    with open(args.out + ".seq", "wb") as fh:
        seqs.tofile(fh)
    with open(args.out + ".t", "wb") as fh:
        times.tofile(fh)
    out = {"received": len(conn.payloads), "matched": len(seqs), "duplicates": dups, "foreign": foreign, "stop": why}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
