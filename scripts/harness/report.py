"""Machine facts and the result tables (plain text for the terminal, Markdown and JSON for the folder)."""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
from collections.abc import Callable
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
    def row(key: str, ph: dict[str, Any]) -> list[str]:
        q, load = ph.get("queries") or {}, ph.get("loadavg")
        return [
            key if key != "0" else "0 (reference)",
            _num(q.get("rate"), ",.0f"),
            " / ".join(f"{q['latency_ms'][p]:.2f}" for p in ("p50", "p99", "p99.9", "max"))
            if q.get("latency_ms")
            else "-",
            "-" if not q else str(int(q.get("errors", 0)) + int(q.get("failures", 0))),
            _ms(ph.get("latency_us"), ("p50", "p99", "max"), ".1f"),
            _share(ph.get("within_target")),
            str(ph.get("missing", "-")),
            "-" if not load else f"{load[0]:.2f}",
        ]

    return _phase_rows(sc, _API_COLUMNS, int, row)


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


def _num(x: float | None, fmt: str) -> str:
    """``x`` formatted, or ``-`` when it was not measured."""
    return "-" if x is None else format(x, fmt)


def _ms(lat_us: dict[str, float] | None, points: tuple[str, ...], fmt: str) -> str:
    """Latency percentiles (microseconds in the results) as ``a / b / c`` milliseconds, ``-`` without data."""
    return " / ".join(format(lat_us[p] / 1000, fmt) for p in points) if lat_us else "-"


def _median_range(tp: dict[str, Any]) -> str:
    """A throughput's median with its range over the runs: ``12.3k (11.9k-12.8k)``."""
    return f"{_k(tp.get('median'))} ({_k(tp.get('min'))}-{_k(tp.get('max'))})" if tp.get("median") else "-"


def _padded(cells: list[str], columns: tuple[str, ...]) -> list[str]:
    """A row with empty cells up to the table's width."""
    return cells + [""] * (len(columns) - len(cells))


def _not_ok(sc: dict[str, Any], columns: tuple[str, ...]) -> list[str]:
    """The one row of a scenario that did not finish: its status, the reason is in the notes."""
    return _padded([sc["name"], f"{sc['status']} (see below)"], columns)


def _phase_rows(
    sc: dict[str, Any],
    columns: tuple[str, ...],
    order: Callable[[str], float],
    row: Callable[[str, dict[str, Any]], list[str]],
) -> list[list[str]]:
    """One row per phase of ``sc["latency"]`` (in ``order`` of its key); a phase that did not run says why."""
    if sc["status"] != "ok" and not sc.get("latency"):
        return [_not_ok(sc, columns)]
    rows = []
    for key, ph in sorted(sc.get("latency", {}).items(), key=lambda kv: order(kv[0])):
        if "sent" in ph:
            rows.append([sc["name"], *row(key, ph)])
        else:
            rows.append(_padded([sc["name"], key, str(ph.get("skipped") or ph.get("error") or "no data")], columns))
    return rows


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
    return _ms(lat, ("p50", "p99", "p99.9"), ".2f") + (f" (lost {entry['lost']})" if entry.get("lost") else "")


def _row(sc: dict[str, Any]) -> list[str]:
    if sc["status"] != "ok" and not sc.get("throughput"):
        return _not_ok(sc, _COLUMNS)
    tp = sc.get("throughput") or {}
    lat = sc.get("latency", {})
    return [
        sc["name"],
        _median_range(tp),
        _num(tp.get("ratio_to_ceiling"), ".2f"),
        str(tp.get("lost", "-")),
        _num(tp.get("cpu_us_per_msg"), ".1f"),
        _num(sc.get("rss_mb"), ".0f"),
        _lat(lat.get("1000")),
        _lat(lat.get("10000")),
    ]


def _rr_row(sc: dict[str, Any]) -> list[str]:
    if sc["status"] != "ok" and not sc.get("throughput"):
        return _not_ok(sc, _RR_COLUMNS)
    tp = sc.get("throughput") or {}
    seq = sc.get("sequential") or {}
    return [
        sc["name"],
        _k(seq.get("median")),
        _ms(seq.get("latency_us"), ("p50", "p99", "p99.9"), ".2f"),
        _median_range(tp),
        _num(tp.get("ratio_to_ceiling"), ".2f"),
        str(tp.get("errors", 0) + seq.get("errors", 0)),
        str(tp.get("lost", 0) + seq.get("lost", 0)),
        _num(tp.get("cpu_us_per_msg"), ".1f"),
        _num(sc.get("rss_mb"), ".0f"),
    ]


def _cost_row(c: dict[str, Any]) -> list[str]:
    return [
        c["scenario"],
        c["reference"],
        " / ".join(_k(x) for x in (c["throughput"], c["reference_throughput"])),
        _num(c["throughput_ratio"], ".2f"),
        " / ".join(_num(x, ".1f") for x in (c["cpu_us_per_msg"], c["reference_cpu_us_per_msg"])),
        _num(c["cpu_ratio"], ".2f"),
    ]


def _failover_rows(sc: dict[str, Any]) -> list[list[str]]:
    rows = []
    for t in sc.get("trials", []):
        settings = ", ".join(f"{k.removeprefix('SPARK_ML_').lower()} {v:g}" for k, v in t["settings"].items())
        label = f"{t.get('label', '')}: {settings}"
        if "error" in t:
            rows.append(_padded([sc["name"], label, "error (see below)"], _FAILOVER_COLUMNS))
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
    def row(key: str, ph: dict[str, Any]) -> list[str]:
        load = ph.get("loadavg")
        return [
            f"{float(key):,.0f}",
            str(ph["sent"]),
            _ms(ph.get("latency_us"), ("p50", "p99", "p99.9", "max"), ".1f"),
            _share(ph.get("within_target")),
            _num(ph.get("max_gap_ms"), ".0f"),
            _num(ph.get("updates_per_s"), ".0f"),
            str(ph.get("missing", "-")),
            _num(ph.get("cpu_us_per_snapshot"), ".0f"),
            "-" if not load else f"{load[0]:.2f}",
        ]

    return _phase_rows(sc, _PNL_COLUMNS, float, row)


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


def _kind_section(
    results: dict[str, Any],
    kind: str,
    title: str,
    table: tuple[tuple[str, ...], Callable[[dict[str, Any]], list[list[str]]]],
    markdown: bool,
    note: str,
) -> list[str]:
    """The section of the scenarios of ``kind`` that ran (``table``: its columns and a scenario's rows)."""
    columns, rows_of = table
    ran = [sc for sc in results["scenarios"] if sc["kind"] == kind and sc["status"] != "skipped"]
    rows = [r for sc in ran for r in rows_of(sc)]
    return _section(title, [list(columns), *rows], markdown, note) if rows else []


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
    head, notes = _header(results), _notes(results)
    out = [f"- {line}" for line in head] if markdown else list(head)
    out += [""] + _table([list(_COLUMNS)] + [_row(sc) for sc in stream], markdown)
    if request:
        out += [""] + _table([list(_RR_COLUMNS)] + [_rr_row(sc) for sc in request], markdown)
    out += _kind_section(
        results,
        "analytics",
        "live analytics: each snapshot -> first analytics.pnl.<SYMBOL> update reflecting it (at the sink):",
        (_PNL_COLUMNS, _pnl_rows),
        markdown,
        "(max gap: longest time without an update of a symbol while its data flowed, heartbeats included; "
        "CPU: the whole `spark-ml up` process, worker included, so at the slow rate mostly its idle cost)",
    )
    out += _kind_section(
        results,
        "analytics-api",
        "analytics API: analytics.get with N callers back to back, while snapshots flow at the offered rate:",
        (_API_COLUMNS, _api_rows),
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
    out += _kind_section(
        results,
        "failover",
        "failover: SIGKILL of 1 of 3 partitioned workers under 2k/s over 16 symbols (goal: < 5 s):",
        (_FAILOVER_COLUMNS, _failover_rows),
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
