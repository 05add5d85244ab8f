"""The analytics API caller: ``python -m spark_ml.scripts.harness.query_caller --url URL --inflight K --seconds S``.

K callers (asyncio tasks on one nats-py connection) each ask ``analytics.get`` one request after the other for
S seconds, cycling through the bench's symbols (``SYM0`` .. ``SYM<n-1>``) and the portfolio (``{}``), so that
K requests are outstanding at any time. It prints one JSON line: requests answered, error replies (a micro
error header), failures (timeouts, no responders), replies per second, and the latency percentiles in ms
(request sent to reply read, in this process: nats-py's own cost is included, as a user's client pays it).
It starts on the word ``GO`` on stdin (the harness sends it right before the publisher starts), and prints
``READY`` once connected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

import nats
import numpy as np
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

__all__ = ["ANALYTICS_GET", "main"]

ANALYTICS_GET = "analytics.get"
_ERROR_CODE_HEADER = "Nats-Service-Error-Code"


async def _run(url: str, inflight: int, seconds: float, symbols: int, timeout: float) -> dict[str, object]:
    nc = await nats.connect(url, allow_reconnect=False)
    bodies = [json.dumps({"symbol": f"SYM{k}"}).encode() for k in range(symbols)] + [b"{}"]
    latencies: list[float] = []
    counts = {"errors": 0, "failures": 0}
    try:
        print("READY", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        t0 = time.perf_counter()
        end = t0 + seconds

        async def one(k: int) -> None:
            i = k
            while time.perf_counter() < end:
                body = bodies[i % len(bodies)]
                i += inflight
                sent = time.perf_counter()
                try:
                    reply = await nc.request(ANALYTICS_GET, body, timeout=timeout)
                except (NatsTimeoutError, NoRespondersError):
                    counts["failures"] += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                if reply.headers and _ERROR_CODE_HEADER in reply.headers:
                    counts["errors"] += 1

        await asyncio.gather(*(one(k) for k in range(inflight)))
        span = time.perf_counter() - t0
    finally:
        await nc.close()
    lat = np.asarray(latencies) * 1000.0
    out: dict[str, object] = {"inflight": inflight, "answered": len(latencies), **counts}
    out["rate"] = len(latencies) / span if span > 0 else None
    if lat.size:
        p50, p99, p999 = np.percentile(lat, (50.0, 99.0, 99.9))
        out["latency_ms"] = {"p50": float(p50), "p99": float(p99), "p99.9": float(p999), "max": float(lat.max())}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.query_caller")
    ap.add_argument("--url", required=True)
    ap.add_argument("--inflight", type=int, default=1)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--symbols", type=int, default=16)
    ap.add_argument("--timeout", type=float, default=5.0)
    args = ap.parse_args(argv)
    out = asyncio.run(_run(args.url, max(1, args.inflight), args.seconds, args.symbols, args.timeout))
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
