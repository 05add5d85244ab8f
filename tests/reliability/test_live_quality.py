"""Live quality through real workers: the stream's own labels give the offline figures on the same data.

A LightGBM model (active) and a logistic one (shadow) are trained walk-forward on one draw of the synthetic
bed; eight fresh draws of the same bed (eight symbols) are then replayed through two partitioned
``spark-ml worker`` processes (core mode, 16 partitions). Offline, the same two models score the same rows
(``Dataset.rows``: warm, with a next bar) and ``core/ml/evaluate.py`` scores them against training's labels.
Live, each worker labels its own symbols' predictions; ``ml.model.quality`` returns both workers' windows.

- Pooled, the active model's live windows are exactly the offline rows (label, score), so the figures are equal;
  the offline AUC is within a tolerance of the walk-forward one recorded at training (on another draw).
- Each worker's ``/metrics`` carries ``ml_live_*`` for the active and the shadow version: the figures of its
  own window, each of whose (label, score) pairs is an offline one (the shadow's: the rows it scored).
- With the signal removed (a random walk: strength 0), live AUC falls to about 0.5, below the model's
  offline lower bound (``ml_model_offline_auc_lower``), which is what the alert compares.
- Through a SIGKILL of one of two jetstream workers, every prediction the survivor labelled has its offline label.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from spark_ml.core import subjects
from spark_ml.core.io.registry import Registry
from spark_ml.core.ml.dataset import Dataset
from spark_ml.core.ml.evaluate import accuracy, auc, brier, log_loss
from spark_ml.core.ml.synthetic import SyntheticConfig, generate
from spark_ml.core.ml.training import Recipe, train
from spark_ml.core.models import Model
from spark_ml.core.partition import server_mappings, units
from spark_ml.worker.natsserver import NatsServer
from spark_ml.worker.pipeline.live_quality import decode_window
from tests.support.connections import client
from tests.support.lifecycle import until
from tests.support.messages import Sink, publish_steadily
from tests.support.processes import WorkerProcess, base_env, spark_ml, worker_env

P = 16
SYMBOLS = [f"LQ{i}" for i in range(8)]
BARS = 2500
SETTINGS: dict[str, Any] = {
    "partitions": P,
    "batch_max": 128,
    "live_quality_window": 100_000,
    "live_quality_min_rows": 200,
    "live_quality_export_s": 0,
}
TOLERANCE = 0.03
"""Of the offline AUC of the replayed rows against the walk-forward one recorded at training (other draws)."""


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Model, Model]]:
    """lgbm active and logistic shadow, trained walk-forward on a draw of the bed no replay uses."""
    path = tmp_path_factory.mktemp("lq") / "registry"
    reg = Registry(path)
    ds = generate(SyntheticConfig(seed=7, n_bars=8000))
    models = []
    for kind in ("lgbm", "logistic"):
        report = train(ds, Recipe(kind))
        manifest = report.register(reg)
        models.append(reg.load(manifest.version))
    reg.promote(models[0].version)
    reg.set_shadow(models[1].version)
    yield path, models[0], models[1]


def _beds(strength: float = 0.45) -> list[Dataset]:  # 0.45: the bed's default
    return [
        generate(SyntheticConfig(seed=100 + i, n_bars=BARS, symbol=s, strength=strength)) for i, s in enumerate(SYMBOLS)
    ]


def _offline(beds: list[Dataset], model: Model) -> tuple[np.ndarray, np.ndarray]:
    """Training's labels of the evaluated rows and the model's scores of them, every symbol pooled."""
    cols = [beds[0].feature_names.index(n) for n in model.feature_names]
    y = np.concatenate([b.labels() for b in beds])
    s = np.concatenate([model.predict_proba(b.features[b.rows()][:, cols]) for b in beds])
    return y, s


def _figures(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    return {"auc": auc(y, s), "accuracy": accuracy(y, s), "log_loss": log_loss(y, s), "brier": brier(y, s)}


def _inputs(beds: list[Dataset]) -> list[tuple[str, bytes]]:
    out = []
    for t in range(BARS):
        for b in beds:
            snap = b.snapshots[t]
            body = {"ts": snap.ts, "mid": snap.mid, "symbol": b.symbol, "spreadBp": snap.spread_bp, "vol1m": snap.vol1m}
            out.append((subjects.snapshot_for(b.symbol), msgpack.packb(body)))
    return out


async def _shared(workers: list[WorkerProcess], partitions: int) -> None:
    """Until the workers own every unit between them, each some."""
    owned: list[float] = []
    for _ in range(300):
        owned = [s.total("ml_partitions_owned") for s in [await w.scrape() for w in workers]]
        if sum(owned) == units(partitions) and all(n > 0 for n in owned):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the workers do not share the partitions: {owned}")


async def _replay(url: str, workers: list[WorkerProcess], beds: list[Dataset]) -> dict[str, Any]:
    """Wait until the two workers share the partitions, publish every bar, wait for every prediction; then
    the workers' replies on ``ml.model.quality`` (with their windows)."""

    await _shared(workers, P)
    inputs = _inputs(beds)
    async with client(url) as nc:
        preds = await Sink.on(nc, subjects.PREDICTION)
        await publish_steadily(nc, inputs)
        await until(lambda: len(preds.msgs) >= len(inputs), 120, f"{len(inputs)} predictions")
        await asyncio.sleep(0.5)  # the shadow's last batch: its scores come from a thread, a little later
        inbox = nc.new_inbox()
        replies = await Sink.on(nc, inbox)
        await nc.publish(subjects.MODEL_QUALITY, json.dumps({"windows": True}).encode(), reply=inbox)
        await until(lambda: len(replies.msgs) >= len(workers), 10, "every worker's live quality")
        info = json.loads((await nc.request(subjects.MODEL_INFO, b"{}", timeout=5)).data)
        return {"replies": [json.loads(data) for data, _ in replies.msgs], "info": info}


def _pooled(replies: list[dict[str, Any]], role: str) -> tuple[np.ndarray, np.ndarray, int]:
    ys, ss, labelled = [], [], 0
    for reply in replies:
        for row in reply["versions"]:
            if row["role"] == role:
                y, s = decode_window(row["window"])
                ys.append(y)
                ss.append(s)
                labelled += row["labelled"]
    return np.concatenate(ys), np.concatenate(ss), labelled


async def _compare(url: str, registry: Path, *flags: str) -> tuple[int, str, str]:
    """``spark-ml model compare`` against the running workers: (exit code, stdout, stderr)."""
    env = {**base_env(), "SPARK_ML_NATS_URL": url}
    proc = await asyncio.create_subprocess_exec(
        spark_ml(),
        "model",
        "compare",
        "--registry",
        str(registry),
        *flags,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, stdout.decode(), stderr.decode()


async def _run(tmp_path: Path, registry: Path, beds: list[Dataset]) -> dict[str, Any]:
    with NatsServer(store_dir=tmp_path / "nats", mappings=server_mappings(P)) as server:
        env = worker_env(server.url, registry, **SETTINGS)
        workers = [WorkerProcess(env, tmp_path / f"worker-{i}.log").start() for i in range(2)]
        try:
            for w in workers:
                await w.ready()
            out = await _replay(server.url, workers, beds)
            out["scrapes"] = [await w.scrape() for w in workers]
            out["pids"] = [w.pid for w in workers]
            out["compare"] = await _compare(server.url, registry, "--json")
            out["compare_text"] = await _compare(server.url, registry)
            for w in workers:
                w.send(signal.SIGTERM)
            for w in workers:
                assert await w.wait(20) == 0
        finally:
            for w in workers:
                w.kill()
    return out


async def test_live_quality_equals_offline_on_the_same_data(
    tmp_path: Path, registry: tuple[Path, Model, Model]
) -> None:
    path, active, shadow = registry
    beds = _beds()
    out = await _run(tmp_path, path, beds)
    y, s = _offline(beds, active)
    offline = _figures(y, s)
    walk_forward = Registry(path).manifest(active.version).extra["spread"]["auc"]

    # Pooled over both workers, the active model's windows hold exactly the offline rows.
    ly, ls, labelled = _pooled(out["replies"], "active")
    assert labelled == ly.size == y.size == len(SYMBOLS) * (BARS - 36)
    assert int(ly.sum()) == int(y.sum())
    live = _figures(ly, ls)
    for name, value in offline.items():
        assert live[name] == pytest.approx(value, abs=1e-9), name
    # The planted signal is there, and the offline walk-forward figure recorded at training agrees.
    assert offline["auc"] > 0.62
    assert abs(offline["auc"] - walk_forward["mean"]) < TOLERANCE

    # Each worker exports the figures of its own window: for the active version, its symbols' offline rows; for the
    # shadow, the rows it scored (it skips a batch while busy with the previous one); every pair an offline one.
    sy, ss = _offline(beds, shadow)
    shadow_offline = _figures(sy, ss)
    assert Counter(zip(ly.tolist(), ls.tolist(), strict=True)) == Counter(zip(y.tolist(), s.tolist(), strict=True))

    # Scores to 10 decimals: a worker scores the shadow batch by batch, offline all rows at once, and a matrix
    # product of another shape may round the last bit differently (2 of about 5000 shadow scores did)
    def pairs(labels: Any, scores: Any) -> Counter[tuple[int, float]]:
        return Counter(zip(labels.tolist(), np.round(scores, 10).tolist(), strict=True))

    offline_pairs = {"active": pairs(y, s), "shadow": pairs(sy, ss)}
    replies = {int(r["worker"].rsplit(":", 1)[1]): r for r in out["replies"]}
    for pid, scrape in zip(out["pids"], out["scrapes"], strict=True):
        for row in replies[pid]["versions"]:
            wy, ws = decode_window(row["window"])
            extra = pairs(wy, ws) - offline_pairs[row["role"]]
            assert not extra, (row["role"], row["version"], wy.size, sum(extra.values()), list(extra)[:3])
            labels = {"role": row["role"], "model_version": row["version"]}
            assert scrape.total("ml_live_labelled_predictions_total", **labels) == row["labelled"] == wy.size
            for name, value in _figures(wy, ws).items():
                assert scrape.total(f"ml_live_{name}", **labels) == pytest.approx(value, abs=1e-9), (name, labels)
        assert scrape.total("ml_model_offline_auc_lower", model_version=active.version) == pytest.approx(
            walk_forward["ci95_low"]
        )
    # ml.model.info carries the answering worker's live figures of both versions.
    assert {(q["role"], q["version"]) for q in out["info"]["liveQuality"]} == {
        ("active", active.version),
        ("shadow", shadow.version),
    }
    # spark-ml model compare pools the two workers' windows the same way, beside the offline interval.
    code, stdout, stderr = out["compare"]
    assert code == 0, stderr
    rows = {row["role"]: row for row in json.loads(stdout)["versions"]}
    assert rows["active"]["version"] == active.version and rows["active"]["workers"] == 2
    assert rows["active"]["rows"] == y.size
    assert rows["active"]["auc"] == pytest.approx(offline["auc"], abs=1e-9)
    assert rows["active"]["offline_auc"]["ci95_low"] == pytest.approx(walk_forward["ci95_low"])
    assert rows["shadow"]["version"] == shadow.version
    code, text, _ = out["compare_text"]
    assert code == 0 and "from 2 worker(s)" in text and f"{offline['auc']:.4f}" in text, text
    print(text)
    # The shadow scored batches too (it skips one while still busy with the previous: how many depends on load).
    sly, _, _ = _pooled(out["replies"], "shadow")
    assert sly.size > 1000
    print(
        f"\nRESULT live quality: active {active.version} live auc={live['auc']:.4f} offline={offline['auc']:.4f} "
        f"walk-forward={walk_forward['mean']:.4f} [{walk_forward['ci95_low']:.4f}, {walk_forward['ci95_high']:.4f}]; "
        f"shadow {shadow.version} offline auc={shadow_offline['auc']:.4f} rows={sly.size}/{y.size}"
    )


async def test_live_auc_falls_to_a_coin_flip_without_the_signal(
    tmp_path: Path, registry: tuple[Path, Model, Model]
) -> None:
    path, active, _ = registry
    beds = _beds(strength=0.0)
    out = await _run(tmp_path, path, beds)
    ly, ls, _ = _pooled(out["replies"], "active")
    y, s = _offline(beds, active)
    assert ly.size == y.size
    pooled = auc(ly, ls)
    assert pooled == pytest.approx(auc(y, s), abs=1e-9)
    assert abs(pooled - 0.5) < 0.02, pooled
    for scrape in out["scrapes"]:
        live = scrape.total("ml_live_auc", role="active", model_version=active.version)
        lower = scrape.total("ml_model_offline_auc_lower", model_version=active.version)
        assert abs(live - 0.5) < 0.05, live  # a worker may hold one symbol: 2,464 rows, a standard error of 0.012
        assert live < lower  # what MLLiveAucBelowOffline compares
    print(f"\nRESULT live quality without signal: pooled live auc={pooled:.4f}")


async def test_compare_without_workers_says_so(tmp_path: Path) -> None:
    with NatsServer(store_dir=tmp_path / "nats") as server:
        code, stdout, stderr = await _compare(server.url, tmp_path / "registry", "--wait", "0.3")
    assert code == 1 and not stdout
    assert "no worker answered on ml.model.quality" in stderr
    code, _, stderr = await _compare("nats://127.0.0.1:1", tmp_path / "registry")
    assert code == 1 and "cannot reach NATS at nats://127.0.0.1:1" in stderr


async def test_every_label_stays_right_through_a_sigkill(tmp_path: Path, registry: tuple[Path, Model, Model]) -> None:
    # Given two jetstream workers sharing 8 partitions, the synthetic bed flowing through them
    path, active, _ = registry
    beds = _beds()
    settings = {
        **SETTINGS,
        "mode": "jetstream",
        "partitions": 8,
        "member_ttl_s": 2.0,
        "pin_ttl_s": 1.0,
        "checkpoint_s": 0.2,
    }
    y, s = _offline(beds, active)
    offline_pairs = Counter(zip(y.tolist(), s.tolist(), strict=True))
    inputs = _inputs(beds)
    with NatsServer(store_dir=tmp_path / "nats") as server:
        env = worker_env(server.url, path, **settings)
        workers = [WorkerProcess(env, tmp_path / f"worker-{i}.log").start() for i in range(2)]
        try:
            for w in workers:
                await w.ready(30)
            await _shared(workers, 8)
            async with client(server.url) as nc:
                preds = await Sink.on(nc, subjects.PREDICTION)
                js = nc.jetstream()
                for i in range(0, len(inputs), 200):
                    await asyncio.gather(*(js.publish(subj, raw) for subj, raw in inputs[i : i + 200]))
                    if i <= len(inputs) // 3 < i + 200:
                        # When one of them is killed mid-stream (its partitions move with their checkpoints)
                        workers[0].send(signal.SIGKILL)
                    await asyncio.sleep(0.02)
                keys = lambda: {(b["symbol"], b["ts"]) for b in (msgpack.unpackb(d) for d, _ in preds.msgs)}  # noqa: E731
                await until(lambda: len(keys()) >= len(inputs), 60, "every snapshot predicted")
                inbox = nc.new_inbox()
                replies = await Sink.on(nc, inbox)
                await nc.publish(subjects.MODEL_QUALITY, json.dumps({"windows": True}).encode(), reply=inbox)
                await until(lambda: len(replies.msgs) >= 1, 10, "the survivor's live quality")
                await asyncio.sleep(0.5)
                answers = [json.loads(data) for data, _ in replies.msgs]
        finally:
            for w in workers:
                w.kill()
    # Then the survivor alone answers, and every prediction it labelled carries training's label of that row
    assert len(answers) == 1
    ly, ls, labelled = _pooled(answers, "active")
    survivor = Counter(zip(ly.tolist(), ls.tolist(), strict=True))
    wrong = survivor - offline_pairs
    assert not wrong, f"{sum(wrong.values())} labelled predictions that offline evaluation labels otherwise"
    # and it labelled its own symbols and the moved ones after the take-over (a moved symbol loses only the
    # label pending at the hand-over, and what the dead worker labelled went with it)
    assert labelled == ly.size > 0.5 * y.size, (labelled, y.size)
    print(f"\nRESULT live quality through a SIGKILL: survivor labelled {labelled} of {y.size} rows, none wrongly")
