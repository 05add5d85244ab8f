"""The benchmark's traffic: msgpack market snapshots, identical for every subject under test.

Every snapshot carries a unique ``ts`` (``ts0 + seq``): predictions echo it back, so the sink can match
each prediction with the moment its snapshot was sent, and ``ts`` keeps rising per symbol as the
streaming features require.
"""

from __future__ import annotations

import json

import msgpack

from spark_ml.scripts.harness.wire import hpub_frame, pub_frame

__all__ = [
    "SNAPSHOT_SUBJECT",
    "PREDICTION_SUBJECT",
    "SNAPSHOT_WILDCARD",
    "frames",
    "seq_of",
    "snapshot",
    "snapshot_subject",
    "symbol_of",
    "traceparent",
]

SNAPSHOT_SUBJECT = "market.snapshot"
SNAPSHOT_WILDCARD = "market.snapshot.>"
"""Every snapshot subject: the publisher sends on ``market.snapshot.<SYMBOL>`` as the README tells users to, so
a server with the partition mapping puts each symbol on its partition (and bare-subject forwarding stays out of
the figures)."""
PREDICTION_SUBJECT = "ml.prediction"
# Not imported from spark_ml.core.subjects on purpose: the instruments stay importable without the project's
# runtime (they start in a few tens of milliseconds, once per phase).


def symbol_of(seq: int, symbols: int) -> str:
    """The symbol of snapshot number ``seq``."""
    return f"SYM{seq % symbols}"


def snapshot(ts0: int, seq: int, symbols: int) -> bytes:
    """Snapshot number ``seq``: symbol ``SYM<seq mod symbols>``, a mid that wanders but stays positive."""
    return msgpack.packb(
        {
            "ts": ts0 + seq,
            "mid": 100.0 + ((seq * 7919) % 211) * 0.01,
            "spreadBp": 2.0,
            "vol1m": 1e6,
            "symbol": symbol_of(seq, symbols),
        }
    )


def snapshot_subject(seq: int, symbols: int) -> str:
    """Where snapshot number ``seq`` is published: ``market.snapshot.<SYMBOL>``."""
    return f"{SNAPSHOT_SUBJECT}.{symbol_of(seq, symbols)}"


def traceparent(seq: int) -> str:
    """A W3C ``traceparent`` of its own for snapshot number ``seq`` (trace id and parent span id from it)."""
    return f"00-{seq + 1:032x}-{seq + 1:016x}-01"


def frames(ts0: int, seq0: int, count: int, symbols: int, subject: str = "", traced: bool = False) -> list[bytes]:
    """``PUB`` commands for snapshots ``seq0 .. seq0+count-1``, built before any clock starts.

    Each on its symbol's subject (:func:`snapshot_subject`), or all on ``subject`` when one is given. With
    ``traced``, each is an ``HPUB`` carrying a ``traceparent`` of its own (:func:`traceparent`).
    """
    if traced:
        return [
            hpub_frame(
                subject or snapshot_subject(seq, symbols),
                {"traceparent": traceparent(seq)},
                snapshot(ts0, seq, symbols),
            )
            for seq in range(seq0, seq0 + count)
        ]
    return [
        pub_frame(subject or snapshot_subject(seq, symbols), snapshot(ts0, seq, symbols))
        for seq in range(seq0, seq0 + count)
    ]


def seq_of(payload: bytes, ts0: int) -> int:
    """The sequence number a prediction (or echoed snapshot) answers, from its ``ts``; -1 when unreadable."""
    try:
        obj = json.loads(payload) if payload[:1] == b"{" else msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException):
        return -1
    ts = obj.get("ts") if isinstance(obj, dict) else None
    return ts - ts0 if type(ts) is int else -1
