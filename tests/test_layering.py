"""Layering rules, checked on the source.

- Every import of project code goes through the one import name ``spark_ml`` (``spark_ml.core`` is ``core/``).
- ``core`` imports no transport and reads no environment; its modules import each other without a circle.
- ``worker`` imports neither ``gateway`` nor ``scripts``; only the CLI may import them, inside a function.
- ``gateway`` imports no ``scripts``.
- ``client`` imports only ``core`` of ours (a user's program gets none of the worker's runtime).
- Inside ``core`` only ``core/io/`` writes files; the ``scripts/*.py`` entry points write through it too.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("core", "worker", "gateway", "scripts", "client")
FORBIDDEN = {
    "core": {
        "asyncio",
        "nats",
        "aiohttp",
        "prometheus_client",
        "spark_ml.worker",
        "spark_ml.gateway",
        "spark_ml.scripts",
    },
    "worker": {"spark_ml.gateway", "spark_ml.scripts"},
    "gateway": {"spark_ml.scripts"},
    "client": {"spark_ml.worker", "spark_ml.gateway", "spark_ml.scripts"},
}
LAZY_ALLOWED = {"worker/cli.py"}
"""The composition root: it alone may import the gateway and the scripts, inside its command functions."""
WRITERS = {"write_text", "write_bytes", "savefig", "to_csv", "to_parquet", "mkdir", "unlink", "rmtree", "dump"}


def _sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def _import_edges(path: Path) -> set[str]:
    """Modules ``path`` depends on: ``from pkg import submodule`` names the submodule, not the package."""
    edges: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            edges.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names}
            edges |= subs
            if any(s not in _CORE_MODULES and s not in _CORE_EXTENSIONS for s in subs):
                edges.add(node.module)
    return edges


def _hits(name: str, forbidden: set[str]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


@pytest.mark.parametrize("folder", [*FOLDERS, "tests"])
def test_project_imports_use_the_one_import_name(folder: str) -> None:
    offenders = []
    for path in _sources(folder):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.ImportFrom) and node.level and folder != "tests":
                offenders.append(f"{_rel(path)}:{node.lineno} relative import")
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.append(node.module)
            offenders += [f"{_rel(path)}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] in FOLDERS]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_forbidden_imports(folder: str) -> None:
    offenders = []
    for path in _sources(folder):
        lazy_ok = _rel(path) in LAZY_ALLOWED
        names = _imports(path, top_level_only=lazy_ok)
        offenders += [f"{_rel(path)} imports {n}" for n in sorted(names) if _hits(n, FORBIDDEN[folder])]
    assert not offenders, "\n".join(offenders)


def test_core_reads_no_environment() -> None:
    for path in _sources("core"):
        text = path.read_text()
        assert "os.environ" not in text and "getenv" not in text, path


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)  # core/ml/drift.py -> spark_ml.core.ml.drift
    if parts[-1] == "__init__":
        parts.pop()
    return "spark_ml." + ".".join(parts)


_CORE_MODULES = {_module_name(p): p for p in _sources("core")}
_CORE_EXTENSIONS = {_module_name(p) for p in (ROOT / "core").rglob("*.pyi")}
"""C extensions (their stubs stand for them): leaves of the graph."""


def _core_graph() -> dict[str, set[str]]:
    return {
        name: {m for m in _import_edges(path) if m in _CORE_MODULES and m != name}
        for name, path in _CORE_MODULES.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_core_has_no_import_circle() -> None:
    graph = _core_graph()
    assert "spark_ml.core.ml.dataset" in graph["spark_ml.core.ml.training"]
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _writes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in WRITERS:
            found.append(f"{_rel(path)}:{node.lineno} {name}()")
        elif name == "open" and any(
            isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax+")
            for a in [*node.args[1:], *(k.value for k in node.keywords if k.arg == "mode")]
        ):
            found.append(f"{_rel(path)}:{node.lineno} open() for writing")
    return found


def test_only_core_io_writes_files() -> None:
    paths = [p for p in _sources("core") if "io" not in p.relative_to(ROOT / "core").parts[:1]]
    paths += sorted((ROOT / "scripts").glob("*.py"))
    offenders = [w for p in paths for w in _writes(p)]
    assert not offenders, "\n".join(offenders)
    assert _writes(ROOT / "core" / "io" / "registry.py"), "the writer check found nothing where writes are"
