"""The soak behind ``spark-ml soak``: a bed, the live publisher, an in-process collector that samples
every interval, the verdict and the result files (``soak-<stamp>.json``/``.md`` and ``latest.*``).

The command's own docstring (``scripts/soak.py``) says what is measured and when a soak fails.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import msgpack

from spark_ml.scripts.harness.wire import RawNats

__all__ = ["Sample", "SoakConfig", "render", "run", "write"]

PREDICTION_SUBJECT = "ml.prediction"
DLQ_SUBJECT = "ml.dlq.snapshot"
_MIN_SLEEP = 0.001
"""Shortest pause of the paced publisher: at 2000/s it sends about two snapshots per wake-up."""
_DIGEST_EVERY_S = 0.5
_DRAIN_IDLE_S = 3.0
_DRAIN_MAX_S = 60.0


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
        argv = [sys.executable, "-m", "spark_ml.scripts.harness.publisher", "--url", self.bed.url, "--live"]
        argv += ["--rate", str(cfg.rate), "--min-sleep", str(_MIN_SLEEP), "--timeout", str(cfg.count / cfg.rate + 600)]
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
