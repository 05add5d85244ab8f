"""Layering rules, checked on the source: core imports no transport; nothing imports upward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "core": {"asyncio", "nats", "aiohttp", "worker", "gateway", "scripts", "prometheus_client", "os.environ"},
    "worker": {"scripts", "gateway"},
}
# The composition root wires the layers together; it alone may import the gateway (and scripts, lazily).
COMPOSITION = {"worker/cli.py", "worker/run.py", "worker/up.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_forbidden_imports(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offenders = []
    for path in files:
        if str(path.relative_to(ROOT)) in COMPOSITION:
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in FORBIDDEN[package] or name in FORBIDDEN[package]:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_core_reads_no_environment() -> None:
    for path in sorted((ROOT / "core").rglob("*.py")):
        text = path.read_text()
        assert "os.environ" not in text and "getenv" not in text, path
