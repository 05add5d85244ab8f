"""dashboards/ml.json: a current Grafana dashboard whose every query is valid PromQL over metrics spark-ml exports.

Whether each query returns data from a Prometheus that scraped a running spark-ml is
tests/ops/test_prometheus_live.py's job.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.support.monitoring import (
    RATE_INTERVAL,
    dashboard_panels,
    dashboard_queries,
    exported_metric_names,
    load_dashboard,
    metric_names,
    tool,
)

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEED_PANELS = (
    "Prediction requests/s",
    "Latency p95 (ms)",
    "Model version",
    "Success rate",
    "Prediction score distribution",
)
OPERATIONS_PANELS = (
    "Dead letters/s by reason",
    "Batch size",
    "Queue depth by shard",
    "Feature drift (PSI)",
    "Shadow agreement",
)


def test_metric_names_parser() -> None:
    expr = (
        'sum by (model_version, le) (rate(ml_predict_latency_ms_bucket{status!="ok", le=~"1.*"}[$__rate_interval]))'
        " / ignoring (reason) group_left sum(rate(ml_snapshots_received_total[5m] offset 1m)) > 0.95 and on() up"
    )
    assert metric_names(expr) == {"ml_predict_latency_ms_bucket", "ml_snapshots_received_total", "up"}


def test_dashboard_is_current_schema_with_a_datasource_variable() -> None:
    dash = load_dashboard()
    assert dash["schemaVersion"] >= 39
    assert dash["uid"] and dash["title"]
    assert dash["id"] is None, "a provisioned or imported dashboard must not carry a database id"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_seed_and_operations_panels_present() -> None:
    titles = [p["title"] for p in dashboard_panels()]
    assert len(titles) == len(set(titles)), "panel titles must be unique"
    for title in SEED_PANELS + OPERATIONS_PANELS:
        assert title in titles


def test_panels_are_laid_out_without_overlap() -> None:
    dash = load_dashboard()
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


@pytest.mark.parametrize("panel", dashboard_panels(), ids=lambda p: p["title"])
def test_panel_uses_the_datasource_variable(panel: dict[str, Any]) -> None:
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"], "a panel without a query"
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["expr"].strip()
    if panel["type"] == "heatmap":
        assert all(t.get("format") == "heatmap" for t in panel["targets"])


@pytest.mark.parametrize(("title", "ref", "expr"), dashboard_queries(), ids=lambda v: str(v)[:40])
def test_query_names_only_exported_metrics(title: str, ref: str, expr: str) -> None:
    names = metric_names(expr)
    assert names, f"{title}/{ref}: no metric in {expr!r}"
    unknown = names - exported_metric_names()
    assert not unknown, f"{title}/{ref} uses metrics spark-ml does not export: {sorted(unknown)}"
    # $__rate_interval is the only template variable: the live test substitutes it and nothing else.
    assert "$" not in expr.replace(RATE_INTERVAL, "")


def test_every_query_is_valid_promql(tmp_path) -> None:
    # promtool parses each query as a recording rule: a syntax error anywhere fails the check.
    rules = [
        {"record": f"dashboard:query:{i}", "expr": expr.replace(RATE_INTERVAL, "1m")}
        for i, (_, _, expr) in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = subprocess.run(
        [tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout
