"""Smoke run of the benchmark harness: a few hundred messages through real processes, no timing asserted."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace

import pytest

from spark_ml.scripts.bench import main
from spark_ml.scripts.harness.failover import FailoverConfig, run_failover
from spark_ml.scripts.harness.report import render, write
from spark_ml.scripts.harness.runner import BenchConfig, run
from spark_ml.scripts.harness.scenarios import SCENARIOS

pytestmark = pytest.mark.timeout(120)


def _tiny(*scenarios: str) -> BenchConfig:
    return BenchConfig(
        scenarios=scenarios,
        quick=True,
        runs=2,
        # 3000 x ~120 bytes cannot arrive in one socket read, so a run always has a time span to measure
        max_count=3000,
        min_count=3000,
        warmup_count=200,
        rates=(400.0,),
        rate_seconds=(0.5,),
        ready_timeout=60.0,
        sink_idle_s=3.0,  # a loaded machine can stall the slow FastStream peer for a while
        sink_grace_s=10.0,
        rr_sequential=50,
        analytics_phases=((8.0, 2.5), (400.0, 0.5)),
    )


def test_ceiling_and_peer_are_counted_and_reported(tmp_path):
    # Given the ceiling echo, the FastStream peer, the request-reply ceiling and the HTTP gateway
    # When the harness runs a tiny benchmark
    results = run(_tiny("ceiling", "faststream", "rr-ceiling", "http"), log=lambda _line: None)

    # Then every message sent to a real worker came back, and each figure has its place
    by_name = {s["name"]: s for s in results["scenarios"]}
    assert set(by_name) == {"ceiling", "faststream", "rr-ceiling", "http"}
    for name in ("ceiling", "faststream"):
        sc = by_name[name]
        assert sc["status"] == "ok", sc.get("error")
        tp = sc["throughput"]
        assert [r["sent"] for r in tp["runs"]] == [3000, 3000]
        assert [r["received"] for r in tp["runs"]] == [3000, 3000]
        assert tp["lost"] == 0
        assert tp["min"] <= tp["median"] <= tp["max"]
        # /proc CPU times tick every 10 ms: a short run may well round to zero
        assert tp["cpu_us_per_msg"] >= 0
        assert sc["rss_mb"] > 0
        lat = sc["latency"]["400"]
        assert lat["sent"] == lat["received"] == 200
        assert lat["latency_us"]["samples"] == 200
        assert 0 < lat["latency_us"]["p50"] <= lat["latency_us"]["p99"] <= lat["latency_us"]["p99.9"]
    assert by_name["ceiling"]["throughput"]["ratio_to_ceiling"] == pytest.approx(1.0)
    rr = by_name["rr-ceiling"]
    assert rr["status"] == "ok", rr.get("error")
    assert [r["received"] for r in rr["throughput"]["runs"]] == [3000, 3000]
    assert rr["throughput"]["errors"] == 0
    assert [r["received"] for r in rr["sequential"]["runs"]] == [50, 50]
    assert rr["sequential"]["latency_us"]["p50"] > 0
    http = by_name["http"]
    assert http["status"] == "ok", http.get("error")
    assert [r["received"] for r in http["throughput"]["runs"]] == [3000, 3000]
    assert http["throughput"]["errors"] == 0
    assert [r["received"] for r in http["sequential"]["runs"]] == [50, 50]
    assert results["machine"]["cores"] >= 1
    assert results["config"]["payload_bytes"] > 50

    # And the table, the JSON and the Markdown say the same
    text = render(results)
    assert "ceiling" in text and "faststream" in text and "http" in text
    json_path, md_path = write(results, tmp_path / "out")
    assert json.loads(json_path.read_text())["scenarios"][0]["name"] == "ceiling"
    assert "| ceiling |" in md_path.read_text()
    assert (tmp_path / "out" / "latest.md").read_text() == md_path.read_text()


def test_analytics_scenario_measures_every_snapshot(tmp_path):
    # Given `spark-ml up` (worker and live analytics) on the bench's server
    # When the harness offers it 20 snapshots over 16 symbols at 8/s, then 200 at 400/s (after a warm-up)
    results = run(_tiny("analytics"), log=lambda _line: None)

    # Then every snapshot was reflected in an analytics.pnl update of its symbol, each with a real latency
    sc = results["scenarios"][0]
    assert sc["name"] == "analytics" and sc["kind"] == "analytics"
    assert sc["status"] == "ok", sc.get("error")
    assert sc["throughput"] is None  # coalesced output: no throughput phases
    assert sc["warmup"]["sent"] == 200
    slow = sc["latency"]["8"]
    assert slow["sent"] == slow["reflected"] == 20 and slow["symbols_updated"] == 16
    assert 0 < slow["latency_us"]["min"] <= slow["latency_us"]["max"] < float("inf")
    assert 0 < slow["max_gap_ms"] < float("inf")
    ph = sc["latency"]["400"]
    assert ph["sent"] == ph["reflected"] == 200 and ph["missing"] == 0
    assert ph["symbols"] == ph["symbols_updated"] == 16
    lat = ph["latency_us"]
    assert lat["samples"] == 200
    assert 0 < lat["min"] <= lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"] < float("inf")
    assert 0.0 <= ph["within_target"] <= 1.0 and ph["target_ms"] == 100.0
    assert 0 < ph["max_gap_ms"] < float("inf")
    assert ph["updates"] > 0 and ph["updates_per_s"] > 0
    assert ph["stop"] == "complete" and len(ph["loadavg"]) == 3
    assert sc["rss_mb"] > 0

    # And the figures are in the table, the JSON and the Markdown
    assert "first analytics.pnl.<SYMBOL> update" in render(results)
    json_path, md_path = write(results, tmp_path / "out")
    assert json.loads(json_path.read_text())["scenarios"][0]["latency"]["400"]["reflected"] == 200
    assert "| analytics | 400 | 200 |" in md_path.read_text()


def test_analytics_api_scenario_measures_queries_and_updates_meanwhile(tmp_path):
    # Given `spark-ml up` on the bench's server, and phases of 400 snapshots/s with 0, 1 and 8 callers
    cfg = replace(_tiny("analytics-api"), api_phases=((400.0, 1.0, 0), (400.0, 1.0, 1), (400.0, 1.0, 8)))
    results = run(cfg, log=lambda _line: None)
    sc = results["scenarios"][0]
    assert sc["name"] == "analytics-api" and sc["status"] == "ok", sc.get("error")
    # Then each phase measured the PnL updates, and the queries of the phases with callers
    assert set(sc["latency"]) == {"0", "1", "8"}
    for key, ph in sc["latency"].items():
        assert ph["sent"] == ph["reflected"] == 400 and ph["missing"] == 0 and ph["callers"] == int(key)
    assert "queries" not in sc["latency"]["0"]
    for key in ("1", "8"):
        q = sc["latency"][key]["queries"]
        assert q["inflight"] == int(key) and q["answered"] > 10 and q["errors"] == q["failures"] == 0
        lat = q["latency_ms"]
        assert 0 < lat["p50"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    # And the table shows them
    text = render(results)
    assert "analytics API: analytics.get with N callers" in text and "0 (reference)" in text


def test_cli_refuses_unknown_scenarios(capsys):
    assert main(["--only", "nope", "--no-write"]) == 2
    assert "unknown scenario(s): nope" in capsys.readouterr().err


def test_partitioned_worker_is_measured_beside_its_reference():
    # Given the partitioned worker and the unpartitioned queue group (its reference), stream and ml.predict
    # When the harness runs a tiny benchmark
    results = run(_tiny("worker", "worker-solo", "rr", "rr-solo"), log=lambda _line: None)

    # Then every snapshot and request was answered by each
    by_name = {s["name"]: s for s in results["scenarios"]}
    for name in ("worker", "worker-solo", "rr", "rr-solo"):
        sc = by_name[name]
        assert sc["status"] == "ok", sc.get("error")
        assert [r["received"] for r in sc["throughput"]["runs"]] == [3000, 3000]
        assert sc["throughput"]["errors"] == 0

    # And the cost of partitioning is reported against the reference of the same run
    costs = {(c["scenario"], c["reference"]): c for c in results["partitioning"]}
    assert set(costs) == {("worker", "worker-solo"), ("rr", "rr-solo")}
    for c in costs.values():
        assert c["throughput_ratio"] > 0
        assert c["cpu_ratio"] is None or c["cpu_ratio"] >= 0  # /proc CPU ticks: a short run may round to zero
    assert "partitioned workers against the unpartitioned queue group" in render(results)


def test_xgboost_worker_is_measured_and_costed_beside_lightgbm():
    # Given the worker serving an XGBoost model, with the in-process cost of one model call per row
    results = run(dataclasses.replace(_tiny("worker-xgb"), model_costs=True), log=lambda _line: None)
    # Then every snapshot was predicted by it
    (sc,) = [s for s in results["scenarios"] if s["name"] == "worker-xgb"]
    assert sc["status"] == "ok", sc.get("error")
    assert sc["note"].startswith("model xgb-")
    assert [r["received"] for r in sc["throughput"]["runs"]] == [3000, 3000]
    # And its cost per row at batch 1 and 256 is reported beside LightGBM's
    costs = results["model_cost_us_per_row"]
    assert {"lgbm", "xgb"} <= set(costs) and all(c[b] > 0 for c in costs.values() for b in ("1", "256"))
    assert "xgb" in render(results)


def test_failover_finds_the_moved_partitions(tmp_path):
    # Given 3 partitioned workers under load, with small TTLs so that the trial stays short
    cfg = FailoverConfig(before_s=1.5, margin_s=2.0)
    settings = {"SPARK_ML_MEMBER_TTL_S": 3.0, "SPARK_ML_PIN_TTL_S": 2.0}

    # When one is SIGKILLed
    trials = run_failover(SCENARIOS["failover"], cfg, tmp_path, lambda _line: None, (("small", settings),))

    # Then the partitions it owned paused and came back on the others, and the sink's counts add up
    assert len(trials) == 1
    t = trials[0]
    assert "error" not in t, t.get("error")
    assert t["moved"] and not t["not_resumed"]
    assert 0 < t["failover_s"]["p50"] <= t["failover_s"]["max"] < 3.0 + 2.0 + 2.0
    assert t["received"] + t["lost"] == t["sent"] and t["lost"] >= 0
    text = render(
        {**_empty_results(), "scenarios": [{"name": "failover", "kind": "failover", "status": "ok", "trials": trials}]}
    )
    assert "failover  small: member_ttl_s 3, pin_ttl_s 2" in text


def _empty_results():
    machine = {"cpu_model": "x", "cores": 2, "loadavg": (0.0, 0.0, 0.0), "python": "3", "nats_server": "v"}
    machine |= {"nats_py": "2", "faststream": "0"}
    config = {"runs": 1, "payload_bytes": 71, "symbols": 16}
    return {"started": "now", "mode": "quick", "duration_s": 1.0, "machine": machine, "config": config}
