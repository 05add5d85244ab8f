"""Subject, stream and consumer names (the wire contract of DESIGN.md), in one place."""

from __future__ import annotations

__all__ = [
    "ANALYTICS_PNL_PREFIX",
    "H_ERROR",
    "H_ERROR_MESSAGE",
    "H_STREAM_SEQ",
    "H_SUBJECT",
    "DLQ",
    "JS_CONSUMER",
    "JS_STREAM",
    "MODEL_INFO",
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
]

SNAPSHOT = "market.snapshot"
SNAPSHOT_WILDCARD = "market.snapshot.>"
PREDICTION = "ml.prediction"
PREDICTION_SHADOW = "ml.prediction.shadow"
DLQ = "ml.dlq.snapshot"
PREDICT = "ml.predict"
MODEL_INFO = "ml.model.info"
SERVICE_NAME = "spark-ml"
QUEUE_GROUP = "ml-workers"
JS_STREAM = "MARKET_SNAPSHOTS"
JS_CONSUMER = "ml-workers"
ANALYTICS_PNL_PREFIX = "analytics.pnl"

# Headers on dead letters.
H_ERROR = "Spark-Ml-Error"
H_ERROR_MESSAGE = "Spark-Ml-Error-Message"
H_SUBJECT = "Spark-Ml-Subject"
H_STREAM_SEQ = "Spark-Ml-Stream-Seq"


def snapshot_for(symbol: str) -> str:
    """The per-symbol snapshot subject, ``market.snapshot.<SYMBOL>``."""
    return f"{SNAPSHOT}.{symbol}"


def analytics_pnl(symbol: str) -> str:
    return f"{ANALYTICS_PNL_PREFIX}.{symbol}"


def symbol_from_subject(subject: str) -> str | None:
    """The last token of ``market.snapshot.<...>.<SYMBOL>``, or None for the bare subject."""
    if subject.startswith(SNAPSHOT) and len(subject) > len(SNAPSHOT) + 1:
        return subject.rsplit(".", 1)[1]
    return None
