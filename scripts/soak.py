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
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any

import msgpack

from spark_ml.scripts.harness.payloads import SNAPSHOT_SUBJECT, snapshot
from spark_ml.scripts.harness.wire import RawNats, pub_frame

__all__ = ["main"]

PREDICTION_SUBJECT = "ml.prediction"
DLQ_SUBJECT = "ml.dlq.snapshot"
PUBLISHER_ROLE = "_publisher"
"""Hidden first argument that makes this module the publisher process."""
_MIN_SLEEP = 0.001
"""Shortest pause of the paced publisher: at 2000/s it sends about two snapshots per wake-up."""
_DIGEST_EVERY_S = 0.5
_DRAIN_IDLE_S = 3.0
_DRAIN_MAX_S = 60.0


# --- the publisher process ------------------------------------------------------------------------------


def _publisher(argv: list[str]) -> int:
    """Send ``--count`` snapshots at ``--rate`` per second; append each send time (float64) to ``--times``."""
    ap = argparse.ArgumentParser(prog=f"spark-ml soak {PUBLISHER_ROLE}")
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--symbols", type=int, required=True)
    ap.add_argument("--ts0", type=int, required=True)
    ap.add_argument("--seq0", type=int, default=0)
    ap.add_argument("--times", required=True)
    args = ap.parse_args(argv)
    stopping = False

    def on_term(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    conn = RawNats(args.url)
    sent = 0
    with open(args.times, "wb") as times:
        t0 = time.perf_counter()
        while sent < args.count and not stopping:
            due = min(args.count, int((time.perf_counter() - t0) * args.rate) + 1)
            if due > sent:
                seqs = range(args.seq0 + sent, args.seq0 + due)
                data = b"".join(pub_frame(SNAPSHOT_SUBJECT, snapshot(args.ts0, s, args.symbols)) for s in seqs)
                now = time.perf_counter()
                conn.send(data)
                array("d", [now] * (due - sent)).tofile(times)
                times.flush()  # the sink reads the file while it grows
                sent = due
            delay = t0 + sent / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(max(delay, _MIN_SLEEP))
        span = time.perf_counter() - t0
    conn.ping(10.0)
    conn.close()
    print(json.dumps({"sent": sent, "seconds": span, "rate": sent / span if span > 0 else None}), flush=True)
    return 0


# --- the sink (this process) ----------------------------------------------------------------------------


def _finite(pred: dict[str, Any]) -> bool:
    values = [pred.get("score"), pred.get("confidence"), pred.get("latencyMs")]
    features = pred.get("features")
    if isinstance(features, dict):
        values += list(features.values())
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


class _Sink:
    """Predictions and dead letters as they arrive, matched with their send times; memory stays bounded
    (payloads are decoded every half second; only one byte per expected snapshot is kept)."""

    def __init__(self, url: str, ts0: int, count: int, times_path: Path) -> None:
        self.conn = RawNats(url)
        self.conn.subscribe(PREDICTION_SUBJECT, 1)
        self.conn.subscribe(DLQ_SUBJECT, 2)
        self.conn.ping()
        self.ts0, self.count = ts0, count
        self.times_path = times_path
        self._times_fh: IO[bytes] | None = None
        self._rest = b""
        self.send_times: array[float] = array("d")
        self.seen = bytearray(count)
        self.predicted = self.dead_letters = self.duplicates = self.non_finite = self.foreign = 0
        self.pending: list[tuple[int, float]] = []
        self.last_arrival = time.perf_counter()
        self.reset_interval()

    def reset_interval(self) -> None:
        self.i_predicted = self.i_dead = 0
        self.i_latency_ms: array[float] = array("d")
        self.i_worker_ms: array[float] = array("d")

    def pump(self, timeout: float) -> None:
        if self.conn.poll(timeout):
            self.last_arrival = time.perf_counter()

    def _load_times(self) -> None:
        if self._times_fh is None:
            if not self.times_path.exists():
                return
            self._times_fh = open(self.times_path, "rb")
        data = self._rest + self._times_fh.read()
        whole = len(data) - len(data) % 8
        self.send_times.frombytes(data[:whole])
        self._rest = data[whole:]

    def _latency(self, seq: int, t: float) -> None:
        if seq < len(self.send_times):
            self.i_latency_ms.append((t - self.send_times[seq]) * 1000.0)
        else:
            self.pending.append((seq, t))  # arrived before its send time reached the file

    def digest(self) -> None:
        payloads, times = self.conn.payloads, self.conn.times
        self.conn.payloads, self.conn.times = [], []
        self._load_times()
        pending, self.pending = self.pending, []
        for seq, t in pending:
            self._latency(seq, t)
        for payload, t in zip(payloads, times, strict=True):
            self._one(payload, t)

    def _one(self, payload: bytes, t: float) -> None:
        try:
            obj = msgpack.unpackb(payload)
        except Exception:
            self.foreign += 1
            return
        if not isinstance(obj, dict):
            self.foreign += 1
        elif "score" not in obj:  # a dead letter carries the snapshot as it was sent
            self.dead_letters += 1
            self.i_dead += 1
        else:
            seq = obj.get("ts", -1) - self.ts0 if type(obj.get("ts")) is int else -1
            if not 0 <= seq < self.count:
                self.foreign += 1
            elif self.seen[seq]:
                self.duplicates += 1
            else:
                self.seen[seq] = 1
                self.predicted += 1
                self.i_predicted += 1
                if not _finite(obj):
                    self.non_finite += 1
                if isinstance(obj.get("latencyMs"), (int, float)):
                    self.i_worker_ms.append(float(obj["latencyMs"]))
                self._latency(seq, t)

    def close(self) -> None:
        self.conn.close()
        if self._times_fh is not None:
            self._times_fh.close()


# --- samples, verdict, report ---------------------------------------------------------------------------


@dataclass
class Sample:
    """One sampling interval. Times in seconds from the publisher's start, latencies in milliseconds."""

    index: int
    t_s: float
    seconds: float
    sent_total: int
    predicted: int
    throughput: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    worker_p99_ms: float | None
    rss_mb: float
    cpu_pct: float
    """CPU time of the worker over the interval, in percent of one core."""
    dead_letters: int


def _pct(values: array[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]


def _rss_growth(samples: list[Sample], warmup_s: float) -> dict[str, Any]:
    """Growth of the worker's RSS from the first sample at or after the warm-up to the last sample."""
    after = [s for s in samples if s.t_s >= warmup_s - 1e-6]
    if len(after) < 2:
        return {"growth": None, "note": f"fewer than two samples after the {warmup_s:g} s warm-up"}
    base, last = after[0], after[-1]
    return {
        "baseline_t_s": base.t_s,
        "baseline_mb": base.rss_mb,
        "final_mb": last.rss_mb,
        "max_mb": max(s.rss_mb for s in after),
        "growth": (last.rss_mb - base.rss_mb) / base.rss_mb,
    }


def _verdict(totals: dict[str, int], rss: dict[str, Any], max_growth: float, worker_exit: int | None) -> list[str]:
    failures = []
    if worker_exit is not None:
        failures.append(f"the worker exited during the run (code {worker_exit})")
    for key in ("missing", "dead_letters", "duplicates", "non_finite"):
        if totals[key]:
            failures.append(f"{key.replace('_', ' ')}: {totals[key]}")
    growth = rss.get("growth")
    if growth is not None and growth >= max_growth:
        failures.append(f"RSS grew {growth * 100:.1f}% after warm-up (limit {max_growth * 100:g}%)")
    return failures


_COLUMNS = ("#", "t (s)", "sent", "pred/s", "p50 ms", "p99 ms", "max ms", "worker p99 ms", "RSS MB", "CPU %", "DLQ")


def _cells(s: Sample) -> list[str]:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    return [
        str(s.index),
        f"{s.t_s:.0f}",
        str(s.sent_total),
        f"{s.throughput:.0f}",
        ms(s.p50_ms),
        ms(s.p99_ms),
        ms(s.max_ms),
        ms(s.worker_p99_ms),
        f"{s.rss_mb:.1f}",
        f"{s.cpu_pct:.0f}",
        str(s.dead_letters),
    ]


def _line(s: Sample) -> str:
    c = _cells(s)
    return (
        f"[{c[0]}] t={c[1]}s sent={c[2]} pred/s={c[3]} latency p50={c[4]} p99={c[5]} max={c[6]} ms "
        f"(worker p99 {c[7]} ms) rss={c[8]} MB cpu={c[9]}% dlq={c[10]}"
    )


def render(result: dict[str, Any], *, markdown: bool = False) -> str:
    """The per-sample table, the reconciliation and the RSS verdict."""
    samples = [Sample(**s) for s in result["samples"]]
    rows = [list(_COLUMNS)] + [_cells(s) for s in samples]
    if markdown:
        table = ["| " + " | ".join(r) + " |" for r in rows]
        table.insert(1, "|" + "---|" * len(_COLUMNS))
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
        table = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    cfg, t, rss = result["config"], result["totals"], result["rss"]
    growth = "n/a (" + rss.get("note", "") + ")" if rss.get("growth") is None else f"{rss['growth'] * 100:+.2f}%"
    head = [
        f"spark-ml soak, {result['started']}: {cfg['minutes']:g} min at {cfg['rate']:g}/s over {cfg['symbols']} "
        f"symbols, a sample every {cfg['sample_s']:g} s ({result['machine']['cpu_model']}, "
        f"{result['machine']['usable_cores']} cores, load {result['load_before']})",
    ]
    tail = [
        f"sent {t['sent']}, predicted {t['predicted']}, dead letters {t['dead_letters']}, missing {t['missing']}, "
        f"duplicates {t['duplicates']}, non-finite {t['non_finite']}",
        f"RSS after warm-up ({rss.get('baseline_t_s', 0):.0f} s): {rss.get('baseline_mb', 0):.1f} MB -> "
        f"{rss.get('final_mb', 0):.1f} MB at the end: {growth} (limit {cfg['max_growth'] * 100:g}%)",
        f"worker counters: {result['worker_metrics']}; server slow consumers: {result['server_slow_consumers']}",
        "verdict: " + ("PASS" if not result["failures"] else "FAIL: " + "; ".join(result["failures"])),
    ]
    if markdown:
        return "\n".join([f"- {h}" for h in head] + [""] + table + [""] + [f"- {x}" for x in tail]) + "\n"
    return "\n".join(head + [""] + table + [""] + tail) + "\n"


def write(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``soak-<stamp>.json`` and ``.md`` (and ``latest.*`` copies) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(result["started"]).strftime("%Y%m%d-%H%M%S")
    js = json.dumps(result, indent=2) + "\n"
    md = "# spark-ml soak\n\n" + render(result, markdown=True)
    json_path, md_path = out_dir / f"soak-{stamp}.json", out_dir / f"soak-{stamp}.md"
    for path, text in ((json_path, js), (md_path, md), (out_dir / "latest.json", js), (out_dir / "latest.md", md)):
        path.write_text(text)
    return json_path, md_path


# --- the run --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SoakConfig:
    minutes: float
    rate: float
    symbols: int = 200
    sample_s: float = 60.0
    warmup_minutes: float = 2.0
    max_growth: float = 0.05
    ready_timeout: float = 60.0

    @property
    def count(self) -> int:
        return int(self.rate * self.minutes * 60.0)


class _Run:
    """One soak: a bed (nats-server and worker, started and probed as the benchmark does), the publisher, the
    sampling loop, and what it measured."""

    def __init__(self, cfg: SoakConfig, workdir: Path, log: Any) -> None:
        from spark_ml.scripts.harness.measure import Bed, Sequencer
        from spark_ml.scripts.harness.procs import Child, cpu_seconds
        from spark_ml.scripts.harness.scenarios import SCENARIOS

        self.cfg, self.workdir, self.log = cfg, workdir, log
        self._child, self._cpu = Child, cpu_seconds
        self.sequencer = Sequencer(int(time.time() * 1000), cfg.symbols)
        self.bed = Bed(SCENARIOS["worker"], self.sequencer, workdir, ready_timeout=cfg.ready_timeout)
        self.seq0 = 0
        self.samples: list[Sample] = []
        self.publisher: Any = None
        self.sink: _Sink | None = None
        self.published: dict[str, Any] = {}
        self.worker_exit: int | None = None

    @property
    def worker(self) -> Any:
        return self.bed.child

    def start(self) -> None:
        t0 = time.perf_counter()
        self.bed.start()  # probes with the sequencer's first numbers until a prediction comes back
        self.seq0 = self.sequencer.take(self.cfg.count)
        self.sink = _Sink(self.bed.url, self.sequencer.ts0 + self.seq0, self.cfg.count, self.workdir / "times.f64")
        assert self.bed.server is not None and self.bed.server.proc is not None
        self.log(
            f"worker pid {self.worker.pid} ready in {time.perf_counter() - t0:.1f}s; "
            f"nats-server pid {self.bed.server.proc.pid} on {self.bed.url}"
        )

    def _sample(self, t_prev: float, now: float, t_start: float, cpu_prev: float) -> float:
        sink = self.sink
        assert sink is not None
        sink.digest()
        cpu = self._cpu(self.worker.pid)
        seconds = now - t_prev
        s = Sample(
            index=len(self.samples) + 1,
            t_s=round(now - t_start, 3),
            seconds=round(seconds, 3),
            sent_total=len(sink.send_times),
            predicted=sink.i_predicted,
            throughput=sink.i_predicted / seconds if seconds > 0 else 0.0,
            p50_ms=_pct(sink.i_latency_ms, 50),
            p99_ms=_pct(sink.i_latency_ms, 99),
            max_ms=max(sink.i_latency_ms) if sink.i_latency_ms else None,
            worker_p99_ms=_pct(sink.i_worker_ms, 99),
            rss_mb=self.bed.rss()[0] / 2**20,
            cpu_pct=(cpu - cpu_prev) / seconds * 100.0 if seconds > 0 else 0.0,
            dead_letters=sink.i_dead,
        )
        sink.reset_interval()
        self.samples.append(s)
        self.log(_line(s))
        return cpu

    def loop(self) -> None:
        """Sample every ``sample_s`` until the publisher is done and its snapshots are accounted for."""
        cfg, sink = self.cfg, self.sink
        assert sink is not None
        argv = [
            sys.executable,
            "-m",
            "spark_ml.scripts.soak",
            PUBLISHER_ROLE,
            "--url",
            self.bed.url,
            "--rate",
            str(cfg.rate),
        ]
        argv += ["--count", str(cfg.count), "--symbols", str(cfg.symbols), "--ts0", str(self.sequencer.ts0)]
        argv += ["--seq0", str(self.seq0), "--times", str(sink.times_path)]
        cpu_prev = self._cpu(self.worker.pid)
        self.publisher = self._child("publisher", argv, self.workdir / "publisher.log", pipe=True)
        t_start = t_prev = last_digest = time.perf_counter()
        scheduled_end = t_start + cfg.count / cfg.rate
        next_at = t_start + cfg.sample_s
        done_at: float | None = None
        while True:
            now = time.perf_counter()
            if done_at is None and not self.publisher.alive():
                done_at = now
                self.published = json.loads(self.publisher.readline(10.0))
            if not self.worker.alive():
                self.worker_exit = self.worker.proc.returncode
                break
            # The last interval absorbs a short remainder (and the drain) rather than reporting a stub.
            if now >= next_at and scheduled_end - now > 0.25 * cfg.sample_s:
                cpu_prev, t_prev = self._sample(t_prev, now, t_start, cpu_prev), now
                next_at += cfg.sample_s
            if done_at is not None:
                sink.digest()
                accounted = sink.predicted + sink.dead_letters >= self.published.get("sent", cfg.count)
                idle = now - max(sink.last_arrival, done_at) > _DRAIN_IDLE_S
                if accounted or idle or now - done_at > _DRAIN_MAX_S:
                    break
            if now - last_digest > _DIGEST_EVERY_S:
                sink.digest()
                last_digest = now
            sink.pump(max(0.0, min(0.1, next_at - now)))
        self._sample(t_prev, time.perf_counter(), t_start, cpu_prev)

    def result(self) -> dict[str, Any]:
        sink = self.sink
        assert sink is not None
        sent = int(self.published.get("sent", len(sink.send_times)))
        totals = {
            "sent": sent,
            "predicted": sink.predicted,
            "dead_letters": sink.dead_letters,
            "missing": max(0, sent - sink.predicted - sink.dead_letters),
            "duplicates": sink.duplicates,
            "non_finite": sink.non_finite,
            "foreign": sink.foreign,
        }
        rss = _rss_growth(self.samples, self.cfg.warmup_minutes * 60.0)
        return {
            "samples": [asdict(s) for s in self.samples],
            "totals": totals,
            "rss": rss,
            "publisher": self.published,
            "worker_metrics": self.bed.worker_metrics(),
            "server_slow_consumers": self.bed.server_slow_consumers(),
            "failures": _verdict(totals, rss, self.cfg.max_growth, self.worker_exit),
        }

    def stop(self) -> None:
        from spark_ml.scripts.harness.measure import stop_bed

        try:
            if self.publisher is not None:
                self.publisher.stop()
            if self.sink is not None:
                self.sink.close()
        finally:
            stop_bed(self.bed)


def run(cfg: SoakConfig, *, log: Any, keep: bool = False) -> dict[str, Any]:
    """Run one soak and return its result (``interrupted`` is set when Ctrl-C or SIGTERM cut it short)."""
    from spark_ml.scripts.harness.report import machine_info

    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {**asdict(cfg), "count": cfg.count},
        "machine": machine_info(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "interrupted": False,
    }
    workdir = Path(tempfile.mkdtemp(prefix="spark-ml-soak-"))
    soak = _Run(cfg, workdir, log)
    try:
        soak.start()
        try:
            soak.loop()
        except KeyboardInterrupt:
            result["interrupted"] = True
            log("interrupted: stopping")
        result.update(soak.result())
        if result["interrupted"]:
            result["failures"].insert(0, "interrupted")
    finally:
        soak.stop()
        if keep:
            result["workdir"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


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
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [PUBLISHER_ROLE]:
        return _publisher(argv[1:])
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
