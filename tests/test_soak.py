"""``spark-ml soak``: a short real run (its JSON reconciles and holds several samples), the verdict rules, and
Ctrl-C stopping every process it started."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from spark_ml.scripts.harness.soak import Sample, _rss_growth, _verdict

SPARK_ML = str(Path(sys.executable).parent / "spark-ml")
SHORT = ["--minutes", "0.2", "--rate", "500", "--sample-s", "3", "--warmup-minutes", "0.05", "--symbols", "50"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_")}


def test_short_soak_writes_a_reconciled_result(tmp_path: Path) -> None:
    # Given a 12-second soak at 500 snapshots/s with a sample every 3 s
    done = subprocess.run(
        [SPARK_ML, "soak", *SHORT, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=90,
        env=_env(),
        check=False,
    )
    # Then it wrote JSON and Markdown, and its exit code is its verdict
    result = json.loads((tmp_path / "latest.json").read_text())
    assert done.returncode == (1 if result["failures"] else 0), done.stderr
    assert "| # | t (s) |" in (tmp_path / "latest.md").read_text()
    # And every snapshot sent was predicted exactly once, with finite numbers
    totals = result["totals"]
    assert totals["sent"] == 6000 == result["config"]["count"]
    assert totals["predicted"] == totals["sent"]
    assert totals["missing"] == totals["dead_letters"] == totals["duplicates"] == totals["non_finite"] == 0
    # And there is one sample per 3 s, each with throughput, latency, memory and CPU
    samples = result["samples"]
    assert len(samples) == 4
    assert sum(s["predicted"] for s in samples) == totals["predicted"]
    for s in samples:
        assert s["throughput"] > 0 and s["rss_mb"] > 10 and s["cpu_pct"] >= 0
        assert 0 < s["p50_ms"] <= s["p99_ms"] <= s["max_ms"] and math.isfinite(s["max_ms"])
    # And the RSS growth is measured from the first sample after the warm-up to the last
    rss = result["rss"]
    assert rss["baseline_t_s"] == samples[0]["t_s"] and rss["final_mb"] == samples[-1]["rss_mb"]
    assert rss["growth"] == pytest.approx((rss["final_mb"] - rss["baseline_mb"]) / rss["baseline_mb"])
    # And the per-sample lines went to stderr as the run went
    assert len(re.findall(r"^\[\d\] t=", done.stderr, re.M)) == 4


def _sample(i: int, t: float, rss: float) -> Sample:
    return Sample(i, t, 60.0, i * 1000, 1000, 1000.0 / 60, 0.5, 1.0, 2.0, 0.2, rss, 20.0, 0)


def test_rss_growth_is_measured_after_the_warm_up() -> None:
    samples = [_sample(1, 60, 50.0), _sample(2, 120, 80.0), _sample(3, 180, 82.0), _sample(4, 240, 83.0)]
    rss = _rss_growth(samples, warmup_s=120)
    assert rss["baseline_mb"] == 80.0 and rss["final_mb"] == 83.0
    assert rss["growth"] == pytest.approx(3 / 80)
    assert _rss_growth(samples[:2], warmup_s=120)["growth"] is None  # one sample after the warm-up: no verdict


def test_verdict_fails_on_growth_loss_or_bad_output() -> None:
    clean = {"missing": 0, "dead_letters": 0, "duplicates": 0, "non_finite": 0}
    assert _verdict(clean, {"growth": 0.049}, 0.05, None) == []
    assert _verdict(clean, {"growth": None}, 0.05, None) == []
    assert "RSS grew 5.0%" in _verdict(clean, {"growth": 0.05}, 0.05, None)[0]
    for key in clean:
        assert _verdict({**clean, key: 3}, {"growth": 0.0}, 0.05, None) == [f"{key.replace('_', ' ')}: 3"]
    assert "exited" in _verdict(clean, {"growth": 0.0}, 0.05, -9)[0]


def test_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    # Given a soak that would run for a minute
    proc = subprocess.Popen(
        [SPARK_ML, "soak", "--minutes", "1", "--rate", "200", "--sample-s", "1", "--out", str(tmp_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=_env(),
        # As from a terminal: a suite started in the background of a non-interactive shell has SIGINT ignored,
        # and children inherit that (POSIX), so Ctrl-C would not reach the soak at all
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stderr is not None
        pids: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the worker is up, then a first sample
            line = proc.stderr.readline()
            if match := re.match(r"worker pid (\d+) ready .*nats-server pid (\d+)", line):
                pids = [int(match.group(1)), int(match.group(2))]
            if line.startswith("[1] "):
                break
        assert pids and all(Path(f"/proc/{p}").exists() for p in pids)
        # Keep reading its stderr (its children's logs go there too): a full pipe would block them mid-shutdown
        rest: list[str] = []
        reader = threading.Thread(target=lambda: rest.extend(proc.stderr or ()), daemon=True)
        reader.start()
        # When it gets Ctrl-C
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(30)
        except subprocess.TimeoutExpired:
            tail = "".join(rest[-40:])
            raise AssertionError(f"soak still running 30 s after Ctrl-C; its last lines:\n{tail}") from None
        reader.join(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    # Then it exits 130 having stopped its worker and its nats-server, and still reports what it measured
    assert code == 130
    assert not any(Path(f"/proc/{p}").exists() for p in pids)
    assert json.loads((tmp_path / "latest.json").read_text())["interrupted"] is True
