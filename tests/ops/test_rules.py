"""rules/ml.yml: promtool accepts it, its unit tests pass, and every alert is complete and tested.

Needs promtool (Debian package ``prometheus``); skips with that hint when it is missing, fails under CI.
"""

from __future__ import annotations

import subprocess
from collections import defaultdict
from typing import Any

import pytest

from tests.support.monitoring import (
    OPERATIONS,
    RULE_TESTS,
    RULES,
    RUNBOOK_BASE,
    alert_rules,
    exported_metric_names,
    github_anchors,
    load_yaml,
    metric_names,
    parse_duration,
    tool,
)

SEED_ALERTS = {
    "MLPredictLatencyP95High": {"warning", "critical"},
    "MLErrorSpike": None,
    "MLNoPredictions": None,
    "MLModelErrorsHigh": None,
}
"""The seeds' alerts, exactly named; the latency alert in both severities."""
OPERATOR_ALERTS = {"MLNoWorkerAnswering", "MLFeatureDrift", "MLShadowAgreementLow"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, cwd=RULES.parent)


def test_promtool_check_rules_with_lint() -> None:
    # Given the rule file, when promtool checks it with every lint, then it is valid and lint-free.
    result = _run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _run(tool("promtool"), "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_catch_a_broken_threshold(tmp_path) -> None:
    # Given the error-spike threshold moved from 10% to 30%, the unit tests must notice.
    broken = tmp_path / "ml.yml"
    broken.write_text(RULES.read_text().replace("> 0.10", "> 0.30"), encoding="utf-8")
    tests = tmp_path / "ml.test.yml"
    tests.write_text(RULE_TESTS.read_text(), encoding="utf-8")
    result = _run(tool("promtool"), "test", "rules", str(tests))
    assert result.returncode != 0
    assert "MLErrorSpike" in result.stdout + result.stderr


def test_seed_and_operator_alerts_exist() -> None:
    severities: dict[str, set[str]] = defaultdict(set)
    for rule in alert_rules():
        severities[rule["alert"]].add(rule["labels"]["severity"])
    for name, expected in SEED_ALERTS.items():
        assert name in severities, f"seed alert {name} missing"
        if expected is not None:
            assert severities[name] == expected
    assert OPERATOR_ALERTS <= set(severities)


def test_latency_thresholds_are_the_seeds() -> None:
    thresholds = {r["labels"]["severity"]: r["expr"] for r in alert_rules() if r["alert"] == "MLPredictLatencyP95High"}
    assert thresholds["warning"].strip().endswith("> 80")
    assert thresholds["critical"].strip().endswith("> 200")


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_is_complete(rule: dict[str, Any]) -> None:
    assert parse_duration(rule["for"]) > 0
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    # The runbook is a section of docs/OPERATIONS.md named after the alert.
    assert annotations["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower()
    assert rule["alert"].lower() in github_anchors(OPERATIONS.read_text(encoding="utf-8"))


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_names_only_exported_metrics(rule: dict[str, Any]) -> None:
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    # `up` is Prometheus's own per-target series.
    unknown = names - exported_metric_names() - {"up"}
    assert not unknown, f"{rule['alert']} uses metrics spark-ml does not export: {sorted(unknown)}"


def _evaluations() -> list[tuple[str, int, int, str, set[str]]]:
    """(test name, interval s, eval time s, alert name, severities expected to fire) for every evaluation."""
    doc = load_yaml(RULE_TESTS)
    default = doc.get("evaluation_interval", "1m")
    rows = []
    for case in doc["tests"]:
        interval = parse_duration(case.get("interval", default))
        for check in case.get("alert_rule_test", []):
            firing = {alert["exp_labels"]["severity"] for alert in check.get("exp_alerts") or []}
            rows.append((case["name"], interval, parse_duration(check["eval_time"]), check["alertname"], firing))
    return rows


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_alert_has_a_boundary_case_and_a_silent_case(rule: dict[str, Any]) -> None:
    name, severity = rule["alert"], rule["labels"]["severity"]
    evaluations = [row for row in _evaluations() if row[3] == name]
    # Fires at T and is still pending (not firing) one evaluation earlier in the same case: the boundary.
    firing_at = {(case, t) for case, _, t, _, sev in evaluations if severity in sev}
    boundary = [
        (case, t)
        for case, interval, t, _, sev in evaluations
        if severity not in sev and (case, t + interval) in firing_at
    ]
    assert boundary, f"{name} ({severity}): no case fires at t and stays silent at t - interval"
    # A case in which the alert never fires.
    by_case: dict[str, list[set[str]]] = defaultdict(list)
    for case, _, _, _, sev in evaluations:
        by_case[case].append(sev)
    silent = [case for case, sevs in by_case.items() if not any(sevs)]
    assert silent, f"{name}: no case where it must stay silent"
