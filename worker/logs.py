"""Logging configuration (one dictConfig factory): one line per event, %-style arguments, to stderr."""

from __future__ import annotations

import logging.config
from typing import Any

__all__ = ["default_log_config", "setup_logging"]


def default_log_config(level: str = "INFO") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "line", "stream": "ext://sys.stderr"}},
        "loggers": {
            "spark_ml": {"level": level},
            "nats": {"level": "WARNING"},
            "aiohttp.access": {"level": "WARNING"},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def setup_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(default_log_config(level.upper()))
