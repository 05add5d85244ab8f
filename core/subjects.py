"""Subject, stream and consumer names (the wire contract of DESIGN.md), in one place.

A symbol becomes a subject token through :func:`symbol_token` only: symbols may hold characters a NATS
token cannot (``BRK.B`` has a dot, which would make two tokens; ``*`` and ``>`` are wildcards), so those,
``%`` itself and anything outside printable ASCII are written as ``%XX`` per UTF-8 byte (``BRK.B`` ->
``BRK%2EB``). Every other symbol is its own token, so ``analytics.pnl.BTCUSD`` stays as it was. The
mapping is injective and :func:`symbol_from_token` inverts it.
"""

from __future__ import annotations

import re

__all__ = [
    "ANALYTICS_EXPORT",
    "ANALYTICS_GET",
    "ANALYTICS_PNL_PREFIX",
    "ANALYTICS_SERVICE",
    "H_ERROR",
    "H_ERROR_MESSAGE",
    "H_STREAM_SEQ",
    "H_SUBJECT",
    "H_TRUNCATED",
    "DLQ",
    "JS_CONSUMER",
    "JS_STREAM",
    "MODEL_INFO",
    "MODEL_QUALITY",
    "PREDICT",
    "PREDICTION",
    "PREDICTION_SHADOW",
    "QUEUE_GROUP",
    "SERVICE_NAME",
    "SNAPSHOT",
    "SNAPSHOT_WILDCARD",
    "analytics_pnl",
    "snapshot_for",
    "symbol_from_subject",
    "symbol_from_token",
    "symbol_token",
]

SNAPSHOT = "market.snapshot"
SNAPSHOT_WILDCARD = "market.snapshot.>"
PREDICTION = "ml.prediction"
PREDICTION_SHADOW = "ml.prediction.shadow"
DLQ = "ml.dlq.snapshot"
PREDICT = "ml.predict"
MODEL_INFO = "ml.model.info"
MODEL_QUALITY = "ml.model.quality"
"""Request-reply answered by every worker (no queue group): its live-quality figures (``spark-ml model compare``)."""
SERVICE_NAME = "spark-ml"
QUEUE_GROUP = "ml-workers"
JS_STREAM = "MARKET_SNAPSHOTS"
JS_CONSUMER = "ml-workers"
ANALYTICS_PNL_PREFIX = "analytics.pnl"
ANALYTICS_GET = "analytics.get"
ANALYTICS_EXPORT = "analytics.export"
ANALYTICS_SERVICE = "spark-ml-analytics"
"""The analytics query API's micro service name and queue group (only the active analytics instance serves it)."""

# Headers on dead letters.
H_ERROR = "Spark-Ml-Error"
H_ERROR_MESSAGE = "Spark-Ml-Error-Message"
H_SUBJECT = "Spark-Ml-Subject"
H_STREAM_SEQ = "Spark-Ml-Stream-Seq"
H_TRUNCATED = "Spark-Ml-Truncated"
"""On a dead letter whose payload was cut to fit the server's max_payload: the original size in bytes."""


_PLAIN = re.compile(r"[!-$&-)+-\-/-=?-~]+")
"""Characters a token carries as they are: printable ASCII but ``.``, ``*``, ``>`` and the escape ``%``."""
_ESCAPED = re.compile(r"(?:[!-$&-)+-\-/-=?-~]|%[0-9A-F]{2})+")


def symbol_token(symbol: str) -> str:
    """The one subject token of a symbol: itself when plain, else with ``%XX`` escapes (module docstring)."""
    if _PLAIN.fullmatch(symbol):
        return symbol
    return "".join(c if _PLAIN.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in symbol)


def symbol_from_token(token: str) -> str:
    """The symbol a subject token stands for: the inverse of :func:`symbol_token`.

    A token that is not one of its outputs (``A%B``, ``%41``) stands for itself, as before escapes existed.
    """
    if "%" not in token or not _ESCAPED.fullmatch(token):
        return token
    try:
        symbol = bytes(_unescape_bytes(token)).decode()
    except UnicodeDecodeError:
        return token
    return symbol if symbol_token(symbol) == token else token


def _unescape_bytes(token: str) -> bytearray:
    out = bytearray()
    i = 0
    while i < len(token):
        if token[i] == "%":
            out.append(int(token[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ord(token[i]))
            i += 1
    return out


def snapshot_for(symbol: str) -> str:
    """The per-symbol snapshot subject, ``market.snapshot.<SYMBOL>`` (the symbol as :func:`symbol_token`)."""
    return f"{SNAPSHOT}.{symbol_token(symbol)}"


def analytics_pnl(symbol: str) -> str:
    """The analytics subject of a symbol, ``analytics.pnl.<SYMBOL>`` (the symbol as :func:`symbol_token`)."""
    return f"{ANALYTICS_PNL_PREFIX}.{symbol_token(symbol)}"


def symbol_from_subject(subject: str) -> str | None:
    """The symbol of ``market.snapshot.<...>.<SYMBOL>`` (its last token, unescaped), or None for the bare subject."""
    if subject.startswith(SNAPSHOT) and len(subject) > len(SNAPSHOT) + 1:
        return symbol_from_token(subject.rsplit(".", 1)[1])
    return None
