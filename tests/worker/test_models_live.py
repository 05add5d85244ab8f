"""A running worker follows the registry: promote, rollback, shadow, corrupt artifacts; drift gauges."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgpack
import numpy as np
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.features import FEATURE_NAMES
from spark_ml.core.io.registry import Registry
from spark_ml.core.ml.drift import reference_from
from spark_ml.core.models import MODEL_KINDS, TrainedModel, fit_model, sigmoid
from spark_ml.core.models.logistic import LogisticModel

_NAMES = ("ret_1", "rsi_14")


def _constant(intercept: float, kind: str = "logistic") -> TrainedModel:
    """A model whose score is about sigmoid(intercept) whatever the features: exactly for logistic; a tree kind
    is fitted on labels drawn with that probability independently of the features."""
    if kind == "logistic":
        return LogisticModel(_NAMES, [0.0, 0.0], [1.0, 1.0], [0.0, 0.0], intercept)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, len(_NAMES))) * 10 + 50
    y = (rng.random(4000) < sigmoid(np.array(intercept))).astype(np.int64)
    return fit_model(kind, x, y, feature_names=_NAMES, seed=0)


def _register(reg: Registry, model: TrainedModel) -> str:
    rng = np.random.default_rng(1)
    ref = reference_from(rng.normal(size=(1000, len(FEATURE_NAMES))) * 10 + 50, FEATURE_NAMES)
    return reg.register(model, data="test", metrics={"auc": 0.5}, reference=ref).version


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def _publish(nc: Client, start: int, n: int, symbol: str = "HOT") -> None:
    for i in range(start, start + n):
        await nc.publish(subjects.snapshot_for(symbol), msgpack.packb({"ts": i, "mid": 100.0 + i % 3}))
    await nc.flush()


@pytest.mark.parametrize("kind", MODEL_KINDS)
async def test_promote_rollback_without_restart_or_loss(
    nc: Client, worker_factory, collect, tmp_path: Path, kind: str
) -> None:
    # Given a registered "always buy" model of the kind (fitted first: a fit would stall the worker's loop)
    reg = Registry(tmp_path / "reg")
    buy = _register(reg, _constant(3.0, kind))
    assert buy.startswith(f"{kind}-")
    # and a running worker on that registry, serving the baseline
    app = await worker_factory(registry=tmp_path / "reg", serve_predict=True)
    preds = await collect(subjects.PREDICTION)
    await _publish(nc, 0, 50)
    await preds.wait(50)
    # When it is promoted while snapshots keep flowing
    reg.promote(buy)
    await _publish(nc, 50, 50)
    await _until(lambda: app.engine.model.version == buy)
    await _publish(nc, 100, 50)
    # Then nothing is lost, and versions switch once, never back and forth
    await preds.wait(150)
    versions = [b["modelVersion"] for b in preds.bodies()]
    assert [b["ts"] for b in preds.bodies()] == list(range(150))
    first = versions.index(buy)
    assert set(versions[:first]) == {"baseline"} and set(versions[first:]) == {buy}
    assert all(b["signal"] == "buy" for b in preds.bodies()[first:])
    assert app.metrics.model_version_info.labels(buy)._value.get() == 1
    # ml.predict answers with the version it names
    request = {"snapshot": {"symbol": "REQ", "ts": 1, "mid": 100.0}, "model": buy}
    reply = json.loads((await nc.request(subjects.PREDICT, json.dumps(request).encode(), timeout=5)).data)
    assert reply["modelVersion"] == buy and reply["signal"] == "buy"
    # When rolled back, the baseline serves again
    assert reg.rollback() == "baseline"
    await _until(lambda: app.engine.model.version == "baseline")
    await _publish(nc, 150, 10)
    await preds.wait(160)
    assert {b["modelVersion"] for b in preds.bodies()[150:]} == {"baseline"}


@pytest.mark.parametrize("kind", MODEL_KINDS)
async def test_shadow_predictions_go_only_to_the_shadow_subject(
    nc: Client, worker_factory, collect, tmp_path, kind: str
) -> None:
    reg = Registry(tmp_path / "reg")
    buy, sell = _register(reg, _constant(3.0, kind)), _register(reg, _constant(-3.0, kind))
    app = await worker_factory(registry=tmp_path / "reg")
    reg.promote(buy)
    reg.set_shadow(sell)
    await _until(lambda: app.shadow.model is not None and app.engine.model.version == buy)
    live = await collect(subjects.PREDICTION)
    shadow = await collect(subjects.PREDICTION_SHADOW)
    await _publish(nc, 0, 40, "SH")
    await live.wait(40)
    await _until(lambda: len(shadow.msgs) + app.metrics.shadow_skipped._value.get() >= 40)
    assert {b["modelVersion"] for b in live.bodies()} == {buy}
    assert shadow.msgs and {b["modelVersion"] for b in shadow.bodies()} == {sell}
    assert {b["signal"] for b in shadow.bodies()} == {"sell"}
    # live says buy, shadow says sell: they never agree
    assert app.metrics.shadow_agreement.labels(sell)._value.get() == 0.0
    # clearing the shadow removes its agreement series
    reg.set_shadow(None)
    await _until(lambda: app.shadow.model is None)
    assert "ml_shadow_agreement_ratio{" not in app.metrics.render().decode()
    # and drift gauges exist for the live model's reference features
    app._refresh()
    assert app.metrics.feature_drift_psi.labels("rsi_14")._value.get() > 0


async def test_failing_shadow_never_breaks_live(nc: Client, worker_factory, collect, tmp_path) -> None:
    app = await worker_factory(registry=tmp_path / "reg")

    class Broken:
        version, kind, feature_names = "broken", "test", ("ret_1",)

        def predict_proba(self, x):
            raise RuntimeError("shadow exploded")

    app.shadow.model = Broken()
    live = await collect(subjects.PREDICTION)
    await _publish(nc, 0, 30, "BRK")
    await live.wait(30)
    await _until(lambda: app.metrics.model_errors.labels("shadow_error")._value.get() >= 1)


async def test_corrupt_artifact_is_refused_and_baseline_keeps_serving(
    nc: Client, worker_factory, collect, tmp_path
) -> None:
    # Given a promoted version whose artifact is corrupted on disk afterwards
    reg = Registry(tmp_path / "reg")
    version = _register(reg, _constant(3.0))
    reg.promote(version)
    artifact = tmp_path / "reg" / "artifacts" / reg.manifest(version).artifact
    artifact.write_bytes(artifact.read_bytes().replace(b"3.0", b"9.0"))
    # When a worker starts on that registry
    app = await worker_factory(registry=tmp_path / "reg")
    # Then it refuses the artifact, counts the error and keeps serving the baseline
    assert app.models.load_errors == 1
    assert app.metrics.model_errors.labels("model_load")._value.get() == 1
    preds = await collect(subjects.PREDICTION)
    await _publish(nc, 0, 5, "COR")
    await preds.wait(5)
    assert {b["modelVersion"] for b in preds.bodies()} == {"baseline"}


async def test_running_and_restarted_workers_agree_on_a_damaged_registry(worker_factory, tmp_path) -> None:
    # Given a running worker on b (history: baseline, a)
    reg = Registry(tmp_path / "reg")
    a, b = _register(reg, _constant(1.0)), _register(reg, _constant(2.0))
    reg.promote(a)
    reg.promote(b)
    running = await worker_factory(registry=tmp_path / "reg")
    assert running.engine.model.version == b
    # When b's artifact is damaged and pointers.json becomes unreadable
    artifact = tmp_path / "reg" / "artifacts" / reg.manifest(b).artifact
    artifact.write_bytes(artifact.read_bytes()[:-4])
    (tmp_path / "reg" / "pointers.json").write_text("{")
    # Then the running worker switches to a, and a worker started now starts on a too
    await _until(lambda: running.engine.model.version == a)
    restarted = await worker_factory(registry=tmp_path / "reg")
    assert restarted.engine.model.version == a
    # Each counted the refused artifact and the damaged pointers once, however often it polled since
    await asyncio.sleep(0.5)
    for app in (running, restarted):
        assert app.metrics.model_errors.labels("model_load")._value.get() == 2
