"""The benchmark run: start every selected bed, then measure them interleaved.

Interleaving (run 1 of every target, then run 2 of every target, ...) matters on a shared machine:
a burst of someone else's load then hits all targets alike instead of one, so the ratio to the
ceiling measured in the same run stays meaningful even when the absolute figures move.

Order: start and probe every bed; one warm-up burst each (not reported in the medians, used to size
the throughput phases to about ``phase_seconds``); ``runs`` throughput phases each; one paced latency
phase per offered rate each (skipped, with the reason, when the target cannot sustain that rate);
resident memory at the end. Every process is stopped in ``finally``. The live analytics bed has no
throughput phases (its output is coalesced per symbol by design): a short paced warm-up, then its own
paced phases (``analytics_phases``: a slow one, 1k/s and 10k/s), measured as :mod:`.pnl` defines. The analytics
API bed (``analytics-api``) runs ``api_phases``: the same paced snapshots with 0, 1 and 64 callers asking
``analytics.get`` meanwhile (the 0 row is its reference: the updates' latency without queries, same run).
Each partitioned scenario is set beside its unpartitioned reference of the same run (:data:`PAIRS`). The
failover scenarios start their own servers and workers last, one trial at a time (:mod:`.failover`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spark_ml.scripts.harness.failover import FailoverConfig, run_failover
from spark_ml.scripts.harness.measure import Bed, PhaseResult, Sequencer, stop_bed
from spark_ml.scripts.harness.models import model_costs
from spark_ml.scripts.harness.payloads import snapshot
from spark_ml.scripts.harness.report import machine_info
from spark_ml.scripts.harness.scenarios import SCENARIOS, Context, Unavailable

__all__ = ["BenchConfig", "run"]

CEILING = "ceiling"
RR_CEILING = "rr-ceiling"
PAIRS = (
    ("worker", "worker-solo"),
    ("worker-2p", "worker-2p-solo"),
    ("worker-js", "worker-js-solo"),
    ("worker-js-2p", "worker-js-2p-solo"),
    ("rr", "rr-solo"),
)
"""(partitioned, its unpartitioned reference): what partitioning costs, from the same run."""


@dataclass(frozen=True)
class BenchConfig:
    """Knobs of one benchmark run (``spark-ml bench`` fills it from its flags)."""

    scenarios: tuple[str, ...]
    """Names of the subjects under test (``scenarios.SCENARIOS``), in the order they start."""
    quick: bool = False
    """The short preset (:meth:`preset`); recorded as the run's mode."""
    runs: int = 3
    """Throughput phases per target; the report gives their median, min and max."""
    max_count: int = 200_000
    """Upper bound on snapshots per throughput phase."""
    min_count: int = 2_000
    """Lower bound on snapshots per throughput phase."""
    phase_seconds: float = 2.5
    """Target length of a throughput phase; its count comes from the warm-up's rate."""
    warmup_count: int = 5_000
    """Snapshots of each target's warm-up burst (not reported; it sizes the throughput phases)."""
    rates: tuple[float, ...] = (1_000.0, 10_000.0)
    """Offered rates of the paced latency phases, snapshots per second."""
    rate_seconds: tuple[float, ...] = (10.0, 5.0)
    """How long each latency phase lasts (samples = rate x seconds)."""
    analytics_phases: tuple[tuple[float, float], ...] = ((8.0, 4.0), (1_000.0, 6.0), (10_000.0, 4.0))
    """The analytics bed's paced phases, (snapshots per second, seconds). The slow one gives each of the 16
    symbols a snapshot every 2 s, longer than the 1 s heartbeat: its max gap tests "at least once per second
    while data flows"; at the fast ones it is the coalescing gap (about 50 ms)."""
    api_phases: tuple[tuple[float, float, int], ...] = ((1_000.0, 5.0, 0), (1_000.0, 5.0, 1), (1_000.0, 5.0, 64))
    """The analytics API bed's phases, (snapshots per second, seconds, callers asking ``analytics.get``)."""
    symbols: int = 16
    """Symbols the snapshots are spread over."""
    rr_sequential: int = 3_000
    """Requests per one-caller phase (its latency percentiles come from these)."""
    rr_inflight: int = 64
    """Requests outstanding in the in-flight request-reply phases."""
    ready_timeout: float = 60.0
    """Bound on a bed's start-up probe, seconds."""
    sink_idle_s: float = 2.0
    """A phase ends this long after the last prediction when some are missing (loss)."""
    sink_grace_s: float = 30.0
    """Longest a sink waits after the publisher is done, seconds."""
    model_costs: bool = False
    """Also time one model call per row in-process (baseline, logistic, LightGBM, XGBoost at batch 1 and 256)."""
    keep: bool = False
    """Keep the scratch directory (logs of every process, the phases' raw files) and report its path."""

    @classmethod
    def preset(cls, scenarios: tuple[str, ...], *, quick: bool, runs: int = 3, keep: bool = False) -> BenchConfig:
        if quick:
            return cls(
                scenarios, quick=True, runs=runs, max_count=50_000, phase_seconds=0.6,
                warmup_count=2_000, rate_seconds=(2.0, 1.0), ready_timeout=40.0, keep=keep, rr_sequential=500,
                analytics_phases=((8.0, 3.0), (1_000.0, 2.0), (10_000.0, 1.0)),
                api_phases=((1_000.0, 2.0, 0), (1_000.0, 2.0, 1), (1_000.0, 2.0, 64)),
                model_costs=_has_tree(scenarios),
            )  # fmt: skip
        return cls(scenarios, runs=runs, keep=keep, model_costs=_has_tree(scenarios))


def _has_tree(scenarios: tuple[str, ...]) -> bool:
    """A tree model's worker is measured: its model's cost per row goes beside it."""
    return bool({"worker-tree", "worker-xgb"} & set(scenarios))


def _summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@dataclass
class _Entry:
    bed: Bed
    warmup: PhaseResult | None = None
    runs: list[PhaseResult] = field(default_factory=list)
    latency: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    rss: tuple[int, int] | None = None
    sequential: list[PhaseResult] = field(default_factory=list)
    """Request-reply only: the one-caller phases (``runs`` holds the in-flight ones)."""
    analytics_warmup: dict[str, Any] | None = None
    server_slow_consumers: int = 0
    own_metrics: dict[str, float] = field(default_factory=dict)

    def fail(self, exc: BaseException) -> None:
        self.status, self.reason = "error", f"{type(exc).__name__}: {exc}"[:600]

    @property
    def usable(self) -> bool:
        return self.status == "ok" and self.bed.child is not None and self.bed.child.alive()


def _guard(entry: _Entry, step: Callable[[], None]) -> None:
    """Run one step of one bed; a failure marks that bed and the benchmark goes on with the others."""
    if not entry.usable:
        if entry.status == "ok":
            child = entry.bed.child
            entry.status = "error"
            entry.reason = f"process exited ({child.tail() if child else 'not started'})"
        return
    try:
        step()
    except (TimeoutError, RuntimeError, OSError, ValueError) as exc:
        entry.fail(exc)


def _size(cfg: BenchConfig, warm: PhaseResult | None) -> int:
    rate = warm.throughput if warm and warm.throughput else 5_000.0
    return max(cfg.min_count, min(cfg.max_count, int(rate * cfg.phase_seconds)))


def _skipped(name: str, reason: str) -> dict[str, Any]:
    sc = SCENARIOS[name]
    return {"name": name, "title": sc.title, "kind": sc.kind, "status": "skipped", "reason": reason}


class _Run:
    """The steps of one benchmark run over its beds."""

    def __init__(self, cfg: BenchConfig, tmp: Path, log: Callable[[str], None]) -> None:
        self.cfg, self.tmp, self.log = cfg, tmp, log
        self.seq = Sequencer(int(time.time() * 1000), cfg.symbols)
        self.entries: list[_Entry] = []
        self.skipped: list[dict[str, Any]] = []
        self.failover: list[dict[str, Any]] = []
        self._failover_names: list[str] = []

    def start(self, name: str) -> None:
        sc = SCENARIOS[name]
        if sc.kind == "failover":
            self._failover_names.append(name)  # its own processes, measured last: see failovers()
            return
        if sc.kind not in ("stream", "request", "http", "analytics", "analytics-api"):
            # Placeholders raise Unavailable from build(); calling it gives the reason to report.
            try:
                sc.build(Context(nats_url="nats://127.0.0.1:4222", workdir=self.tmp / name))
                self.skipped.append(_skipped(name, f"{sc.kind} measurement not written yet"))
            except Unavailable as exc:
                self.skipped.append(_skipped(name, str(exc)))
            return
        bed = Bed(sc, self.seq, self.tmp / name, ready_timeout=self.cfg.ready_timeout)
        entry = _Entry(bed)
        self.log(f"starting {name} ...")
        try:
            bed.start()
            self.entries.append(entry)
            self.log(f"  {name} ready in {bed.startup_s:.1f} s")
        except Unavailable as exc:
            stop_bed(bed)
            self.skipped.append(_skipped(name, str(exc)))
            self.log(f"  {name} skipped: {exc}")
        except (TimeoutError, RuntimeError, OSError) as exc:
            stop_bed(bed)
            entry.fail(exc)
            self.entries.append(entry)
            self.log(f"  {name} failed to start: {exc}")

    def _phase(self, e: _Entry, count: int, rate: float | None) -> PhaseResult:
        if e.bed.scenario.kind != "stream":
            return e.bed.request_phase(count, self.cfg.rr_inflight)
        return e.bed.phase(count, rate, idle=self.cfg.sink_idle_s, grace=self.cfg.sink_grace_s)

    def warm_up(self) -> None:
        for e in self.entries:

            def warm(e: _Entry = e) -> None:
                if e.bed.scenario.kind in ("analytics", "analytics-api"):
                    rate = max(r for r, _ in self.cfg.analytics_phases)  # half a second at most
                    e.analytics_warmup = self._pnl_phase(e, min(self.cfg.warmup_count, int(rate / 2)), rate)
                    return
                e.warmup = self._phase(e, self.cfg.warmup_count, None)

            _guard(e, warm)

    def _pnl_phase(self, e: _Entry, count: int, rate: float) -> dict[str, Any]:
        return e.bed.analytics_phase(count, rate, idle=self.cfg.sink_idle_s, grace=self.cfg.sink_grace_s)

    def throughput(self) -> None:
        for i in range(self.cfg.runs):
            for e in self.entries:
                if e.bed.scenario.kind in ("analytics", "analytics-api"):
                    continue

                def one(e: _Entry = e) -> None:
                    if e.bed.scenario.kind != "stream":
                        e.sequential.append(e.bed.request_phase(self.cfg.rr_sequential, 1))
                    r = self._phase(e, _size(self.cfg, e.warmup), None)
                    e.runs.append(r)
                    name = e.bed.scenario.name
                    self.log(f"  {name} run {len(e.runs)}: {r.throughput or 0:,.0f} msgs/s, lost {r.lost}")

                _guard(e, one)
            self.log(f"throughput run {i + 1}/{self.cfg.runs} done")

    def latency(self) -> None:
        for rate, seconds in zip(self.cfg.rates, self.cfg.rate_seconds, strict=True):
            key = str(int(rate))
            for e in self.entries:
                if e.bed.scenario.kind != "stream":
                    continue
                best = max((r.throughput or 0.0 for r in e.runs), default=0.0)
                if e.usable and best < 1.2 * rate:
                    e.latency[key] = {"skipped": f"cannot sustain {rate:,.0f}/s (max {best:,.0f}/s)"}
                    continue

                def lat(e: _Entry = e, rate: float = rate, seconds: float = seconds, key: str = key) -> None:
                    e.latency[key] = self._phase(e, int(rate * seconds), rate).as_dict()

                _guard(e, lat)
            self.log(f"latency at {rate:,.0f}/s done")
        for e in self.entries:
            if e.bed.scenario.kind != "analytics":
                continue
            for rate, seconds in self.cfg.analytics_phases:

                def pnl(e: _Entry = e, rate: float = rate, seconds: float = seconds) -> None:
                    e.latency[str(int(rate))] = self._pnl_phase(e, max(1, int(rate * seconds)), rate)

                _guard(e, pnl)
                self.log(f"analytics at {rate:,.0f}/s done")
        self.api()

    def api(self) -> None:
        """The analytics API bed: its paced phases with 0, 1 and 64 callers asking ``analytics.get``."""
        for e in self.entries:
            if e.bed.scenario.kind != "analytics-api":
                continue
            for rate, seconds, callers in self.cfg.api_phases:

                def api(e: _Entry = e, rate: float = rate, seconds: float = seconds, callers: int = callers) -> None:
                    phase = e.bed.analytics_phase(
                        max(1, int(rate * seconds)), rate, idle=self.cfg.sink_idle_s, grace=self.cfg.sink_grace_s,
                        queries=callers,
                    )  # fmt: skip
                    phase["callers"] = callers
                    e.latency[f"{callers}"] = phase

                _guard(e, api)
                self.log(f"analytics API with {callers} callers at {rate:,.0f}/s done")

    def failovers(self) -> None:
        """The failover scenarios, one after the other, once the other beds are measured (they only idle now)."""
        cfg = FailoverConfig(before_s=3.0 if self.cfg.quick else 5.0, ready_timeout=self.cfg.ready_timeout)
        for name in self._failover_names:
            sc = SCENARIOS[name]
            self.log(f"failover {name} ...")
            entry: dict[str, Any] = {"name": name, "title": sc.title, "kind": sc.kind, "status": "ok"}
            try:
                entry["trials"] = run_failover(sc, cfg, self.tmp / name, self.log)
            except Unavailable as exc:
                self.skipped.append(_skipped(name, str(exc)))
                continue
            errors = [t["error"] for t in entry["trials"] if "error" in t]
            if errors:
                entry.update(status="error", error=errors[0])
            self.failover.append(entry)

    def memory_and_counters(self) -> None:
        for e in self.entries:
            if e.bed.child is not None and e.bed.child.alive() and e.bed.target and e.bed.target.measure_process:
                e.rss = e.bed.rss()
                e.own_metrics = e.bed.worker_metrics()
            e.server_slow_consumers = e.bed.server_slow_consumers()


def run(cfg: BenchConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark and return its results (``report.render`` turns them into the table)."""
    started = datetime.now(UTC).astimezone()
    t_start = time.perf_counter()
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="spark-ml-bench-"))
    r = _Run(cfg, tmp, log)
    model_cost: dict[str, Any] | None = None
    try:
        for name in cfg.scenarios:
            r.start(name)
        r.warm_up()
        r.throughput()
        r.latency()
        r.memory_and_counters()
        r.failovers()
        if cfg.model_costs:
            log("model cost per row ...")
            model_cost = model_costs(quick=cfg.quick)
    finally:
        for e in r.entries:
            stop_bed(e.bed)
        if not cfg.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    results = _assemble(cfg, r.entries, r.skipped + r.failover, machine)
    results["model_cost_us_per_row"] = model_cost
    results["workdir"] = str(tmp) if cfg.keep else None
    results["started"] = started.isoformat(timespec="seconds")
    results["duration_s"] = time.perf_counter() - t_start
    results["machine"]["loadavg_end"] = os.getloadavg()
    return results


def _sequential(phases: list[PhaseResult]) -> dict[str, Any]:
    """One caller: rate summary, and the median over runs of each latency percentile."""
    out: dict[str, Any] = dict(_summary([p.throughput for p in phases if p.throughput is not None]))
    lats = [p.latency_us for p in phases if p.latency_us]
    out["latency_us"] = {k: statistics.median(x[k] for x in lats) for k in ("p50", "p99", "p99.9")} if lats else None
    out["errors"] = sum(p.errors for p in phases)
    out["lost"] = sum(p.lost for p in phases)
    out["runs"] = [p.as_dict() for p in phases]
    return out


def _assemble(
    cfg: BenchConfig, entries: list[_Entry], skipped: list[dict[str, Any]], machine: dict[str, Any]
) -> dict[str, Any]:
    scenarios: list[dict[str, Any]] = []
    medians: dict[str, float | None] = {}
    for e in entries:
        sc = e.bed.scenario
        tps = [r.throughput for r in e.runs if r.throughput is not None]
        cpus = [r.cpu_us_per_msg for r in e.runs if r.cpu_us_per_msg is not None]
        tp: dict[str, Any] = dict(_summary(tps))
        tp["cpu_us_per_msg"] = statistics.median(cpus) if cpus else None
        tp["lost"] = sum(r.lost for r in e.runs)
        tp["sent"] = sum(r.sent for r in e.runs)
        tp["runs"] = [r.as_dict() for r in e.runs]
        tp["errors"] = sum(r.errors for r in e.runs)
        medians[sc.name] = tp["median"]
        scenarios.append(
            {
                "name": sc.name,
                "title": sc.title,
                "kind": sc.kind,
                "status": e.status,
                "error": e.reason if e.status != "ok" else None,
                "note": e.bed.target.note if e.bed.target else "",
                "startup_s": e.bed.startup_s,
                "warmup": e.warmup.as_dict() if e.warmup else e.analytics_warmup,
                "throughput": tp if e.runs else None,
                "latency": e.latency,
                "rss_mb": e.rss[0] / 2**20 if e.rss else None,
                "sequential": _sequential(e.sequential) if e.sequential else None,
                "late": sum(r.late for r in e.runs) + sum(int(v.get("late", 0)) for v in e.latency.values()),
                "server_slow_consumers": e.server_slow_consumers,
                "own_metrics": e.own_metrics,
                "processes": e.rss[1] if e.rss else None,
            }
        )
    for s in scenarios:
        ceiling = medians.get(CEILING if s["kind"] == "stream" else RR_CEILING)
        if s["throughput"] and ceiling and s["throughput"]["median"] is not None:
            s["throughput"]["ratio_to_ceiling"] = s["throughput"]["median"] / ceiling
    ceiling = medians.get(CEILING)
    summary: dict[str, float | None] = {}
    worker, peer = medians.get("worker"), medians.get("faststream")
    if worker and peer:
        summary["spark-ml worker / FastStream"] = worker / peer
    if worker and ceiling:
        summary["spark-ml worker / ceiling"] = worker / ceiling
    config = asdict(cfg)
    by_name = {s["name"]: s for s in scenarios}
    costs = [c for a, b in PAIRS if (c := _cost(by_name.get(a), by_name.get(b))) is not None]
    config["payload_bytes"] = len(snapshot(int(time.time() * 1000), 0, cfg.symbols))
    return {
        "mode": "quick" if cfg.quick else "full",
        "config": config,
        "machine": machine,
        "scenarios": scenarios + skipped,
        "summary": summary,
        "partitioning": costs,
    }


def _cost(part: dict[str, Any] | None, ref: dict[str, Any] | None) -> dict[str, Any] | None:
    """A partitioned scenario against its unpartitioned reference: throughput and CPU per message, and ratios."""
    if not part or not ref or not part.get("throughput") or not ref.get("throughput"):
        return None
    tp, rtp = part["throughput"], ref["throughput"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {
        "scenario": part["name"],
        "reference": ref["name"],
        "throughput": tp["median"],
        "reference_throughput": rtp["median"],
        "throughput_ratio": ratio(tp["median"], rtp["median"]),
        "cpu_us_per_msg": tp["cpu_us_per_msg"],
        "reference_cpu_us_per_msg": rtp["cpu_us_per_msg"],
        "cpu_ratio": ratio(tp["cpu_us_per_msg"], rtp["cpu_us_per_msg"]),
    }
