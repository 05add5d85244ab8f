"""The registry: content-addressed artifacts, manifests, promote/rollback/shadow, corruption refused."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from spark_ml.core.errors import ArtifactCorrupt, RegistryError
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.io.registry import HISTORY_MAX, VERSION_RE, Registry
from spark_ml.core.ml.synthetic import SyntheticConfig, generate
from spark_ml.core.ml.training import reference_distribution
from spark_ml.core.models import MODEL_KINDS, BaselineModel, TrainedModel, fit_model


@pytest.fixture(scope="module")
def xy() -> tuple[np.ndarray, np.ndarray]:
    return generate(SyntheticConfig(n_bars=1500, seed=4)).xy()


@pytest.fixture(scope="module")
def models(xy) -> dict[str, TrainedModel]:
    x, y = xy
    return {kind: fit_model(kind, x, y, feature_names=FEATURE_NAMES, seed=1) for kind in MODEL_KINDS}


def _register(reg: Registry, model: TrainedModel, xy) -> str:
    ref = reference_distribution(xy[0], FEATURE_NAMES)
    return reg.register(model, data="synthetic", metrics={"auc": 0.6, "log_loss": float("nan")}, reference=ref).version


def _assert_native_format(kind: str, raw: bytes) -> None:
    """Each kind is stored in its own library's plain format: LightGBM's text model, XGBoost's JSON model,
    the logistic coefficients as JSON."""
    if kind == "lgbm":
        assert raw.startswith(b"tree\n")
    elif kind == "xgb":
        assert json.loads(raw)["learner"]["gradient_booster"]["name"] == "gbtree"
    else:
        assert json.loads(raw)["format"].startswith("spark-ml/")


def test_fresh_registry_serves_baseline(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    assert reg.pointers() == ("baseline", None)
    assert reg.active_version() == "baseline" and reg.shadow_version() is None
    assert reg.list() == []
    assert isinstance(reg.load("baseline"), BaselineModel)
    assert reg.manifest("baseline").kind == "baseline"
    assert not (tmp_path / "reg").exists()  # reading never creates anything


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_register_and_load_round_trip(tmp_path: Path, models, xy, kind: str) -> None:
    reg = Registry(tmp_path)
    model = models[kind]
    manifest = reg.register(
        model, data="synthetic", metrics={"auc": 0.6}, reference=reference_distribution(xy[0], FEATURE_NAMES)
    )
    # The manifest describes the artifact, which is named by its own sha256 and is not a pickle
    assert VERSION_RE.fullmatch(manifest.version) and manifest.version == model.version
    raw = (tmp_path / "artifacts" / manifest.artifact).read_bytes()
    assert hashlib.sha256(raw).hexdigest() == manifest.sha256 == manifest.artifact.split(".")[0]
    _assert_native_format(kind, raw)
    assert manifest.kind == kind and manifest.feature_names == FEATURE_NAMES and manifest.data == "synthetic"
    assert manifest.created.endswith("Z")
    for feature in FEATURE_NAMES:
        ref = manifest.reference[feature]
        assert len(ref["fractions"]) == len(ref["edges"]) - 1 and sum(ref["fractions"]) == pytest.approx(1.0)
    # The loaded model scores exactly as the one registered
    loaded = reg.load(manifest.version)
    assert np.array_equal(loaded.predict_proba(xy[0]), model.predict_proba(xy[0]))
    assert reg.list() == [manifest] and reg.manifest(manifest.version) == manifest


def test_register_is_idempotent_and_drops_non_finite_metrics(tmp_path: Path, models, xy) -> None:
    reg = Registry(tmp_path)
    v = _register(reg, models["lgbm"], xy)
    first = reg.manifest(v)
    assert _register(reg, models["lgbm"], xy) == v
    assert reg.manifest(v) == first and len(reg.list()) == 1
    assert first.metrics == {"auc": 0.6}


def test_baseline_cannot_be_registered(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="cannot register"):
        Registry(tmp_path).register(BaselineModel(), data="x", metrics={}, reference={})


@pytest.mark.parametrize("tree", [k for k in MODEL_KINDS if k != "logistic"])
def test_promote_rollback_shadow(tmp_path: Path, models, xy, tree: str) -> None:
    reg = Registry(tmp_path)
    a = _register(reg, models["logistic"], xy)
    b = _register(reg, models[tree], xy)
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()
    reg.promote(a)
    reg.promote(a)  # promoting the active version changes nothing
    reg.set_shadow(b)
    assert reg.pointers() == (a, b)
    reg.promote(b)  # the shadow becomes active and stops shadowing
    assert reg.pointers() == (b, None) and reg.history() == ["baseline", a]
    assert reg.rollback() == a and reg.active_version() == a
    assert reg.rollback() == "baseline"
    with pytest.raises(RegistryError):
        reg.rollback()
    reg.set_shadow("baseline")
    assert reg.shadow_version() == "baseline"
    reg.set_shadow(None)
    assert reg.shadow_version() is None
    # Another process (another instance) sees every change
    reg.promote(b)
    assert Registry(tmp_path).pointers() == (b, None)


@pytest.mark.parametrize("version", ["lgbm-00000000", "nope", "../etc/passwd", "lgbm-12345678.json"])
def test_unknown_versions_refused(tmp_path: Path, version: str) -> None:
    reg = Registry(tmp_path)
    for call in (reg.manifest, reg.load, reg.promote, reg.set_shadow):
        with pytest.raises(RegistryError, match="unknown version"):
            call(version)
    assert reg.pointers() == ("baseline", None)


@pytest.mark.parametrize("kind", [k for k in MODEL_KINDS if k != "logistic"])
def test_corrupt_artifact_refused_and_active_kept(tmp_path: Path, models, xy, kind: str) -> None:
    # Given a promoted version and a second one whose artifact is damaged on disk
    reg = Registry(tmp_path)
    good = _register(reg, models["logistic"], xy)
    bad = _register(reg, models[kind], xy)
    reg.promote(good)
    path = tmp_path / "artifacts" / reg.manifest(bad).artifact
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    # Then loading, promoting or shadowing it is refused with a clear error, and the active one stays
    with pytest.raises(ArtifactCorrupt, match=f"artifact of {bad} is corrupt: sha256"):
        reg.load(bad)
    with pytest.raises(ArtifactCorrupt):
        reg.promote(bad)
    with pytest.raises(ArtifactCorrupt):
        reg.set_shadow(bad)
    assert reg.pointers() == (good, None)
    # A missing artifact and an unreadable manifest are refused the same way
    path.unlink()
    with pytest.raises(ArtifactCorrupt, match="missing"):
        reg.load(bad)
    (tmp_path / "manifests" / f"{bad}.json").write_text("{not json")
    with pytest.raises(ArtifactCorrupt, match="unreadable"):
        reg.manifest(bad)
    # Re-registering the same model repairs the artifact
    (tmp_path / "manifests" / f"{bad}.json").unlink()
    assert _register(reg, models[kind], xy) == bad
    assert reg.load(bad).version == bad


def test_no_temporary_files_left(tmp_path: Path, models, xy) -> None:
    reg = Registry(tmp_path)
    v = _register(reg, models["lgbm"], xy)
    reg.promote(v)
    reg.rollback()
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_readers_never_see_a_half_written_pointer(tmp_path: Path, models, xy) -> None:
    # Given a writer flipping the active version while readers poll (as running workers do)
    writer_reg = Registry(tmp_path)
    a = _register(writer_reg, models["logistic"], xy)
    b = _register(writer_reg, models["lgbm"], xy)
    seen: set[str] = set()
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        reg = Registry(tmp_path)
        while not stop.is_set():
            try:
                seen.add(reg.pointers()[0])
            except BaseException as exc:  # any failure is the finding
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for _ in range(100):
            writer_reg.promote(a)
            writer_reg.promote(b)
    finally:
        stop.set()
        for t in readers:
            t.join(timeout=10)
    # Then every read is a complete, known version
    assert errors == []
    assert seen <= {"baseline", a, b} and seen
    assert len(writer_reg.history()) == HISTORY_MAX  # bounded: 200 promotions, the newest kept
