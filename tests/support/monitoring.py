"""Shared helpers of the ops tests: repository files, PromQL metric names, the metrics spark-ml exports.

Metric names come from the code, not from a list in a test: the worker's ``Metrics`` container and the
gateway's registry are instantiated and their families read back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "ml.yml"
RULE_TESTS = REPO / "rules" / "ml.test.yml"
DASHBOARD = REPO / "dashboards" / "ml.json"
OPERATIONS = REPO / "docs" / "OPERATIONS.md"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
RUNBOOK_BASE = "https://github.com/spark-ml/spark-ml/blob/main/docs/OPERATIONS.md#"

RATE_INTERVAL = "$__rate_interval"
"""Grafana's interval variable, the only template variable the dashboard's queries use."""

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
# An identifier that is not part of a number or variable, and not a function call.
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
    | {"inf", "nan", "Inf", "NaN"}
)


def tool(name: str) -> str:
    """Path of a Prometheus binary; skip with how to get it, or fail when CI is set."""
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found: install Debian's prometheus package (apt-get install prometheus), which ships it"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label names, functions and keywords removed)."""
    text = _STRING.sub(" ", expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _IDENT.findall(text) if name not in _KEYWORDS}


def _family_samples(registry: CollectorRegistry) -> set[str]:
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return names


def exported_metric_names() -> set[str]:
    """Every sample name the worker's metric container and the HTTP gateway can expose."""
    from nats.aio.client import Client

    from spark_ml.gateway.http import HttpGateway
    from spark_ml.worker.metrics import Metrics
    from spark_ml.worker.settings import Settings

    gateway = HttpGateway(Client(), Settings())  # not started: only its metric registry is read
    return _family_samples(Metrics().registry) | _family_samples(gateway.registry)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_yaml(RULES)["groups"]:
        rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


def load_dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    """Every panel that shows data (rows excluded), nested row panels included."""
    panels: list[dict[str, Any]] = []
    for panel in load_dashboard()["panels"]:
        if panel["type"] == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query of the dashboard."""
    return [(p["title"], t["refId"], t["expr"]) for p in dashboard_panels() for t in p["targets"]]


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub generates for a document's headings."""
    anchors: set[str] = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def parse_duration(text: str) -> int:
    """Seconds in a Prometheus duration such as ``1m``, ``90s`` or ``1h30m``."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return int(sum(int(n) * units[u] for n, u in parts))
