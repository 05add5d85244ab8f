"""Logging configuration (one dictConfig factory): one line per event, %-style arguments, to stderr.

``SPARK_ML_LOG_LEVEL`` (``--log-level``) sets the level of spark-ml's loggers; ``SPARK_ML_LOG_FORMAT=json``
(``--log-format json``) writes each record as one JSON object per line for log shippers (Loki, Elasticsearch,
CloudWatch): ``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message`` (arguments already
merged), ``process``, and ``exc`` with the traceback when there is one. The formatter is a few lines of the
standard library rather than a dependency of the runtime install.
"""

from __future__ import annotations

import json
import logging.config
from datetime import UTC, datetime
from typing import Any

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "JsonFormatter", "default_log_config", "setup_logging"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """One JSON object per record (no newline inside: tracebacks are escaped into ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def default_log_config(level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    """The dictConfig of every spark-ml process; ``fmt`` is ``text`` (one readable line) or ``json``."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json" if fmt == "json" else "line",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {
            "spark_ml": {"level": level},
            "nats": {"level": "WARNING"},
            "aiohttp.access": {"level": "WARNING"},
        },
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    logging.config.dictConfig(default_log_config(level.upper(), fmt))
