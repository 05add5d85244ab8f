"""Checkpoints of feature state: the per-symbol states of a partition and the stream sequence they cover.

Bytes in, bytes out (msgpack), no I/O: the worker stores them in the ``spark-ml-state`` KV bucket and a
partition's new owner restores them (docs/SCALEOUT.md). The layout of each state is
:mod:`~spark_ml.core.features.layout`, which the C kernel and the Python twin share, so a checkpoint written
by one is read by the other.

Format (a msgpack map): ``{"v": CHECKPOINT_VERSION, "layout": STATE_VERSION, "seq": int, "states":
{symbol: [field, ...]}}``. Floats are written as 8-byte doubles, so a state comes back bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from spark_ml.core.errors import InvalidInput
from spark_ml.core.features.layout import STATE_VERSION, StateTuple, check_state

__all__ = ["CHECKPOINT_VERSION", "decode_checkpoint", "encode_checkpoint"]

CHECKPOINT_VERSION = 1
"""Version of the checkpoint envelope (the states' own layout has :data:`STATE_VERSION`)."""

_U64 = 2**64


def encode_checkpoint(seq: int, states: Mapping[str, Sequence[Any]]) -> bytes:
    """The checkpoint of ``states`` (symbol -> state in the portable layout) covering stream sequence ``seq``.

    ``seq`` is the last stream sequence folded into the states (0 when none, or in core mode).
    """
    if not 0 <= seq < _U64:
        raise ValueError(f"checkpoint sequence out of range: {seq}")
    body = {"v": CHECKPOINT_VERSION, "layout": STATE_VERSION, "seq": seq, "states": dict(states)}
    packed: bytes = msgpack.packb(body, use_bin_type=True, use_single_float=False)
    return packed


def decode_checkpoint(data: bytes) -> tuple[int, dict[str, StateTuple]]:
    """``(seq, states)`` of a checkpoint; InvalidInput (code ``checkpoint``) when ``data`` is not one of ours."""
    try:
        body = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several types for garbage (ExtraData, ValueError, TypeError...)
        raise InvalidInput(f"checkpoint: not msgpack ({type(exc).__name__})", code="checkpoint") from None
    if not isinstance(body, dict):
        raise InvalidInput("checkpoint: not a map", code="checkpoint")
    if body.get("v") != CHECKPOINT_VERSION or body.get("layout") != STATE_VERSION:
        raise InvalidInput(
            f"checkpoint: version {body.get('v')!r}, layout {body.get('layout')!r} "
            f"(this worker reads {CHECKPOINT_VERSION}, {STATE_VERSION})",
            code="checkpoint",
        )
    seq, raw_states = body.get("seq"), body.get("states")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < _U64:
        raise InvalidInput("checkpoint: seq is not a stream sequence", code="checkpoint")
    if not isinstance(raw_states, dict):
        raise InvalidInput("checkpoint: states is not a map", code="checkpoint")
    states: dict[str, StateTuple] = {}
    for symbol, state in raw_states.items():
        if not isinstance(symbol, str):
            raise InvalidInput("checkpoint: a symbol is not a string", code="checkpoint")
        try:
            states[symbol] = check_state(state)
        except ValueError as exc:
            raise InvalidInput(f"checkpoint: {symbol[:64]!r}: {exc}", code="checkpoint") from None
    return seq, states
