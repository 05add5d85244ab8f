"""Log settings: SPARK_ML_LOG_LEVEL and SPARK_ML_LOG_FORMAT=json, in the formatter and in a real worker process."""

from __future__ import annotations

import io
import json
import logging
import signal
from pathlib import Path

import pytest
from nats.aio.client import Client

from spark_ml.core import subjects
from spark_ml.worker.logs import JsonFormatter, default_log_config
from spark_ml.worker.settings import Settings
from tests.support.processes import WorkerProcess, worker_env


def test_json_formatter_writes_one_object_per_record_with_the_traceback() -> None:
    # Given a logger writing through the JSON formatter
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("spark_ml.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        # When a record with arguments and one with an exception are logged
        logger.debug("batch of %d from %s", 3, "EURUSD \u20ac")
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    # Then each is one line of JSON, arguments merged, the traceback escaped inside it
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "batch of 3 from EURUSD \u20ac" and first["level"] == "DEBUG"
    assert first["logger"] == "spark_ml.test_logs" and first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: bad\nthing" in second["exc"]


def test_log_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_ML_LOG_LEVEL", "debug")
    monkeypatch.setenv("SPARK_ML_LOG_FORMAT", "json")
    settings = Settings()
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    monkeypatch.setenv("SPARK_ML_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="log_format"):
        Settings()
    with pytest.raises(ValueError, match="xml"):
        default_log_config("INFO", "xml")
    # (the config is only built here: applying it would change the loggers of the tests that run after this one)
    assert default_log_config("DEBUG", "json")["handlers"]["stderr"]["formatter"] == "json"
    assert default_log_config("DEBUG", "json")["loggers"]["spark_ml"]["level"] == "DEBUG"


async def test_a_worker_logs_json_lines_at_the_level_of_the_environment(
    nc: Client, nats_url: str, tmp_path: Path
) -> None:
    # Given a worker process told by its environment to log JSON at DEBUG
    env = worker_env(nats_url, tmp_path / "registry", log_format="json", log_level="debug", solo="true")
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        await worker.ready()
        # When a request it refuses arrives (logged at DEBUG), then SIGTERM
        reply = await nc.request(subjects.PREDICT, b"\xc1 not msgpack", timeout=5)
        assert reply.headers and reply.headers.get("Nats-Service-Error-Code") == "400"
        worker.send(signal.SIGTERM)
        assert await worker.wait(20) == 0
    finally:
        worker.kill()
    # Then every line it wrote is a JSON record, DEBUG ones included, and the ready and stop lines are there
    records = [json.loads(line) for line in worker.log().splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert any(r["level"] == "DEBUG" and "refused" in r["message"] for r in records)
    messages = " ".join(r["message"] for r in records)
    assert "worker ready:" in messages and "worker stopped:" in messages
