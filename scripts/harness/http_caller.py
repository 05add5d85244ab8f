"""The HTTP caller: ``python -m spark_ml.scripts.harness.http_caller --http URL --count N --inflight K --out PREFIX``.

The HTTP twin of :mod:`spark_ml.scripts.harness.caller`: ``POST /ml/predict`` with the seed's JSON body shape
(``{"snapshot": {...}}``), K requests outstanding over one keep-alive connection pool, each reply matched
to its request by the ``ts`` it carries. It writes the same ``PREFIX.send``/``.seq``/``.t`` files and
prints the same JSON line, so the harness treats both callers alike. A non-200 reply counts as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array

import aiohttp
import msgpack

from spark_ml.scripts.harness.caller import add_call_args, write_results
from spark_ml.scripts.harness.payloads import snapshot

__all__ = ["main"]


_Calls = tuple[list[float], list[int], list[float], int, float]
"""Send times, indices of the answered requests, their reply times, errors, and the wall span."""


async def _call(url: str, bodies: list[bytes], inflight: int, timeout: float) -> _Calls:
    send = [0.0] * len(bodies)
    seqs: list[int] = []
    times: list[float] = []
    errors = 0
    nxt = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=inflight, force_close=False)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:

        async def caller() -> None:
            nonlocal nxt, errors
            while nxt < len(bodies):
                i = nxt
                nxt += 1
                send[i] = time.perf_counter()
                async with session.post(url, data=bodies[i], headers=headers) as resp:
                    data = await resp.read()
                    t = time.perf_counter()
                    if resp.status != 200:
                        errors += 1
                        continue
                seqs.append(i)
                times.append(t)
                json.loads(data)  # a reply must be a whole JSON prediction

        t0 = time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(caller() for _ in range(min(inflight, len(bodies))))), timeout)
        span = time.perf_counter() - t0
    return send, seqs, times, errors, span


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spark_ml.scripts.harness.http_caller")
    ap.add_argument("--http", required=True, help="the gateway's /ml/predict URL")
    add_call_args(ap)
    args = ap.parse_args(argv)

    bodies = [
        json.dumps({"snapshot": msgpack.unpackb(snapshot(args.ts0, args.seq0 + i, args.symbols))}).encode()
        for i in range(args.count)
    ]
    send, idx, times, errors, span = asyncio.run(_call(args.http, bodies, max(1, args.inflight), args.timeout))
    seqs = array("q", [args.seq0 + i for i in idx])
    write_results(args.out, array("d", send), seqs, array("d", times), len(idx), errors, span)
    return 0


if __name__ == "__main__":
    sys.exit(main())
