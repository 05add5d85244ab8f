"""The request-reply caller: ``python -m spark_ml.scripts.harness.caller --url URL --count N ...``.

It sends ``{"snapshot": {...}}`` requests (msgpack) to ``ml.predict`` with K requests outstanding at any
time (K = 1: one sequential caller), each with its own reply subject, and records when each request
left and when its reply was read. Replies are matched to requests by the ``ts`` they carry; a reply
without one is an error reply. Writes ``PREFIX.send`` (float64 per request), ``PREFIX.seq`` (int64)
and ``PREFIX.t`` (float64) per matched reply, and prints one JSON line of counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from array import array

import msgpack

from spark_ml.scripts.harness.payloads import seq_of, snapshot
from spark_ml.scripts.harness.wire import RawNats

__all__ = ["PREDICT_SUBJECT", "add_call_args", "main", "request_frame", "write_results"]

PREDICT_SUBJECT = "ml.predict"


def request_frame(subject: str, reply: str, body: bytes) -> bytes:
    """One ``PUB`` with a reply subject."""
    return b"PUB %s %s %d\r\n%s\r\n" % (subject.encode(), reply.encode(), len(body), body)


def request_body(ts0: int, seq: int, symbols: int) -> bytes:
    return msgpack.packb({"snapshot": msgpack.unpackb(snapshot(ts0, seq, symbols))})


def _call(conn: RawNats, frames: list[bytes], inflight: int, deadline: float, send: array[float]) -> int:
    """Keep ``inflight`` requests outstanding until all are answered (or the deadline); returns replies."""
    count = len(frames)
    nxt = min(inflight, count)
    now = time.perf_counter()
    conn.send(b"".join(frames[:nxt]))
    send.extend([now] * nxt)
    done = 0
    while done < nxt:
        left = deadline - time.perf_counter()
        if left <= 0 or conn.closed:
            break
        got = conn.poll(min(left, 1.0))
        done += got
        more = min(got, count - nxt)
        if more:
            now = time.perf_counter()
            conn.send(b"".join(frames[nxt : nxt + more]))
            send.extend([now] * more)
            nxt += more
    return done


def add_call_args(ap: argparse.ArgumentParser) -> None:
    """The arguments every caller shares (what to send, how many in flight, where the results go)."""
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=60.0)


def write_results(
    out: str, send: array[float], seqs: array[int], times: array[float], done: int, errors: int, span: float
) -> None:
    """``OUT.send``/``.seq``/``.t`` for the harness, and one JSON line of counts on stdout."""
    for suffix, arr in ((".send", send), (".seq", seqs), (".t", times)):
        with open(out + suffix, "wb") as fh:
            arr.tofile(fh)
    counts = {"sent": len(send), "received": done, "errors": errors, "rate": done / span if span > 0 else None}
    sys.stdout.write(json.dumps(counts) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.caller")
    ap.add_argument("--url", required=True)
    ap.add_argument("--subject", default=PREDICT_SUBJECT)
    add_call_args(ap)
    args = ap.parse_args(argv)

    inbox = f"_INBOX.bench{os.getpid()}"
    frames = [
        request_frame(args.subject, f"{inbox}.{i}", request_body(args.ts0, args.seq0 + i, args.symbols))
        for i in range(args.count)
    ]
    conn = RawNats(args.url)
    send: array[float] = array("d")
    try:
        conn.subscribe(inbox + ".*")
        conn.ping()
        t_first = time.perf_counter()
        done = _call(conn, frames, max(1, args.inflight), t_first + args.timeout, send)
        t_last = time.perf_counter()
    finally:
        conn.close()
    seqs: array[int] = array("q")
    times: array[float] = array("d")
    errors = 0
    for payload, t in zip(conn.payloads, conn.times, strict=True):
        i = seq_of(payload, args.ts0) - args.seq0
        if 0 <= i < len(send):
            seqs.append(i + args.seq0)
            times.append(t)
        else:
            errors += 1
    write_results(args.out, send, seqs, times, done, errors, t_last - t_first)
    return 0


if __name__ == "__main__":
    sys.exit(main())
