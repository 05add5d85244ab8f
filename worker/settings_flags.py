"""Command-line flags generated from the Settings fields: one per setting that applies to a command.

Each flag's help is the field's docstring followed by its environment variable, default and choices, so
``spark-ml <command> --help`` documents every setting the command reads. Which commands read a setting is
decided here (:func:`commands_of`); a new setting applies to ``up`` and ``worker`` until it is placed
elsewhere. Secrets (the API key, the NATS password and token) get no flag, since a command line is visible to
every user of the machine: their environment variables and ``*_FILE`` flags are listed instead.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from spark_ml.worker.settings import Settings

__all__ = ["COMMANDS", "SECRET_ONLY_ENV", "add_settings_flags", "commands_of", "env_var", "overrides"]

COMMANDS = ("up", "worker", "gateway", "analytics", "replay", "tail")
"""The subcommands that build a Settings object from flags and the environment."""
_SERVICES = ("up", "worker", "gateway", "analytics")
_STREAM = ("up", "worker")

SECRET_ONLY_ENV = frozenset({"api_key", "nats_password", "nats_token"})
"""Settings read only from the environment (or their ``*_FILE`` flag), never from a flag."""

_GATEWAY = frozenset({"http_port", "api_key", "api_key_file", "rate_limit", "request_timeout_s", "http_read_timeout_s"})
_EXPLICIT: dict[str, tuple[str, ...]] = {
    "bind_host": ("up", "worker", "gateway"),
    "metrics_port": _STREAM,
    "max_payload": ("up", "worker", "gateway"),
    "partitions": ("up", "worker", "gateway"),
    "drain_timeout_s": _SERVICES,
    "member_ttl_s": ("up", "worker", "analytics"),
    "checkpoint_s": ("up", "worker", "analytics"),
    "js_replicas": ("up", "worker", "analytics"),
    "max_symbols": ("up", "worker", "analytics"),
    "solo": ("up", "worker", "analytics"),
    "output_encoding": ("up", "worker", "analytics"),
    "tracing": ("up", "worker", "gateway"),
    "otel_sdk_disabled": ("up", "worker", "gateway"),
    "otel_traces_exporter": ("up", "worker", "gateway"),
}
_PARTITIONS = frozenset({"partitions", "member_ttl_s", "pin_ttl_s", "checkpoint_s", "solo"})
_DELIVERY = frozenset({"mode", "ack_wait_s", "max_deliver"})


def commands_of(name: str) -> tuple[str, ...]:
    """The subcommands whose behaviour setting ``name`` changes."""
    if name.startswith(("nats_", "log_")):
        return COMMANDS
    if name.startswith("analytics_"):
        return ("up", "analytics")
    if name in _GATEWAY:
        return ("up", "gateway")
    return _EXPLICIT.get(name, _STREAM)


def env_var(name: str) -> str:
    """``SPARK_ML_<NAME>``, or the standard variable a setting reads instead (``OTEL_SDK_DISABLED``)."""
    field = Settings.model_fields.get(name)
    alias = field.validation_alias if field is not None else None
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"SPARK_ML_{name.upper()}"


def _group_of(name: str) -> str:
    if name.startswith("nats_"):
        return "NATS connection"
    if name.startswith("log_"):
        return "logs"
    if name.startswith("analytics_"):
        return "live analytics"
    if name.startswith("live_quality"):
        return "live model quality"
    if name == "tracing" or name.startswith("otel_"):
        return "tracing (OpenTelemetry)"
    if name in _GATEWAY:
        return "HTTP gateway"
    if name in _PARTITIONS:
        return "partitions (docs/SCALEOUT.md)"
    if name in _DELIVERY or name.startswith("js_"):
        return "delivery: core or JetStream"
    return "worker"


def _choices(annotation: Any) -> tuple[str, ...] | None:
    if typing.get_origin(annotation) is Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    return None


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == () or value == "":
        return "unset"
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _metavar(name: str, annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is Path:
        return "PATH"
    if typing.get_origin(annotation) is tuple:
        return "S,S,..."
    if annotation in (int, float):
        return "N"
    return name.rsplit("_", 1)[-1].upper()


def _help(name: str, field: FieldInfo, choices: tuple[str, ...] | None) -> str:
    text = " ".join((field.description or name).split("\n\n")[0].split()).replace("``", "")
    extra = f"env {env_var(name)}; default {_default(field)}"
    if choices:
        extra += f"; one of {', '.join(choices)}"
    return f"{text} [{extra}]".replace("%", "%%")


def add_settings_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add to ``parser`` one flag per setting ``command`` reads (dest ``s_<field>``, default None: unset flags
    leave the environment's value), grouped by topic; secrets without a flag are named in their group."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    secret_env: dict[str, list[str]] = {}
    for name, field in Settings.model_fields.items():
        if command not in commands_of(name):
            continue
        title = _group_of(name)
        if name in SECRET_ONLY_ENV:
            secret_env.setdefault(title, []).append(f"{env_var(name)} (or {env_var(name)}_FILE)")
            continue
        group = groups.get(title)
        if group is None:
            group = groups[title] = parser.add_argument_group(f"settings: {title}")
        flag = "--" + name.replace("_", "-")
        choices = _choices(field.annotation)
        if _is_bool(field.annotation):
            group.add_argument(
                flag,
                dest=f"s_{name}",
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(name, field, None),
            )
        else:
            group.add_argument(
                flag,
                dest=f"s_{name}",
                default=None,
                choices=choices,
                metavar=None if choices else _metavar(name, field.annotation),
                help=_help(name, field, choices),
            )
    for title, names in secret_env.items():
        group = groups.get(title) or parser.add_argument_group(f"settings: {title}")
        group.description = (
            f"Secrets from the environment only (a command line is visible to every user): {', '.join(names)}."
        )


def overrides(args: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The settings given as flags (``s_<field>`` that are not None), for ``Settings(**overrides)``."""
    items = vars(args).items() if isinstance(args, argparse.Namespace) else args.items()
    return {k[2:]: v for k, v in items if k.startswith("s_") and v is not None}
