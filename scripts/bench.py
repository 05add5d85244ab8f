"""``spark-ml bench`` (also ``python scripts/bench.py``): measure the workers against the nats-py ceiling.

Starts its own nats-server per target on a free loopback port, a publisher and a sink process, and
prints throughput (median, min, max of ``--runs``), the ratio to the ceiling of the same run, loss,
worker CPU per message, resident memory and end-to-end latency at 1k/s and 10k/s; partitioned workers
beside the unpartitioned queue group (``worker-solo``, ``rr-solo``) and, opt-in, the failover time after a
SIGKILL (``--only failover,failover-js``). Writes JSON and Markdown to ``--out``. All measurement logic
lives in :mod:`spark_ml.scripts.harness`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spark_ml.scripts.harness.report import render, write
from spark_ml.scripts.harness.runner import CEILING, RR_CEILING, BenchConfig, run
from spark_ml.scripts.harness.scenarios import SCENARIOS

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(f"{n}{'' if s.default else ' (opt-in)'}" for n, s in SCENARIOS.items())
    ap = argparse.ArgumentParser(
        prog="spark-ml bench",
        description="Throughput, latency, CPU and memory of the workers against a bare nats-py ceiling.",
    )
    ap.add_argument("--quick", action="store_true", help="short phases: well under a minute")
    ap.add_argument("--runs", type=int, default=3, help="throughput runs per target (median, min, max); default 3")
    ap.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder (default bench-results/)")
    ap.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios: {names}. The ceilings are measured too (ratios need them).",
    )
    ap.add_argument("--no-write", action="store_true", help="print the table only")
    ap.add_argument("--keep", action="store_true", help="keep every process's log and the raw phase files")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.runs < 1:
        print("--runs must be at least 1", file=sys.stderr)
        return 2
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in SCENARIOS]
        if unknown:
            print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}", file=sys.stderr)
            return 2
        names = [CEILING] + [n for n in wanted if n != CEILING]
        if any(SCENARIOS[n].kind == "request" for n in wanted) and RR_CEILING not in names:
            names.insert(1, RR_CEILING)
    else:
        names = [n for n, s in SCENARIOS.items() if s.default]
    cfg = BenchConfig.preset(tuple(names), quick=args.quick, runs=args.runs, keep=args.keep)
    results = run(cfg, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(render(results))
    if not args.no_write:
        json_path, md_path = write(results, args.out)
        print(f"wrote {json_path} and {md_path}")
    failed = [s["name"] for s in results["scenarios"] if s["status"] == "error"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
