"""Failover time: from the SIGKILL of one of several partitioned workers to the first prediction of a moved partition.

One trial: a nats-server with JetStream and the partition mapping, ``workers`` ``spark-ml worker`` processes
(each started on its own, so one can be killed alone), a sink on the predictions and a paced publisher
(``rate`` snapshots per second over ``symbols`` symbols on ``market.snapshot.<SYMBOL>``). Once every worker
owns its share (``ml_partitions_owned`` of each worker, when exported) and every symbol has been predicted,
the publisher runs ``before_s`` seconds, worker 0 is SIGKILLed, and the load goes on until its partitions
had time to move (member TTL + pin TTL + a margin).

The sink's arrivals say which partitions moved, without asking the workers: at the offered rate every
symbol is predicted every few milliseconds, so a partition (the symbols :func:`partition_of` puts in it) whose
predictions stop for longer than :data:`GAP_S` around the kill was the dead worker's. Its failover time is
the first arrival after that gap minus the moment of the kill (both ``time.perf_counter()``, CLOCK_MONOTONIC,
comparable across processes). A partition that never comes back counts as not resumed. In core mode the
snapshots published during the gap are lost (at-most-once, as documented); in JetStream mode they are
predicted after the takeover, and replayed predictions (same sequence) count once.

The trial runs with the default settings first; when its slowest partition misses :data:`GOAL_S`, again with
the smaller TTLs of :data:`FAST`, so the report says which settings meet the goal.
"""

from __future__ import annotations

import os
import signal
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spark_ml.core.partition import partition_of, server_mappings, units
from spark_ml.scripts.harness.payloads import PREDICTION_SUBJECT, seq_of, snapshot, snapshot_subject, symbol_of
from spark_ml.scripts.harness.procs import Child
from spark_ml.scripts.harness.scenarios import Context, Scenario, child_env
from spark_ml.scripts.harness.wire import RawNats, pub_frame
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.settings import Settings

__all__ = ["DEFAULTS", "FAST", "GAP_S", "GOAL_S", "TRIALS", "FailoverConfig", "run_failover"]

GOAL_S = 5.0
"""Issue 15's goal for the kill -> first prediction of a moved partition, with the default settings."""
GAP_S = 0.5
"""A partition whose predictions pause longer than this around the kill moved (its normal gap is milliseconds)."""
_FIELDS = Settings.model_fields
DEFAULTS = {
    "SPARK_ML_MEMBER_TTL_S": float(_FIELDS["member_ttl_s"].default),
    "SPARK_ML_PIN_TTL_S": float(_FIELDS["pin_ttl_s"].default),
}
"""The settings' defaults (read from worker/settings.py), for the report and the length of a trial."""
FAST = {name: value / 2 for name, value in DEFAULTS.items()}
"""The smaller TTLs tried when the defaults miss the goal: half of each."""


@dataclass(frozen=True)
class FailoverConfig:
    """Knobs of the failover trials."""

    workers: int = 3
    rate: float = 2_000.0
    """Snapshots per second, over ``symbols`` symbols."""
    symbols: int = 16
    partitions: int = 16
    before_s: float = 4.0
    """Steady load before the kill."""
    margin_s: float = 6.0
    """Load after the kill beyond member TTL + pin TTL (the longest a takeover should take)."""
    ready_timeout: float = 60.0
    settle_timeout: float = 30.0
    """Bound on waiting for every worker to own its share before the kill."""


def _owned(url: str) -> float | None:
    """``ml_partitions_owned`` of one worker, or None when it does not export it (or did not answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("ml_partitions_owned"):
            return float(line.rsplit(" ", 1)[1])
    return None


class _Trial:
    """One trial: server, workers, sink and publisher, the kill, the arrivals read back."""

    def __init__(
        self, sc: Scenario, cfg: FailoverConfig, settings: dict[str, float], workdir: Path, log: Callable[[str], None]
    ) -> None:
        self.sc, self.cfg, self.settings, self.workdir, self.log = sc, cfg, settings, workdir, log
        self.server: NatsServer | None = None
        self.workers: list[Child] = []
        self.metrics: list[str] = []
        self.ts0 = int(time.time() * 1000)
        self.next_seq = 0

    def run(self) -> dict[str, Any]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
            settled = self._settle()
            return self._measure() | {"ownership_confirmed": settled}
        finally:
            for w in self.workers:
                w.stop()
            if self.server is not None:
                self.server.cleanup()

    def _start(self) -> None:
        mappings = server_mappings(self.cfg.partitions)
        self.server = NatsServer(jetstream=True, store_dir=self.workdir / "nats", mappings=mappings).start()
        extra = {k: f"{v:g}" for k, v in self.settings.items()} | {"SPARK_ML_PARTITIONS": str(self.cfg.partitions)}
        for i in range(self.cfg.workers):
            target = self.sc.build(Context(nats_url=self.server.url, workdir=self.workdir / f"w{i}"))
            env = child_env(target) | extra
            self.workers.append(Child(f"worker{i}", target.argv, self.workdir / f"worker{i}.log", env=env))
            self.metrics.append(target.metrics_url)

    def _settle(self) -> bool:
        """Every symbol predicted, and (when the workers export it) every unit owned, each worker its share."""
        assert self.server is not None
        conn = RawNats(self.server.url)
        deadline = time.perf_counter() + self.cfg.ready_timeout
        try:
            conn.subscribe(PREDICTION_SUBJECT)
            conn.ping()
            seen: set[str] = set()
            while len(seen) < self.cfg.symbols:
                self._check_alive()
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"symbols never predicted: {sorted(set(self._symbols()) - seen)}")
                seq0 = self._take(self.cfg.symbols)
                conn.send(b"".join(self._frame(s) for s in range(seq0, seq0 + self.cfg.symbols)))
                conn.poll(0.25)
                seen |= {symbol_of(int(s), self.cfg.symbols) for s in self._seqs(conn.payloads)}
        finally:
            conn.close()
        want, t0 = units(self.cfg.partitions), time.perf_counter()
        # Without the gauge, the joins are given a member TTL and a bit to settle.
        blind = self.settings["SPARK_ML_MEMBER_TTL_S"] + 2.0
        while time.perf_counter() - t0 < self.cfg.settle_timeout:
            self._check_alive()
            counts = [_owned(url) for url in self.metrics]
            if None not in counts and sum(c or 0 for c in counts) > 0:
                held = [int(c or 0) for c in counts]
                if sum(held) == want and max(held) - min(held) <= 1:
                    self.log(f"  failover: units owned per worker {held}")
                    return True
            elif time.perf_counter() - t0 > blind:
                break
            time.sleep(0.25)
        self.log("  failover: ownership not confirmed from the workers' metrics; measuring anyway")
        return False

    def _symbols(self) -> list[str]:
        return [symbol_of(i, self.cfg.symbols) for i in range(self.cfg.symbols)]

    def _seqs(self, payloads: list[bytes]) -> list[int]:
        return [s for s in (seq_of(p, self.ts0) for p in payloads) if s >= 0]

    def _frame(self, seq: int) -> bytes:
        return pub_frame(snapshot_subject(seq, self.cfg.symbols), snapshot(self.ts0, seq, self.cfg.symbols))

    def _take(self, n: int) -> int:
        seq0, self.next_seq = self.next_seq, self.next_seq + n
        return seq0

    def _check_alive(self) -> None:
        for w in self.workers:
            if not w.alive():
                raise RuntimeError(f"{w.name} exited with {w.proc.returncode}; {w.tail()}")

    def _measure(self) -> dict[str, Any]:
        assert self.server is not None
        cfg = self.cfg
        ttl = self.settings["SPARK_ML_MEMBER_TTL_S"] + self.settings["SPARK_ML_PIN_TTL_S"]
        seconds = cfg.before_s + ttl + cfg.margin_s
        count = int(cfg.rate * seconds)
        seq0 = self._take(count)
        prefix = str(self.workdir / "failover")
        py = sys.executable
        common = ["--url", self.server.url, "--ts0", str(self.ts0), "--seq0", str(seq0)]
        sink = Child(
            "sink",
            [py, "-m", "spark_ml.scripts.harness.sink", *common, "--subject", PREDICTION_SUBJECT]
            + ["--count", str(count), "--out", prefix, "--idle", "2", "--grace", "15", "--timeout", str(seconds + 60)],
            Path(prefix + ".sink.log"),
            pipe=True,
        )
        try:
            if (line := sink.readline(30.0)) != "READY":
                raise RuntimeError(f"sink said {line!r}")
            pub = Child(
                "publisher",
                [py, "-m", "spark_ml.scripts.harness.publisher", *common, "--count", str(count)]
                + ["--symbols", str(cfg.symbols), "--rate", str(cfg.rate), "--times", prefix + ".send"]
                + ["--timeout", str(seconds + 30)],
                Path(prefix + ".pub.log"),
                pipe=True,
            )
            try:
                t_start = time.perf_counter()
                time.sleep(cfg.before_s)
                self._check_alive()
                victim = self.workers[0]
                t_kill = time.perf_counter()
                os.killpg(victim.pid, signal.SIGKILL)
                self.log(f"  failover: SIGKILL {victim.name} at {t_kill - t_start:.1f} s into the load")
                pub.readline(seconds + 60)
                pub.wait(10.0)
            finally:
                pub.stop()
            sink.tell("stop")
            sink.readline(60.0)
        finally:
            sink.stop()
        times = np.fromfile(prefix + ".t", dtype=np.float64)
        seqs = np.fromfile(prefix + ".seq", dtype=np.int64)
        out = _analyse(times, seqs, t_kill, cfg)
        out.update(sent=count, received=int(len(times)), lost=count - int(len(times)))
        out.update(settings=dict(self.settings), workers=cfg.workers, mode=self.sc.name)
        return out


def _analyse(
    times: np.ndarray[Any, Any], seqs: np.ndarray[Any, Any], t_kill: float, cfg: FailoverConfig
) -> dict[str, Any]:
    """Per partition with symbols: the longest pause around the kill; those over GAP_S moved."""
    part_of_sym = {i: partition_of(symbol_of(i, cfg.symbols), cfg.partitions) for i in range(cfg.symbols)}
    parts = np.array([part_of_sym[int(s) % cfg.symbols] for s in seqs], dtype=np.int64)
    order = np.argsort(times, kind="stable")
    times, parts = times[order], parts[order]
    per: dict[str, dict[str, float | None]] = {}
    for p in sorted(set(part_of_sym.values())):
        t = times[parts == p]
        before = t[t < t_kill]
        after = t[t >= t_kill]
        last = float(before[-1]) if len(before) else t_kill
        points = np.concatenate(([last], after))
        gaps = np.diff(points)
        if not len(after):
            per[str(p)] = {"gap_s": None, "failover_s": None}  # never came back
            continue
        i = int(np.argmax(gaps))
        per[str(p)] = {"gap_s": float(gaps[i]), "failover_s": float(points[i + 1] - t_kill)}
    moved = {p: v for p, v in per.items() if v["gap_s"] is None or (v["gap_s"] or 0.0) > GAP_S}
    resumed = [v["failover_s"] for v in moved.values() if v["failover_s"] is not None]
    return {
        "partitions_with_symbols": len(per),
        "moved": sorted(moved, key=int),
        "not_resumed": sorted((p for p, v in moved.items() if v["failover_s"] is None), key=int),
        "failover_s": {"p50": statistics.median(resumed), "max": max(resumed)} if resumed else None,
        "per_partition": per,
    }


TRIALS = (("default", DEFAULTS), ("smaller TTLs", FAST))


def run_failover(
    sc: Scenario,
    cfg: FailoverConfig,
    workdir: Path,
    log: Callable[[str], None] = print,
    trials_of: tuple[tuple[str, dict[str, float]], ...] = TRIALS,
) -> list[dict[str, Any]]:
    """The trials of one failover scenario: default settings, then :data:`FAST` when the defaults miss the goal.

    ``trials_of`` replaces that list (label, settings); the next trial runs only while the goal is missed.
    """
    trials: list[dict[str, Any]] = []
    for label, settings in trials_of:
        log(f"  failover {sc.name}: {label} settings {settings}")
        try:
            result = _Trial(sc, cfg, settings, workdir / label.replace(" ", "-"), log).run()
        except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
            trials.append({"label": label, "settings": dict(settings), "error": f"{type(exc).__name__}: {exc}"[:600]})
            break
        result["label"] = label
        trials.append(result)
        took = result.get("failover_s")
        if took is not None and took["max"] < GOAL_S and not result["not_resumed"]:
            break
    return trials
