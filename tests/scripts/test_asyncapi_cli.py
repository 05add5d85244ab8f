"""``spark-ml asyncapi`` as a user runs it: the document on stdout or in a file, valid; bad input exits 2."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from jsonschema import Draft7Validator

from tests.core.test_asyncapi import OFFICIAL
from tests.support.processes import base_env, spark_ml


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [spark_ml(), "asyncapi", *args], env={**base_env(), **env}, capture_output=True, text=True, timeout=60
    )


def test_prints_a_valid_document_for_the_settings(tmp_path: Path) -> None:
    # Given settings in the environment, When the command runs
    done = run(SPARK_ML_PARTITIONS="4", SPARK_ML_NATS_URL="nats://user:pw@10.1.2.3:4222")
    # Then stdout is the document: valid, with the settings' partitions and server, no credentials
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert not list(Draft7Validator(json.loads(OFFICIAL.read_text())).iter_errors(doc))
    assert doc["channels"]["predictPartition"]["parameters"]["partition"]["enum"] == ["0", "1", "2", "3"]
    assert doc["servers"]["nats"]["host"] == "10.1.2.3:4222" and "pw" not in done.stdout
    # And --output writes the same document to a file
    out = tmp_path / "specs" / "asyncapi.json"
    done = run("--output", str(out), SPARK_ML_PARTITIONS="4", SPARK_ML_NATS_URL="nats://user:pw@10.1.2.3:4222")
    assert done.returncode == 0 and json.loads(out.read_text()) == doc


def test_refusals_exit_2_with_one_line() -> None:
    done = run("--partitions", "0")
    assert done.returncode == 2 and done.stderr == "spark-ml asyncapi: error: partitions must be >= 1, got 0\n"
    done = run(SPARK_ML_PARTITIONS="many")
    assert done.returncode == 2 and done.stderr.startswith("spark-ml asyncapi: error: ") and done.stdout == ""
