"""``spark-ml soak`` (also ``python scripts/soak.py``): a steady load for minutes, with memory watched.

Starts its own nats-server on a free loopback port, one ``spark-ml worker`` process (the benchmark's
``worker`` scenario) and a publisher process that sends ``--rate`` snapshots per second over ``--symbols``
symbols for ``--minutes``. This process is the sink: it listens to ``ml.prediction`` and ``ml.dlq.snapshot``
and every ``--sample-s`` seconds prints a line and records a sample: predictions per second, end-to-end
latency p50/p99/max (the publisher's send time to the sink's socket read; both are ``time.perf_counter()``,
CLOCK_MONOTONIC, comparable across processes, and the send times travel through a file the publisher
appends to), the worker's own ``latencyMs`` p99, its resident memory (VmRSS) and its CPU.

At the end it reconciles every snapshot sent (predicted once, dead-lettered, or missing), writes JSON and
Markdown to ``--out``, and exits 1 when the worker's RSS grew by ``--max-growth`` or more from the end of
the warm-up (``--warmup-minutes``) to the end, or when anything was lost, dead-lettered, duplicated or not
finite. Every process it started is stopped on exit, on Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from spark_ml.scripts.harness.soak import SoakConfig, render, run, write

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="spark-ml soak", description="Steady load on one worker for minutes: throughput, latency, memory."
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="how long to publish (fractions allowed)")
    ap.add_argument("--rate", type=float, default=2000.0, help="snapshots per second (default 2000)")
    ap.add_argument("--symbols", type=int, default=200, help="symbols the snapshots are spread over")
    ap.add_argument("--sample-s", type=float, default=60.0, help="seconds between samples (default 60)")
    ap.add_argument("--warmup-minutes", type=float, default=2.0, help="RSS growth is measured from here")
    ap.add_argument("--max-growth", type=float, default=0.05, help="RSS growth that fails the soak (0.05 = 5%%)")
    ap.add_argument("--out", type=Path, default=Path("soak-results"), help="results folder (default soak-results/)")
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--keep", action="store_true", help="keep the logs of every process")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.sample_s <= 0 or args.symbols < 1:
        print("spark-ml soak: --minutes, --rate, --sample-s and --symbols must be positive", file=sys.stderr)
        return 2
    cfg = SoakConfig(args.minutes, args.rate, args.symbols, args.sample_s, args.warmup_minutes, args.max_growth)

    def on_term(sig: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        result = run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True), keep=args.keep)
    except KeyboardInterrupt:  # during start-up: the processes are stopped already
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(render(result), end="")
    if not args.no_write:
        json_path, md_path = write(result, args.out)
        print(f"wrote {json_path} and {md_path}")
    if result["interrupted"]:
        return 130
    return 1 if result["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
