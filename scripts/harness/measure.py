"""One bed per subject under test (its own nats-server and process), and the phases run against it.

A phase is: start a sink and wait for its READY, read the bed's CPU time, start a publisher, wait for it,
tell the sink to finish, read the CPU time again, then compute from the sink's and publisher's files.
Every wait has a bound and every process is stopped in a ``finally`` block.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spark_ml.scripts.harness.caller import PREDICT_SUBJECT, request_body, request_frame
from spark_ml.scripts.harness.payloads import snapshot, snapshot_subject
from spark_ml.scripts.harness.pnl import PnlUpdates
from spark_ml.scripts.harness.pnl import measure as measure_pnl
from spark_ml.scripts.harness.procs import Child, cpu_seconds, rss_bytes
from spark_ml.scripts.harness.scenarios import Context, Scenario, Target, child_env
from spark_ml.scripts.harness.wire import RawNats, pub_frame
from spark_ml.worker.natsserver import NatsServer

__all__ = ["Bed", "PhaseResult", "Sequencer", "stop_bed"]

PERCENTILES = (50.0, 99.0, 99.9)
_REPORTED_METRICS = ("ml_slow_consumer_drops_total", "ml_predict_requests_total", "ml_model_errors_total")


class Sequencer:
    """Hands out ranges of sequence numbers; ``ts = ts0 + seq`` is unique over the whole benchmark.

    Args:
        ts0: epoch milliseconds of the first snapshot.
        symbols: how many symbols the snapshots are spread over.
    """

    def __init__(self, ts0: int, symbols: int) -> None:
        self.ts0 = ts0
        self.symbols = symbols
        self._next = 0

    def take(self, count: int) -> int:
        seq0, self._next = self._next, self._next + count
        return seq0


@dataclass
class PhaseResult:
    """What one phase measured. Times in seconds, latencies in microseconds."""

    sent: int
    received: int
    lost: int
    duplicates: int
    offered_rate: float | None
    """Paced rate asked of the publisher; None when it pushed as fast as it could."""
    publisher_rate: float | None
    throughput: float | None
    """Predictions per second: n / (last arrival at the sink - first snapshot sent by the publisher).

    Not (n - 1) / (last arrival - first arrival): a target that works through its backlog without
    letting its output out (a plain nats-py callback does, FastStream too) delivers a first burst late,
    and the sink's own span then leaves out the time that burst took, overstating its rate (measured:
    FastStream 12.8k by the sink's span against about 7k from the first send)."""
    cpu_us_per_msg: float | None
    latency_us: dict[str, float] | None = None
    stop: str = ""
    late: int = 0
    """Messages that answered an earlier phase (or a start-up probe) and arrived during this one."""
    errors: int = 0
    """Request-reply: error replies (no ``ts`` to match)."""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Bed:
    """A subject under test, running on its own nats-server.

    Args:
        scenario: what runs.
        sequencer: shared source of sequence numbers.
        workdir: scratch directory for logs and the phases' files.
        ready_timeout: bound on the start-up probe.
    """

    scenario: Scenario
    sequencer: Sequencer
    workdir: Path
    ready_timeout: float = 60.0
    server: NatsServer | None = None
    child: Child | None = None
    target: Target | None = None
    startup_s: float | None = None
    error: str | None = None
    phases: int = field(default=0)
    during_report: dict[str, Any] = field(default_factory=dict)
    """The report of the last phase's side process (the analytics API callers), empty without one."""

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> None:
        """Start the server and the process, then probe until the first prediction comes back."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server = NatsServer(
            jetstream=self.scenario.jetstream, store_dir=self.workdir / "nats", mappings=self.scenario.mappings()
        ).start()
        self.target = self.scenario.build(Context(nats_url=self.url, workdir=self.workdir))
        t0 = time.perf_counter()
        self.child = Child(
            self.scenario.name, self.target.argv, self.workdir / "target.log", env=child_env(self.target)
        )
        self._probe()
        self.startup_s = time.perf_counter() - t0

    def _probe(self) -> None:
        assert self.child is not None
        conn = RawNats(self.url)
        try:
            request = self.scenario.kind in ("request", "http")
            conn.subscribe("_INBOX.benchprobe.*" if request else self.target.sink_subject if self.target else "")
            conn.ping()
            deadline = time.perf_counter() + self.ready_timeout
            while not conn.payloads:
                if not self.child.alive():
                    raise RuntimeError(
                        f"{self.scenario.name} exited with {self.child.proc.returncode}; {self.child.tail()}"
                    )
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"{self.scenario.name}: no prediction within {self.ready_timeout:.0f}s")
                seq = self.sequencer.take(1)
                if request:
                    body = request_body(self.sequencer.ts0, seq, self.sequencer.symbols)
                    conn.send(request_frame(PREDICT_SUBJECT, f"_INBOX.benchprobe.{seq}", body))
                else:
                    symbols = self.sequencer.symbols
                    conn.send(pub_frame(snapshot_subject(seq, symbols), snapshot(self.sequencer.ts0, seq, symbols)))
                conn.poll(0.25)
            conn.poll(0.2)  # let stray probe answers arrive now rather than during the first phase
        finally:
            conn.close()

    def server_slow_consumers(self) -> int:
        """How often the bed's nats-server cut a client off as a slow consumer (from its log)."""
        if self.server is None or not self.server.log_path.exists():
            return 0
        return self.server.log_path.read_text(errors="replace").count("Slow Consumer Detected")

    def worker_metrics(self) -> dict[str, float]:
        """The target's own counters worth reporting (``Target.metrics_url``); empty when it has none."""
        if self.target is None or not self.target.metrics_url:
            return {}
        try:
            with urllib.request.urlopen(self.target.metrics_url, timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in _REPORTED_METRICS:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        return out

    def rss(self) -> tuple[int, int]:
        assert self.child is not None
        return rss_bytes(self.child.pid)

    def phase(self, count: int, rate: float | None, *, idle: float = 1.0, grace: float = 30.0) -> PhaseResult:
        """Publish ``count`` snapshots (paced at ``rate`` per second when given) and measure the predictions."""
        assert self.child is not None
        self.phases += 1
        seq0 = self.sequencer.take(count)
        prefix = str(self.workdir / f"phase{self.phases}")
        py = sys.executable
        assert self.target is not None
        common = ["--url", self.url, "--ts0", str(self.sequencer.ts0), "--seq0", str(seq0)]
        pub_timeout = (count / rate if rate else 0.0) + 60.0
        sink = Child(
            "sink",
            [py, "-m", "spark_ml.scripts.harness.sink", *common, "--subject", self.target.sink_subject]
            + ["--count", str(count), "--out", prefix]
            + ["--idle", str(idle), "--grace", str(grace), "--timeout", str(pub_timeout + grace + 30)],
            Path(prefix + ".sink.log"),
            pipe=True,
        )
        pub_out, sink_out, cpu_s = self._drive(sink, common, count, rate, prefix, pub_timeout, idle + grace)
        cpu = cpu_s if self.target.measure_process else None
        return _result(prefix, seq0, rate, pub_out, sink_out, cpu)

    def _drive(
        self,
        sink: Child,
        common: list[str],
        count: int,
        rate: float | None,
        prefix: str,
        timeout: float,
        wait: float,
        during: Child | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any], float]:
        """Once ``sink`` (and ``during``, a process that says READY and starts on GO) is ready, publish the phase,
        then collect the reports (``during``'s in ``self.during_report``) and the target's CPU seconds."""
        assert self.child is not None
        try:
            if (line := sink.readline(30.0)) != "READY":
                raise RuntimeError(f"{sink.name} said {line!r}")
            if during is not None:
                if (line := during.readline(30.0)) != "READY":
                    raise RuntimeError(f"{during.name} said {line!r}")
                during.tell("GO")
            cpu0 = cpu_seconds(self.child.pid)
            pub_argv = [sys.executable, "-m", "spark_ml.scripts.harness.publisher", *common, "--count", str(count)]
            pub_argv += ["--symbols", str(self.sequencer.symbols), "--timeout", str(timeout)]
            pub_argv += list(self.target.publisher_args) if self.target is not None else []
            if rate:
                pub_argv += ["--rate", str(rate), "--times", prefix + ".send"]
            pub_out = _report(Child("publisher", pub_argv, Path(prefix + ".pub.log"), pipe=True), timeout + 30.0)
            if during is not None:
                self.during_report = _report(during, timeout + 30.0)
            sink.tell("stop")
            sink_out = json.loads(sink.readline(wait + 30.0))
            return pub_out, sink_out, cpu_seconds(self.child.pid) - cpu0
        finally:
            sink.stop()
            if during is not None:
                during.stop()

    def analytics_phase(
        self, count: int, rate: float, *, idle: float = 2.0, grace: float = 30.0, queries: int = 0
    ) -> dict[str, Any]:
        """Publish ``count`` snapshots at ``rate`` per second; measure the ``analytics.pnl`` updates they cause.

        The figures are those of :mod:`spark_ml.scripts.harness.pnl`; the machine's load average at the end of the
        phase goes with them (the latency of a coalescing consumer is sensitive to other load). With ``queries``
        > 0, that many callers ask ``analytics.get`` back to back while the snapshots go out
        (:mod:`spark_ml.scripts.harness.query_caller`); their figures are under ``"queries"``.
        """
        assert self.child is not None and self.target is not None
        self.phases += 1
        seq0 = self.sequencer.take(count)
        prefix = str(self.workdir / f"phase{self.phases}")
        py = sys.executable
        symbols = self.sequencer.symbols
        common = ["--url", self.url, "--ts0", str(self.sequencer.ts0), "--seq0", str(seq0)]
        pub_timeout = count / rate + 60.0
        sink = Child(
            "pnl-sink",
            [
                py,
                "-m",
                "spark_ml.scripts.harness.sink",
                "--pnl",
                *common,
                "--count",
                str(count),
                "--symbols",
                str(symbols),
            ]
            + ["--out", prefix, "--idle", str(idle), "--grace", str(grace), "--timeout", str(pub_timeout + grace + 30)],
            Path(prefix + ".sink.log"),
            pipe=True,
        )
        during = None
        if queries:
            argv = [py, "-m", "spark_ml.scripts.harness.query_caller", "--url", self.url, "--inflight", str(queries)]
            argv += ["--seconds", str(count / rate), "--symbols", str(symbols)]
            during = Child("query-caller", argv, Path(prefix + ".queries.log"), pipe=True)
        self.during_report = {}
        pub_out, sink_out, cpu_s = self._drive(sink, common, count, rate, prefix, pub_timeout, idle + grace, during)
        send = np.fromfile(prefix + ".send", dtype=np.float64)
        out = measure_pnl(send, seq0, symbols, PnlUpdates.load(prefix))
        if queries:
            out["queries"] = self.during_report
        out.update(
            offered_rate=rate,
            publisher_rate=pub_out.get("rate"),
            cpu_us_per_snapshot=cpu_s * 1e6 / len(send) if len(send) else None,
            stop=str(sink_out["stop"]),
            foreign=int(sink_out["foreign"]),
            loadavg=list(os.getloadavg()),
        )
        return out

    def request_phase(self, count: int, inflight: int) -> PhaseResult:
        """``count`` requests to ``ml.predict`` with ``inflight`` outstanding; throughput is replies per second."""
        assert self.child is not None and self.target is not None
        self.phases += 1
        seq0 = self.sequencer.take(count)
        prefix = str(self.workdir / f"phase{self.phases}")
        timeout = 60.0 + count / 500.0
        if self.scenario.kind == "http":
            argv = [sys.executable, "-m", "spark_ml.scripts.harness.http_caller", "--http", self.target.http_url]
        else:
            argv = [sys.executable, "-m", "spark_ml.scripts.harness.caller", "--url", self.url]
        argv += ["--ts0", str(self.sequencer.ts0)]
        argv += ["--seq0", str(seq0), "--count", str(count), "--symbols", str(self.sequencer.symbols)]
        argv += ["--inflight", str(inflight), "--out", prefix, "--timeout", str(timeout)]
        cpu0 = cpu_seconds(self.child.pid)
        out = _report(Child("caller", argv, Path(prefix + ".caller.log"), pipe=True), timeout + 30.0)
        cpu1 = cpu_seconds(self.child.pid)
        r = _result(prefix, seq0, None, out, {"duplicates": 0, "foreign": 0, "stop": ""}, cpu1 - cpu0, latency=True)
        r.throughput = out.get("rate")
        r.errors = int(out.get("errors", 0))
        return r


def _report(child: Child, timeout: float) -> dict[str, Any]:
    """The one JSON line a publisher or caller prints when it is done; the process is stopped either way."""
    try:
        out: dict[str, Any] = json.loads(child.readline(timeout))
        child.wait(10.0)
    finally:
        child.stop()
    return out


def _result(
    prefix: str,
    seq0: int,
    rate: float | None,
    pub: dict[str, Any],
    sink: dict[str, Any],
    cpu_s: float | None,
    *,
    latency: bool = False,
) -> PhaseResult:
    times = np.fromfile(prefix + ".t", dtype=np.float64)
    seqs = np.fromfile(prefix + ".seq", dtype=np.int64)
    n = len(times)
    span = float(times[-1] - times[0]) if n > 1 else 0.0
    lat_us = None
    if (rate or latency) and n:
        send = np.fromfile(prefix + ".send", dtype=np.float64)
        idx = seqs - seq0
        ok = idx < len(send)
        lat = (times[ok] - send[idx[ok]]) * 1e6
        if len(lat):
            qs = np.percentile(lat, PERCENTILES)
            lat_us = {"p50": float(qs[0]), "p99": float(qs[1]), "p99.9": float(qs[2]), "max": float(lat.max())}
            lat_us["samples"] = float(len(lat))
    sent = int(pub["sent"])
    return PhaseResult(
        sent=sent,
        received=n,
        lost=sent - n,
        duplicates=int(sink["duplicates"]),
        offered_rate=rate,
        publisher_rate=pub.get("rate"),
        throughput=_throughput(n, times, span, pub),
        cpu_us_per_msg=cpu_s * 1e6 / n if n and cpu_s is not None else None,
        latency_us=lat_us,
        stop=str(sink["stop"]),
        late=int(sink["foreign"]),
    )


def _throughput(n: int, times: NDArray[np.float64], span: float, pub: dict[str, Any]) -> float | None:
    t_first = pub.get("t_first")
    if n and isinstance(t_first, float) and times[-1] > t_first:
        return n / float(times[-1] - t_first)
    return (n - 1) / span if span > 0 else 0.0 if n < 2 else None


def stop_bed(bed: Bed) -> None:
    """Stop the process, then its server; never raises."""
    try:
        if bed.child is not None:
            bed.child.stop()
    finally:
        if bed.server is not None:
            bed.server.cleanup()
