"""A running ModelSource and a freshly started one end on the same version, whatever is damaged.

No server: ModelSource is in-process. "Running" is a source that was started before the damage and then
polled (``refresh``); "fresh" is one started after it (what a restarted worker does).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from spark_ml.core.errors import ArtifactCorrupt
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.io.registry import Registry
from spark_ml.core.ml.drift import reference_from
from spark_ml.core.models.logistic import LogisticModel
from spark_ml.scripts import model as model_script
from spark_ml.worker.pipeline.models import ModelSource
from spark_ml.worker.settings import Settings

LOGGER = "spark_ml.worker.pipeline.models"


def _register(reg: Registry, intercept: float) -> str:
    model = LogisticModel(("ret_1", "rsi_14"), [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], intercept)
    ref = reference_from(np.random.default_rng(1).normal(size=(200, len(FEATURE_NAMES))), FEATURE_NAMES)
    return reg.register(model, data="test", metrics={"auc": 0.5}, reference=ref).version


def _damage(path: Path) -> None:
    # A different size: the stamp changes even within one tick of the file system's clock
    path.write_bytes(path.read_bytes()[:-7])


def _artifact(reg: Registry, version: str) -> Path:
    return reg.root / "artifacts" / reg.manifest(version).artifact


def _start(root: Path) -> ModelSource:
    source = ModelSource(Settings(registry=root))
    source.load_initial()
    return source


def _running_on_two(reg: Registry, *, shadow: bool = False) -> tuple[str, str, ModelSource]:
    """Versions a and b registered, a promoted, then b promoted too (or set as a's shadow); a source started."""
    a, b = _register(reg, 1.0), _register(reg, 2.0)
    reg.promote(a)
    if shadow:
        reg.set_shadow(b)
    else:
        reg.promote(b)
    return a, b, _start(reg.root)


def _serving(source: ModelSource) -> tuple[str, str | None]:
    return source.live.version, source.shadow.version if source.shadow else None


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "reg")


async def test_damaged_active_artifact_both_serve_what_a_rollback_returns_to(reg: Registry, caplog) -> None:
    # Given a running worker on b (history: baseline, a)
    a, b, running = _running_on_two(reg)
    assert _serving(running) == (b, None) and running.load_errors == 0
    # When b's artifact is damaged on disk (pointers unchanged)
    caplog.set_level(logging.WARNING, LOGGER)
    _damage(_artifact(reg, b))
    assert await running.refresh() is True
    fresh = _start(reg.root)
    # Then both serve a, each refused b once (logged once, counted once), and polling again changes nothing
    assert _serving(running) == _serving(fresh) == (a, None)
    assert await running.refresh() is False and await running.refresh() is False
    assert running.load_errors == fresh.load_errors == 1
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"model {b} refused")]
    assert len(refusals) == 2 and "is corrupt: sha256" in refusals[0]  # one per source
    # When b is repaired (registered again), both serve b again
    assert _register(reg, 2.0) == b
    assert await running.refresh() is True
    assert _serving(running) == _serving(_start(reg.root)) == (b, None)


async def test_every_version_damaged_both_serve_the_baseline(reg: Registry) -> None:
    a, b, running = _running_on_two(reg)
    _damage(_artifact(reg, a))
    _damage(_artifact(reg, b))
    await running.refresh()
    assert _serving(running) == _serving(_start(reg.root)) == ("baseline", None)
    assert running.reference is None and running.info()["version"] == "baseline"


async def test_damaged_pointer_file_both_follow_the_last_good_copy(reg: Registry, caplog) -> None:
    # Given a running worker on a, shadowing b
    a, b, running = _running_on_two(reg, shadow=True)
    assert _serving(running) == (a, b)
    # When pointers.json is damaged
    caplog.set_level(logging.WARNING, LOGGER)
    (reg.root / "pointers.json").write_text("{half a fil")
    assert await running.refresh() is False
    await running.refresh()
    fresh = _start(reg.root)  # used to raise: a worker did not start on an unreadable pointer file
    # Then both serve what it said, with one warning and one counted error each
    assert _serving(running) == _serving(fresh) == (a, b)
    assert running.load_errors == fresh.load_errors == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("following its last-good copy" in w for w in warnings)
    assert "pointers.json is unreadable" in warnings[0]
    # When a promotion rewrites the pointers, both follow it and the warning is not repeated
    reg.set_shadow(None)
    assert await running.refresh() is True
    assert _serving(running) == _serving(_start(reg.root)) == (a, None)


async def test_both_pointer_files_damaged_starting_serves_baseline_running_keeps(reg: Registry) -> None:
    # The one documented case where they differ: nothing in the registry says what to serve
    a = _register(reg, 1.0)
    reg.promote(a)
    running = _start(reg.root)
    (reg.root / "pointers.json").write_text("x")
    (reg.root / "pointers.last-good.json").write_text("x")
    assert await running.refresh() is False
    assert _serving(running) == (a, None) and running.load_errors == 1
    fresh = _start(reg.root)
    assert _serving(fresh) == ("baseline", None) and fresh.load_errors == 1


async def test_damaged_shadow_is_dropped_by_both(reg: Registry) -> None:
    a, b, running = _running_on_two(reg, shadow=True)
    _damage(_artifact(reg, b))
    assert await running.refresh() is True
    assert _serving(running) == _serving(_start(reg.root)) == (a, None)


async def test_refused_rollback_leaves_every_worker_where_it_was(reg: Registry, capsys) -> None:
    # Given a running worker on b and a's artifact damaged (a is what a rollback returns to)
    a, b, running = _running_on_two(reg)
    _damage(_artifact(reg, a))
    # When rolling back from the command line: refused, one line, exit 2, pointers unchanged
    code = model_script.main(["rollback", "--registry", str(reg.root)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and f"cannot roll back to {a}" in err and "corrupt" in err
    assert reg.pointers() == (b, None)
    # Then running and fresh workers both keep b; a request naming a is refused without counting
    await running.refresh()
    fresh = _start(reg.root)
    assert _serving(running) == _serving(fresh) == (b, None)
    with pytest.raises(ArtifactCorrupt):
        fresh.resolve(a)
    assert fresh.load_errors == 0
