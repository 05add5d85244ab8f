"""Machine facts and the result tables (plain text for the terminal, Markdown and JSON for the folder)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from spark_ml.worker.natsserver import find_nats_server

__all__ = ["machine_info", "render", "write"]

_COLUMNS = (
    "scenario",
    "msgs/s median (min-max)",
    "x ceiling",
    "lost",
    "CPU us/msg",
    "RSS MB",
    "@1k/s p50/p99/p99.9 ms",
    "@10k/s p50/p99/p99.9 ms",
)


_RR_COLUMNS = (
    "scenario",
    "1 caller req/s",
    "1 caller p50/p99/p99.9 ms",
    "64 in flight req/s median (min-max)",
    "x rr-ceiling",
    "errors",
    "lost",
    "CPU us/req",
    "RSS MB",
)


_PNL_COLUMNS = (
    "scenario",
    "offered/s",
    "snapshots",
    "snapshot -> PnL p50/p99/p99.9/max ms",
    "within 100 ms",
    "max gap ms",
    "updates/s",
    "missing",
    "CPU us/snapshot",
    "load 1m",
)
"""The live analytics table; the definitions are in :mod:`spark_ml.scripts.harness.pnl`."""


_API_COLUMNS = (
    "scenario",
    "callers",
    "analytics.get req/s",
    "analytics.get p50/p99/p99.9/max ms",
    "errors",
    "snapshot -> PnL p50/p99/max ms",
    "PnL within 100 ms",
    "missing",
    "load 1m",
)
"""The analytics API table: query latency with 1 and 64 callers, and the PnL updates' latency meanwhile."""


def _api_rows(sc: dict[str, Any]) -> list[list[str]]:
    if sc["status"] != "ok" and not sc.get("latency"):
        return [[sc["name"], f"{sc['status']} (see below)"] + [""] * (len(_API_COLUMNS) - 2)]
    rows = []
    for key, ph in sorted(sc.get("latency", {}).items(), key=lambda kv: int(kv[0])):
        if "sent" not in ph:
            rows.append([sc["name"], key, str(ph.get("skipped") or ph.get("error") or "no data")])
            rows[-1] += [""] * (len(_API_COLUMNS) - len(rows[-1]))
            continue
        q, lat, load = ph.get("queries") or {}, ph.get("latency_us"), ph.get("loadavg")
        qlat, rate = q.get("latency_ms"), q.get("rate")
        rows.append(
            [
                sc["name"],
                key if key != "0" else "0 (reference)",
                "-" if rate is None else f"{rate:,.0f}",
                " / ".join(f"{qlat[p]:.2f}" for p in ("p50", "p99", "p99.9", "max")) if qlat else "-",
                "-" if not q else str(int(q.get("errors", 0)) + int(q.get("failures", 0))),
                " / ".join(f"{lat[p] / 1000:.1f}" for p in ("p50", "p99", "max")) if lat else "-",
                _share(ph.get("within_target")),
                str(ph.get("missing", "-")),
                "-" if not load else f"{load[0]:.2f}",
            ]
        )
    return rows


_COST_COLUMNS = (
    "partitioned",
    "reference (unpartitioned)",
    "msgs/s: partitioned / reference",
    "ratio",
    "CPU us/msg: partitioned / reference",
    "ratio",
)
"""What partitioning costs, each figure beside its reference of the same run (goal: CPU ratio at most 1.10)."""

_FAILOVER_COLUMNS = (
    "scenario",
    "settings",
    "moved partitions",
    "kill -> first prediction p50 / max s",
    "< 5 s",
    "not resumed",
    "sent",
    "lost",
)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, load, Python and the versions of the pieces being measured."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        out = subprocess.run([find_nats_server(), "--version"], capture_output=True, text=True, timeout=10)
        server = out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        server = f"unknown ({exc})"
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "loadavg": os.getloadavg(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "nats_server": server,
        "nats_py": _version("nats-py"),
        "faststream": _version("faststream"),
        "msgpack": _version("msgpack"),
    }


def _k(x: float | None) -> str:
    return "-" if x is None else f"{x / 1000:.1f}k"


def _lat(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    if "skipped" in entry:
        return "n/a: " + str(entry["skipped"])
    if "error" in entry:
        return "error"
    lat = entry.get("latency_us")
    if not lat:
        return "no data"
    text = " / ".join(f"{lat[p] / 1000:.2f}" for p in ("p50", "p99", "p99.9"))
    return text + (f" (lost {entry['lost']})" if entry.get("lost") else "")


def _row(sc: dict[str, Any]) -> list[str]:
    name = sc["name"]
    if sc["status"] != "ok" and not sc.get("throughput"):
        return [name, f"{sc['status']} (see below)", "", "", "", "", "", ""]
    tp = sc.get("throughput") or {}
    tput = f"{_k(tp.get('median'))} ({_k(tp.get('min'))}-{_k(tp.get('max'))})" if tp.get("median") else "-"
    ratio = tp.get("ratio_to_ceiling")
    cpu = tp.get("cpu_us_per_msg")
    rss = sc.get("rss_mb")
    lat = sc.get("latency", {})
    return [
        name,
        tput,
        "-" if ratio is None else f"{ratio:.2f}",
        str(tp.get("lost", "-")),
        "-" if cpu is None else f"{cpu:.1f}",
        "-" if rss is None else f"{rss:.0f}",
        _lat(lat.get("1000")),
        _lat(lat.get("10000")),
    ]


def _rr_row(sc: dict[str, Any]) -> list[str]:
    if sc["status"] != "ok" and not sc.get("throughput"):
        return [sc["name"], f"{sc['status']} (see below)"] + [""] * (len(_RR_COLUMNS) - 2)
    tp = sc.get("throughput") or {}
    seq = sc.get("sequential") or {}
    lat = seq.get("latency_us")
    ratio, cpu, rss = tp.get("ratio_to_ceiling"), tp.get("cpu_us_per_msg"), sc.get("rss_mb")
    return [
        sc["name"],
        _k(seq.get("median")),
        " / ".join(f"{lat[p] / 1000:.2f}" for p in ("p50", "p99", "p99.9")) if lat else "-",
        f"{_k(tp.get('median'))} ({_k(tp.get('min'))}-{_k(tp.get('max'))})" if tp.get("median") else "-",
        "-" if ratio is None else f"{ratio:.2f}",
        str(tp.get("errors", 0) + seq.get("errors", 0)),
        str(tp.get("lost", 0) + seq.get("lost", 0)),
        "-" if cpu is None else f"{cpu:.1f}",
        "-" if rss is None else f"{rss:.0f}",
    ]


def _cost_row(c: dict[str, Any]) -> list[str]:
    def pair(a: float | None, b: float | None, fmt: str) -> str:
        return " / ".join("-" if x is None else format(x, fmt) for x in (a, b))

    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    return [
        c["scenario"],
        c["reference"],
        " / ".join(_k(x) for x in (c["throughput"], c["reference_throughput"])),
        ratio(c["throughput_ratio"]),
        pair(c["cpu_us_per_msg"], c["reference_cpu_us_per_msg"], ".1f"),
        ratio(c["cpu_ratio"]),
    ]


def _failover_rows(sc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in sc.get("trials", []):
        settings = ", ".join(f"{k.removeprefix('SPARK_ML_').lower()} {v:g}" for k, v in t["settings"].items())
        label = f"{t.get('label', '')}: {settings}"
        if "error" in t:
            rows.append([sc["name"], label, "error (see below)"] + [""] * (len(_FAILOVER_COLUMNS) - 3))
            continue
        took = t.get("failover_s")
        ok = took is not None and took["max"] < 5.0 and not t["not_resumed"]
        rows.append(
            [
                sc["name"],
                label,
                f"{len(t['moved'])} of {t['partitions_with_symbols']}",
                "-" if took is None else f"{took['p50']:.2f} / {took['max']:.2f}",
                "yes" if ok else "no",
                str(len(t["not_resumed"])),
                str(t["sent"]),
                str(t["lost"]),
            ]
        )
    return rows


def _share(x: float | None) -> str:
    """A fraction as a percentage, rounded down: 99.996% must not read as 100%."""
    if x is None:
        return "-"
    return "100%" if x >= 1.0 else f"{math.floor(x * 10_000) / 100:.2f}%"


def _pnl_rows(sc: dict[str, Any]) -> list[list[str]]:
    if sc["status"] != "ok" and not sc.get("latency"):
        return [[sc["name"], f"{sc['status']} (see below)"] + [""] * (len(_PNL_COLUMNS) - 2)]
    rows = []
    for key, ph in sorted(sc.get("latency", {}).items(), key=lambda kv: float(kv[0])):
        if "sent" not in ph:
            rows.append([sc["name"], key, str(ph.get("skipped") or ph.get("error") or "no data")])
            rows[-1] += [""] * (len(_PNL_COLUMNS) - len(rows[-1]))
            continue
        lat, within, gap = ph.get("latency_us"), ph.get("within_target"), ph.get("max_gap_ms")
        ups, cpu, load = ph.get("updates_per_s"), ph.get("cpu_us_per_snapshot"), ph.get("loadavg")
        rows.append(
            [
                sc["name"],
                f"{float(key):,.0f}",
                str(ph["sent"]),
                " / ".join(f"{lat[p] / 1000:.1f}" for p in ("p50", "p99", "p99.9", "max")) if lat else "-",
                _share(within),
                "-" if gap is None else f"{gap:.0f}",
                "-" if ups is None else f"{ups:.0f}",
                str(ph.get("missing", "-")),
                "-" if cpu is None else f"{cpu:.0f}",
                "-" if not load else f"{load[0]:.2f}",
            ]
        )
    return rows


def _table(rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        return out + ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in rows[1:]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*r).rstrip() for r in rows]


def _section(title: str, rows: list[list[str]], markdown: bool, note: str = "") -> list[str]:
    """A table after a blank line and its title, with a note below it when there is one."""
    return ["", title, *_table(rows, markdown), *([note] if note else [])]


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    lines = [
        f"spark-ml bench, {results['started']} ({results['mode']}, {results['config']['runs']} runs, "
        f"{results['duration_s']:.0f} s)",
        f"machine: {m['cpu_model']}, {m['cores']} cores, load {m['loadavg'][0]:.2f} at start; "
        f"Python {m['python']}; {m['nats_server']}; nats-py {m['nats_py']}; faststream {m['faststream']}",
        f"payload: {results['config']['payload_bytes']} byte msgpack snapshots over "
        f"{results['config']['symbols']} symbols; each target on its own nats-server on 127.0.0.1",
    ]
    return lines


def _notes(results: dict[str, Any]) -> list[str]:
    notes = [f"{k}: {v:.2f}x" for k, v in results.get("summary", {}).items() if v is not None]
    for sc in results["scenarios"]:
        if sc.get("error"):
            notes.append(f"{sc['name']} error: {sc['error']}")
        if sc["status"] == "skipped":
            notes.append(f"{sc['name']} ({sc['title']}) skipped: {sc['reason']}")
        if sc.get("note"):
            notes.append(f"{sc['name']}: {sc['note']}")
        if sc.get("server_slow_consumers"):
            notes.append(
                f"{sc['name']}: nats-server cut its connection {sc['server_slow_consumers']} time(s) as a slow "
                "consumer (it did not read its socket in time); messages buffered for it were dropped"
            )
        drops = (sc.get("own_metrics") or {}).get("ml_slow_consumer_drops_total")
        if drops:
            notes.append(
                f"{sc['name']}: its NATS client dropped {drops:.0f} messages as a slow consumer "
                "(ml_slow_consumer_drops_total): the loss is at its intake"
            )
        if sc.get("late"):
            notes.append(f"{sc['name']}: {sc['late']} predictions arrived after their phase had ended")
    return notes


def render(results: dict[str, Any], *, markdown: bool = False) -> str:
    """The result tables (stream, then request-reply) with their header lines and notes."""
    stream = [sc for sc in results["scenarios"] if sc["kind"] == "stream"]
    request = [sc for sc in results["scenarios"] if sc["kind"] in ("request", "http")]
    pnl = [sc for sc in results["scenarios"] if sc["kind"] == "analytics" and sc["status"] != "skipped"]
    head, notes = _header(results), _notes(results)
    out = [f"- {line}" for line in head] if markdown else list(head)
    out += [""] + _table([list(_COLUMNS)] + [_row(sc) for sc in stream], markdown)
    if request:
        out += [""] + _table([list(_RR_COLUMNS)] + [_rr_row(sc) for sc in request], markdown)
    if pnl:
        out += _section(
            "live analytics: each snapshot -> first analytics.pnl.<SYMBOL> update reflecting it (at the sink):",
            [list(_PNL_COLUMNS)] + [r for sc in pnl for r in _pnl_rows(sc)],
            markdown,
            "(max gap: longest time without an update of a symbol while its data flowed, heartbeats included; "
            "CPU: the whole `spark-ml up` process, worker included, so at the slow rate mostly its idle cost)",
        )
    api = [sc for sc in results["scenarios"] if sc["kind"] == "analytics-api" and sc["status"] != "skipped"]
    if api:
        out += _section(
            "analytics API: analytics.get with N callers back to back, while snapshots flow at the offered rate:",
            [list(_API_COLUMNS)] + [r for sc in api for r in _api_rows(sc)],
            markdown,
            "(callers: nats-py requests in one process, latency from send to reply; PnL: each snapshot -> first "
            "analytics.pnl.<SYMBOL> update reflecting it, as in the live analytics table; 0 callers is the reference)",
        )
    parting = results.get("partitioning")
    if parting:
        out += _section(
            "partitioned workers against the unpartitioned queue group, same run (goal: CPU ratio <= 1.10):",
            [list(_COST_COLUMNS)] + [_cost_row(c) for c in parting],
            markdown,
        )
    failover = [sc for sc in results["scenarios"] if sc["kind"] == "failover" and sc.get("trials")]
    if failover:
        out += _section(
            "failover: SIGKILL of 1 of 3 partitioned workers under 2k/s over 16 symbols (goal: < 5 s):",
            [list(_FAILOVER_COLUMNS)] + [r for sc in failover for r in _failover_rows(sc)],
            markdown,
            "(a moved partition: its predictions paused > 0.5 s around the kill; time from the kill to its first "
            "prediction after the pause, at the sink. Core mode loses what was published meanwhile, by design)",
        )
    costs = results.get("model_cost_us_per_row")
    if costs:
        rows = [["model", "us/row at batch 1", "us/row at batch 256"]]
        rows += [[kind, f"{c['1']:.1f}", f"{c['256']:.2f}"] for kind, c in costs.items()]
        out += _section("one model call (predict_proba), in-process:", rows, markdown)
    if results.get("workdir"):
        notes.append(f"logs and raw files kept in {results['workdir']}")
    out += [""] + ([f"- {n}" for n in notes] if markdown else notes)
    return "\n".join(out) + "\n"


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``bench-<stamp>.json`` and ``.md`` (and ``latest.*`` copies) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.fromisoformat(results["started"]).strftime("%Y%m%d-%H%M%S")
    js = json.dumps(results, indent=2, default=str) + "\n"
    md = "# spark-ml benchmark\n\n" + render(results, markdown=True)
    json_path, md_path = out_dir / f"bench-{stamp}.json", out_dir / f"bench-{stamp}.md"
    json_path.write_text(js)
    md_path.write_text(md)
    (out_dir / "latest.json").write_text(js)
    (out_dir / "latest.md").write_text(md)
    return json_path, md_path
