"""One generic check suite over every model kind (as river's estimator checks): the Model contract holds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from spark_ml.core.engine import Engine
from spark_ml.core.errors import ArtifactCorrupt
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.ml.synthetic import SyntheticConfig, generate
from spark_ml.core.models import MODEL_KINDS, BaselineModel, Model, TrainedModel, fit_model, model_from_bytes

SUBSET = ("ret_1", "rsi_14", "bb_pctb", "log_vol")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    ds = generate(SyntheticConfig(n_bars=3000, seed=2))
    return ds.xy()


@pytest.fixture(scope="module", params=MODEL_KINDS)
def fitted(request, data) -> TrainedModel:
    x, y = data
    return fit_model(request.param, x, y, feature_names=FEATURE_NAMES, seed=4)


def test_is_a_model(fitted: TrainedModel) -> None:
    assert isinstance(fitted, Model)
    assert fitted.feature_names == FEATURE_NAMES
    # Versions become NATS subject tokens and Prometheus label values
    assert re.fullmatch(r"[a-z]+-[0-9a-f]{8}", fitted.version)
    assert fitted.version.startswith(fitted.kind + "-")


def test_input_unchanged(fitted: TrainedModel, data) -> None:
    x = data[0][:300].copy()
    before = x.copy()
    fitted.predict_proba(x)
    assert np.array_equal(x, before)


def test_output_is_one_probability_per_row(fitted: TrainedModel, data) -> None:
    x = data[0]
    p = fitted.predict_proba(x)
    assert p.shape == (x.shape[0],) and p.dtype == np.float64
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    # Extreme inputs stay probabilities too
    wild = np.vstack([x[:5] * 1e6, -x[:5] * 1e6])
    q = fitted.predict_proba(wild)
    assert np.isfinite(q).all() and (q >= 0).all() and (q <= 1).all()
    assert fitted.predict_proba(x[:0]).shape == (0,)


def test_serialization_round_trip(fitted: TrainedModel, data) -> None:
    raw = fitted.to_bytes()
    back = model_from_bytes(fitted.kind, raw)
    assert back.to_bytes() == raw
    assert back.version == fitted.version
    assert back.feature_names == fitted.feature_names
    assert np.array_equal(back.predict_proba(data[0]), fitted.predict_proba(data[0]))


def test_seeded_determinism(fitted: TrainedModel, data) -> None:
    x, y = data
    again = fit_model(fitted.kind, x, y, feature_names=FEATURE_NAMES, seed=4)
    assert again.to_bytes() == fitted.to_bytes()
    assert again.version == fitted.version


def test_missing_or_extra_features_refused(fitted: TrainedModel, data) -> None:
    x = data[0][:10]
    with pytest.raises(ValueError, match="feature columns"):
        fitted.predict_proba(x[:, :-1])
    with pytest.raises(ValueError, match="feature columns"):
        fitted.predict_proba(np.hstack([x, x[:, :1]]))
    with pytest.raises(ValueError, match="feature columns"):
        fitted.predict_proba(x[0])


def test_fit_refuses_bad_input(fitted: TrainedModel, data) -> None:
    x, y = data
    with pytest.raises(ValueError, match="unknown features"):
        fit_model(fitted.kind, x, y, feature_names=(*FEATURE_NAMES[:-1], "tomorrow_close"))
    with pytest.raises(ValueError, match="feature columns"):
        fit_model(fitted.kind, x[:, :5], y, feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="one class"):
        fit_model(fitted.kind, x, np.zeros_like(y), feature_names=FEATURE_NAMES)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="finite"):
        fit_model(fitted.kind, bad, y, feature_names=FEATURE_NAMES)


def test_feature_subset_and_engine(fitted: TrainedModel, data) -> None:
    # Given a model fitted on a subset of the features, in a different order
    x, y = data
    cols = [FEATURE_NAMES.index(n) for n in SUBSET]
    model = fit_model(fitted.kind, x[:, cols], y, feature_names=SUBSET, seed=1)
    assert model.feature_names == SUBSET
    # Then the live engine selects its columns by name and scores a batch with it
    ds = generate(SyntheticConfig(n_bars=80, seed=9))
    result = Engine(model).run_batch(list(ds.snapshots))
    assert not result.rejected
    assert np.array_equal(result.scores, model.predict_proba(ds.features[:, cols]))


def test_importance_names_every_feature(fitted: TrainedModel) -> None:
    imp = fitted.importance()
    assert tuple(imp) == fitted.feature_names
    assert all(v >= 0 for v in imp.values()) and sum(imp.values()) > 0


@pytest.mark.parametrize("kind", MODEL_KINDS)
@pytest.mark.parametrize("raw", [b"", b"\xff\xfe garbage", b'{"format": "other"}', b"tree\nversion=v4\nnonsense"])
def test_corrupt_artifact_refused(kind: str, raw: bytes) -> None:
    with pytest.raises(ArtifactCorrupt):
        model_from_bytes(kind, raw)


def test_baseline_holds_the_contract(data) -> None:
    model = BaselineModel()
    cols = [FEATURE_NAMES.index(n) for n in model.feature_names]
    x = data[0][:, cols]
    before = x.copy()
    p = model.predict_proba(x)
    assert np.array_equal(x, before)
    assert p.shape == (x.shape[0],) and ((p >= 0) & (p <= 1)).all()


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown model kind"):
        fit_model("svm", np.zeros((4, 1)), np.array([0, 1, 0, 1]), feature_names=("ret_1",))


def test_sigmoid_is_scipy_expit_without_scipy() -> None:
    """The serving sigmoid (numpy only) against scipy's, from tiny to overflowing inputs; no warning is raised."""
    from scipy.special import expit

    from spark_ml.core.models import sigmoid

    z = np.concatenate([np.random.default_rng(0).normal(0, 8, 100_000), [0.0, -0.0, 36.0, -36.0, 800.0, -800.0]])
    got = sigmoid(z)
    assert np.max(np.abs(got - expit(z))) <= 3e-16
    assert ((got >= 0.0) & (got <= 1.0)).all()
    assert got[-2] == 1.0 and got[-1] == 0.0
    assert sigmoid(np.array([0.0]))[0] == 0.5
