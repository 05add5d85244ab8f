"""``spark-ml`` flags, generated from the Settings fields: every setting reachable, each flag's help naming its
environment variable and default, only the settings a command reads, ``--version``, and flags over the
environment."""

from __future__ import annotations

import argparse
import os
import subprocess
from importlib import metadata

import pytest

from spark_ml.worker.cli import _settings, build_parser
from spark_ml.worker.settings import Settings
from spark_ml.worker.settings_flags import COMMANDS, SECRET_ONLY_ENV, commands_of, env_var
from tests.support.processes import base_env, spark_ml


def _help(*args: str) -> str:
    env = {**base_env(), "COLUMNS": "200"}
    result = subprocess.run([spark_ml(), *args, "--help"], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: argparse.ArgumentParser = sub.choices[command]
    return found


def test_top_level_help_names_every_setting_and_the_secret_files() -> None:
    text = _help()
    for name in Settings.model_fields:
        assert env_var(name) in text, name
    for secret in ("API_KEY", "NATS_PASSWORD", "NATS_TOKEN", "NATS_CREDS"):
        assert f"SPARK_ML_{secret}_FILE" in text
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_names_exactly_the_settings_it_reads(command: str) -> None:
    text = _help(command)
    for name in Settings.model_fields:
        mentioned = f"{env_var(name)};" in text or f"{env_var(name)} " in text or f"{env_var(name)}," in text
        applies = command in commands_of(name)
        assert mentioned == applies, f"{command}: {env_var(name)} mentioned={mentioned}, applies={applies}"
        flag = "--" + name.replace("_", "-")
        assert ((flag + " ") in text or (flag + "\n") in text) == (applies and name not in SECRET_ONLY_ENV), flag


@pytest.mark.parametrize("command", COMMANDS)
def test_every_settings_flag_says_its_variable_and_default(command: str) -> None:
    flags = [a for a in _subparser(command)._actions if a.dest.startswith("s_")]
    assert flags
    for action in flags:
        name = action.dest[2:]
        assert action.help and f"env {env_var(name)}; default " in action.help, action.option_strings
        if action.choices:
            assert "one of " + ", ".join(map(str, action.choices)) in action.help


def test_replay_and_tail_offer_only_connection_and_log_settings() -> None:
    for command in ("replay", "tail"):
        names = {a.dest[2:] for a in _subparser(command)._actions if a.dest.startswith("s_")}
        assert names and all(n.startswith(("nats_", "log_")) for n in names), sorted(names)


def test_version() -> None:
    result = subprocess.run([spark_ml(), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert result.stdout.strip() == f"spark-ml {metadata.version('spark-ml')}"


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPARK_ML_BATCH_MAX", "9")
    monkeypatch.setenv("SPARK_ML_SOLO", "true")
    monkeypatch.setenv("SPARK_ML_MODE", "jetstream")
    args = build_parser().parse_args(["worker", "--batch-max", "7", "--no-solo", "--js-backoff-s", "1,2.5"])
    settings = _settings(args)
    assert (settings.batch_max, settings.solo, settings.mode) == (7, False, "jetstream")
    assert settings.js_backoff_s == (1.0, 2.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--mode", "kafka"])  # choices are checked by the parser


def test_an_invalid_flag_value_exits_2_naming_the_setting() -> None:
    result = subprocess.run(
        [spark_ml(), "worker", "--batch-max", "0"], capture_output=True, text=True, env=base_env(), timeout=60
    )
    assert result.returncode == 2
    assert "invalid setting batch_max" in result.stderr


def test_secrets_have_no_flag_anywhere() -> None:
    for command in COMMANDS:
        options = {o for a in _subparser(command)._actions for o in a.option_strings}
        assert not {"--api-key", "--nats-password", "--nats-token"} & options, command


def test_worker_processes_get_the_secret_read_once_not_both_spellings(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    # Given a worker told its NATS password by a file (`spark-ml worker --procs N` hands settings to children)
    from spark_ml.worker.run import _env_for

    secret = tmp_path / "nats-password"
    secret.write_text("pw-from-file\n")
    monkeypatch.setenv("SPARK_ML_NATS_PASSWORD_FILE", str(secret))
    settings = Settings()
    # When the children's environment is made
    env = _env_for(settings, metrics_port=0)
    # Then it carries the password once (not also the file variable, which a child would refuse beside it),
    # and a child's settings read from it hold the same secret
    assert "SPARK_ML_NATS_PASSWORD_FILE" not in env and env["SPARK_ML_NATS_PASSWORD"] == "pw-from-file"
    for key in [k for k in os.environ if k.startswith("SPARK_ML_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("SPARK_ML_"):
            monkeypatch.setenv(key, value)
    child = Settings()
    assert child.nats_password is not None and child.nats_password.get_secret_value() == "pw-from-file"
