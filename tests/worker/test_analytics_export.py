"""``spark-ml analytics export`` against the real analytics service (an active instance and a standby) on a real
nats-server: the files hold what the service holds, the tear sheet its figures; refusals exit with a reason."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.core.trading.exports import file_token
from spark_ml.core.trading.live_books import figures_row
from spark_ml.worker.services.analytics import AnalyticsService, Phase
from spark_ml.worker.services.analytics_store import AnalyticsStore
from spark_ml.worker.settings import Settings
from spark_ml.worker.tools.analytics_export import export
from tests.support.analytics import feed
from tests.support.lifecycle import until
from tests.support.processes import base_env, spark_ml
from tests.support.tearsheet import SECTIONS, TearSheetHtml

pytestmark = pytest.mark.usefixtures("nats_server")


@pytest.fixture
async def two(nc: Client) -> AsyncIterator[Callable[[], Awaitable[AnalyticsService]]]:
    """Starts an active analytics instance and a standby (only the active one answers); returns the active.

    The lease's TTL is longer than the services' default tests' 1.5 s: a test machine under load missed renewals."""
    made: list[AnalyticsService] = []

    async def start() -> AnalyticsService:
        for holder in ("a", "b"):
            svc = AnalyticsService(nc, store=AnalyticsStore(nc, holder=holder, ttl_s=5.0), checkpoint_s=0.2)
            await svc.start()
            made.append(svc)
        await until(lambda: sorted(s.phase.value for s in made) == sorted([Phase.ACTIVE.value, Phase.STANDBY.value]),
                    10, "one active, one standby")  # fmt: skip
        return next(s for s in made if s.phase is Phase.ACTIVE)

    yield start
    for svc in made:
        await svc.stop()


async def ask(nc: Client, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=5)
    out: dict[str, Any] = json.loads(reply.data)
    return out


def _read(path: str, fmt: str) -> pd.DataFrame:
    if fmt == "json":
        return pd.DataFrame(json.loads(Path(path).read_text()))
    return pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_export_writes_what_the_service_holds(nc: Client, nats_url: str, two, uid: str, tmp_path: Path, fmt: str):
    # Given two analytics instances fed 150 hourly bars and signals of two symbols, one with a dot
    active = await two()
    syms = [f"A{uid}", f"BRK.{uid}"]
    await feed(nc, syms, 150, seed=3)
    await until(lambda: active.snapshots >= 300 and active.predictions >= 300, 10, "every message handled")
    # When the export runs
    out = tmp_path / "export"
    code = await export(Settings(nats_url=nats_url), fmt=fmt, out=out, timeout=5, progress=False)
    assert code == 0
    index = json.loads((out / "index.json").read_text())
    # Then each symbol's curve and trades are the service's, and its figures the service's
    for s in syms:
        served = await ask(nc, subjects.ANALYTICS_EXPORT, {"symbol": s})
        entry = index["symbols"][s]
        assert Path(entry["equity"]).parent == out / "symbols" / file_token(s)
        equity = _read(entry["equity"], fmt)
        assert equity["ts"].tolist() == [p[0] for p in served["equityCurve"]]
        assert equity["equity"].tolist() == [p[1] for p in served["equityCurve"]]  # exact: no float lost
        trades = _read(entry["trades"], fmt)
        assert trades["pnl"].tolist() == [t["pnl"] for t in served["trades"]] and len(trades) >= 5
        assert trades["open"].tolist() == [t["exitTs"] is None for t in served["trades"]]
        assert set(trades["symbol"]) == {s}
        assert entry["metrics"] == figures_row(served["figures"])
    # And the portfolio's curve is the service's, its trades every symbol's
    book = await ask(nc, subjects.ANALYTICS_EXPORT, {})
    whole = index["portfolio"]
    assert _read(whole["equity"], fmt)["equity"].tolist() == [p[1] for p in book["equityCurve"]]
    assert len(_read(whole["trades"], fmt)) == sum(len(_read(index["symbols"][s]["trades"], fmt)) for s in syms)
    assert whole["metrics"] == figures_row(book["figures"]) and whole["metrics"]["trades"] > 10
    # And the tear sheet shows every section, the same figures, and nothing from outside the file
    html = Path(index["tearsheet"]).read_text()
    parsed = TearSheetHtml()
    parsed.feed(html)
    assert parsed.sections == list(SECTIONS) and "http" not in html and "<script" not in html
    for row, figures in [("portfolio", whole["metrics"])] + [(s, index["symbols"][s]["metrics"]) for s in syms]:
        for key, value in figures.items():
            assert parsed.cells[(row, key)] == value, (row, key)


async def test_no_service_no_nats_and_bad_arguments_say_why(nats_url: str, tmp_path: Path, capsys) -> None:
    # Given a NATS where no analytics service runs: asked again until the timeout (a take-over gap), then refused
    started = time.monotonic()
    code = await export(Settings(nats_url=nats_url), fmt="csv", out=tmp_path / "x", timeout=1.5, progress=False)
    assert code == 1 and "no analytics service answers on analytics.export (waited 1.5 s)" in capsys.readouterr().err
    assert 1.2 <= time.monotonic() - started < 10
    assert not (tmp_path / "x").exists()
    # And a NATS that is not there at all
    code = await export(Settings(nats_url="nats://127.0.0.1:9"), fmt="csv", out=tmp_path / "y", timeout=2)
    assert code == 1 and "cannot reach NATS at nats://127.0.0.1:9" in capsys.readouterr().err
    # And an output path that is a file
    (tmp_path / "f").write_text("")
    code = await export(Settings(nats_url=nats_url), fmt="json", out=tmp_path / "f", timeout=2)
    assert code == 2 and "is a file" in capsys.readouterr().err


async def test_the_command_line(nc: Client, nats_url: str, two, uid: str, tmp_path: Path) -> None:
    # Given a running service with one symbol
    active = await two()
    await feed(nc, [f"C{uid}"], 60, seed=1)
    await until(lambda: active.snapshots >= 60, 10, "fed")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [spark_ml(), "analytics", "export", *argv]
        return subprocess.run(cmd, env=base_env(), capture_output=True, text=True, timeout=60, check=False)

    # When the command runs, it writes the files and says where
    done = await asyncio.to_thread(run, "--nats-url", nats_url, "--format", "json", "--out", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert f"tear sheet {tmp_path / 'o' / 'tearsheet.html'}" in done.stdout
    assert "analytics export" in done.stderr  # the progress bar
    assert json.loads((tmp_path / "o" / "portfolio" / "equity.json").read_text())[0]["equity"] == 1.0
    # And bad arguments exit 2 with argparse's reason
    bad = await asyncio.to_thread(run, "--format", "xls", "--out", str(tmp_path / "p"))
    assert bad.returncode == 2 and "invalid choice: 'xls'" in bad.stderr
    missing = await asyncio.to_thread(run, "--format", "csv")
    assert missing.returncode == 2 and "--out" in missing.stderr


def test_the_command_lines_formats_are_the_writers() -> None:
    from spark_ml.core.io.exports import FORMATS
    from spark_ml.worker import cli

    assert cli._EXPORT_FORMATS == FORMATS


def test_settings_flags_count_before_and_after_export() -> None:
    from spark_ml.worker import cli

    parser = cli.build_parser()
    before = parser.parse_args(["analytics", "--nats-url", "nats://a:1", "export", "--out", "o"])
    after = parser.parse_args(["analytics", "export", "--nats-url", "nats://b:1", "--out", "o"])
    neither = parser.parse_args(["analytics", "export", "--out", "o"])
    assert (before.analytics_action, before.s_nats_url, after.s_nats_url) == ("export", "nats://a:1", "nats://b:1")
    assert cli._settings(neither).nats_url == Settings().nats_url
