"""The registry against damaged files: rollback verifies, one bad manifest hides nothing, damaged pointers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from spark_ml.core.errors import ArtifactCorrupt, RegistryError
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.io.registry import PointerState, Registry, serving_order
from spark_ml.core.ml.drift import reference_from
from spark_ml.core.models.logistic import LogisticModel


def _constant(intercept: float) -> LogisticModel:
    return LogisticModel(("ret_1", "rsi_14"), [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], intercept)


def _register(reg: Registry, intercept: float) -> str:
    ref = reference_from(np.random.default_rng(1).normal(size=(200, len(FEATURE_NAMES))), FEATURE_NAMES)
    return reg.register(_constant(intercept), data="test", metrics={"auc": 0.5}, reference=ref).version


def _damage_artifact(reg: Registry, version: str) -> None:
    path = reg.root / "artifacts" / reg.manifest(version).artifact
    path.write_bytes(path.read_bytes()[:-5])


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "reg")


def test_rollback_to_a_corrupt_artifact_is_refused_and_pointers_kept(reg: Registry) -> None:
    # Given a, then b active (history: baseline, a) and a's artifact damaged afterwards
    a, b = _register(reg, 1.0), _register(reg, 2.0)
    reg.promote(a)
    reg.promote(b)
    _damage_artifact(reg, a)
    pointers = (reg.root / "pointers.json").read_bytes()
    # When rolling back, Then it is refused with the reason, naming what stays active
    with pytest.raises(ArtifactCorrupt, match=f"cannot roll back to {a}, {b} stays active: artifact of {a} is corrupt"):
        reg.rollback()
    assert (reg.root / "pointers.json").read_bytes() == pointers
    assert reg.pointers() == (b, None) and reg.history() == ["baseline", a]
    # A missing artifact is refused the same way; once repaired, the rollback goes through
    (reg.root / "artifacts" / reg.manifest(a).artifact).unlink()
    with pytest.raises(ArtifactCorrupt, match="missing or unreadable"):
        reg.rollback()
    assert _register(reg, 1.0) == a
    assert reg.rollback() == a and reg.pointers() == (a, None)


def test_rollback_to_an_unknown_version_is_refused(reg: Registry) -> None:
    a = _register(reg, 1.0)
    reg.promote(a)
    reg.promote("baseline")
    (reg.root / "manifests" / f"{a}.json").unlink()
    with pytest.raises(RegistryError, match="unknown version"):
        reg.rollback()
    assert reg.pointers() == ("baseline", None)


def test_scan_lists_every_readable_version_and_says_why_the_others_are_not(reg: Registry) -> None:
    # Given three versions, one manifest truncated, one copied under another version's name, and a stray file
    a, b, c = _register(reg, 1.0), _register(reg, 2.0), _register(reg, 3.0)
    manifests = reg.root / "manifests"
    (manifests / f"{b}.json").write_bytes((manifests / f"{b}.json").read_bytes()[:40])
    (manifests / "logistic-0123456789.json").write_bytes((manifests / f"{c}.json").read_bytes())
    (manifests / "notes.json").write_text("{}")
    (manifests / "logistic-abcdef0123.json").write_bytes(b"\xff\xfe not utf-8")
    good, corrupt = reg.scan()
    assert [m.version for m in good] == sorted([a, c], key=lambda v: (reg.manifest(v).created, v))
    assert set(corrupt) == {b, "logistic-0123456789", "notes", "logistic-abcdef0123"}
    assert "unreadable" in corrupt[b] and f"describes {c}" in corrupt["logistic-0123456789"]
    assert "not a manifest" in corrupt["notes"]
    # The strict list() still refuses, as before
    with pytest.raises(RegistryError):
        reg.list()


def test_manifest_naming_a_foreign_artifact_path_is_corrupt(reg: Registry) -> None:
    a = _register(reg, 1.0)
    path = reg.root / "manifests" / f"{a}.json"
    doc = json.loads(path.read_text())
    doc["artifact"] = "../pointers.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactCorrupt, match="unreadable"):
        reg.load(a)


def test_bytes_that_match_the_manifest_but_are_no_model_are_refused(reg: Registry) -> None:
    # Given an artifact and a manifest that agree on a sha256, but the bytes are not a model
    a = _register(reg, 1.0)
    raw = b'{"format": "spark-ml/logistic-v1", "coef": "nope"}'
    sha = hashlib.sha256(raw).hexdigest()
    doc = json.loads((reg.root / "manifests" / f"{a}.json").read_text())
    version = f"logistic-{sha[:8]}"
    doc.update(version=version, sha256=sha, artifact=f"{sha}.json")
    (reg.root / "artifacts" / f"{sha}.json").write_bytes(raw)
    (reg.root / "manifests" / f"{version}.json").write_text(json.dumps(doc))
    # Then loading is a refusal, never another exception
    with pytest.raises(ArtifactCorrupt):
        reg.load(version)
    with pytest.raises(ArtifactCorrupt):
        reg.promote(version)


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[1, 2]", b'{"active": 3, "history": []}', b'{"active": "x"}'])
def test_damaged_pointers_are_followed_from_their_last_good_copy(reg: Registry, damage: bytes) -> None:
    a, b = _register(reg, 1.0), _register(reg, 2.0)
    reg.promote(a)
    reg.set_shadow(b)
    (reg.root / "pointers.json").write_bytes(damage)
    # The strict reading refuses; the serving state says why and follows the last-good copy
    with pytest.raises(RegistryError, match="pointers.json is unreadable"):
        reg.pointers()
    state = reg.pointer_state()
    assert (state.active, state.shadow, state.history, state.source) == (a, b, ("baseline",), "last-good")
    assert state.problem is not None and "pointers.json is unreadable" in state.problem
    # When the last-good copy is damaged too: the baseline, and the state says nothing can be followed
    (reg.root / "pointers.last-good.json").write_bytes(damage)
    state = reg.pointer_state()
    assert (state.active, state.shadow, state.source) == ("baseline", None, "none")
    with pytest.raises(RegistryError, match="pointers.json is unreadable"):
        reg.promote(a)


def test_a_write_repairs_damaged_pointers_from_the_last_good_copy(reg: Registry) -> None:
    a, b = _register(reg, 1.0), _register(reg, 2.0)
    reg.promote(a)
    (reg.root / "pointers.json").write_text("garbage")
    reg.promote(b)
    assert reg.pointers() == (b, None) and reg.history() == ["baseline", a]
    assert reg.pointer_state().source == "pointers"
    assert (reg.root / "pointers.last-good.json").read_bytes() == (reg.root / "pointers.json").read_bytes()


def test_serving_order_is_active_then_history_most_recent_first_then_baseline() -> None:
    state = PointerState("c", None, ("baseline", "a", "b", "a"))
    assert serving_order(state) == ["c", "a", "b", "baseline"]
    assert serving_order(PointerState("baseline", None, ())) == ["baseline"]
