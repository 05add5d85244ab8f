"""The portable layout of one symbol's feature state: what a checkpoint holds and a new owner restores.

The C kernel (``_featkernel.SymbolState``) and the Python :class:`~spark_ml.core.features.fast.SymbolState`
both write it with ``to_state()`` and read it with ``SymbolState.from_state(...)``, so either reads the other's
state and carries on with the same numbers bit for bit (tests/core/test_featstate.py). A plain tuple of
numbers in the order of :data:`STATE_FIELDS`:

- ``logs``: log of the last ``min(n, 5)`` mids, oldest first;
- ``r_vals``, ``r_i``, ``r_ref``, ``r_s``, ``r_sq``: the returns window (it holds the returns after the first
  mid): its 20 slots, its next slot ``max(n - 1, 0) % 20``, its reference value, and the sum and the sum of
  squares of its values minus the reference;
- ``b_vals``, ``b_i``, ``b_ref``, ``b_s``, ``b_sq``: the same for the Bollinger window of mids (next slot
  ``n % 20``);
- ``up``, ``dn``: Wilder's average gain and loss; ``last``: the last mid;
- ``fast``, ``slow``, ``signal``: the MACD averages and its signal line;
- ``last_ts``: ts of the last snapshot folded in (-1 before the first); ``n``: snapshots folded in.

Floats are IEEE doubles as they are (``-0.0`` and NaN included); ``r_i``, ``b_i``, ``last_ts`` and ``n`` are
integers (``last_ts`` and ``n`` fit in 64 bits). Sequences may come back as lists (msgpack); both readers
accept them. A new field means a new :data:`STATE_VERSION`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["LOGS", "STATE_FIELDS", "STATE_VERSION", "WINDOW", "StateTuple", "check_state"]

STATE_VERSION = 1
"""Version of :data:`STATE_FIELDS`; checkpoints carry it."""
WINDOW = 20
"""Slots of each rolling window (returns volatility, Bollinger bands)."""
LOGS = 5
"""Log mids kept for the 5-step return."""
STATE_FIELDS: tuple[str, ...] = (
    "logs",
    "r_vals",
    "r_i",
    "r_ref",
    "r_s",
    "r_sq",
    "b_vals",
    "b_i",
    "b_ref",
    "b_s",
    "b_sq",
    "up",
    "dn",
    "last",
    "fast",
    "slow",
    "signal",
    "last_ts",
    "n",
)

StateTuple = tuple[Any, ...]
"""A state in the layout of :data:`STATE_FIELDS`."""

_INT64 = 2**63


def _float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise ValueError(f"feature state: {name} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"feature state: {name} is out of range") from None


def _int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"feature state: {name} is not an integer")
    if not low <= value < high:
        raise ValueError(f"feature state: {name} is out of range")
    return int(value)


def _floats(value: object, name: str, size: int | None) -> tuple[float, ...]:
    if not isinstance(value, tuple | list):
        raise ValueError(f"feature state: {name} is not a sequence")
    if size is not None and len(value) != size:
        raise ValueError(f"feature state: {name} holds {len(value)} values, not {size}")
    return tuple(_float(v, name) for v in value)


def check_state(state: Sequence[Any]) -> StateTuple:
    """``state`` as a tuple in the layout (nested sequences as tuples, numbers as float or int), or ValueError.

    Checks what the kernels rely on: the sizes, the types, and that the window slots and the number of logs
    agree with ``n`` (so a restored state updates exactly as the one that wrote it would have).
    """
    if not isinstance(state, tuple | list) or len(state) != len(STATE_FIELDS):
        raise ValueError(f"feature state: not a sequence of {len(STATE_FIELDS)} fields")
    n = _int(state[18], "n", 0, _INT64)
    last_ts = _int(state[17], "last_ts", -_INT64, _INT64)
    logs = _floats(state[0], "logs", None)
    if len(logs) != min(n, LOGS):
        raise ValueError(f"feature state: {len(logs)} logs for n={n}")
    r_i = _int(state[2], "r_i", 0, WINDOW)
    b_i = _int(state[7], "b_i", 0, WINDOW)
    if r_i != max(n - 1, 0) % WINDOW or b_i != n % WINDOW:
        raise ValueError(f"feature state: window slots {r_i}, {b_i} do not match n={n}")
    out: list[Any] = [logs, _floats(state[1], "r_vals", WINDOW), r_i]
    out += [_float(state[k], STATE_FIELDS[k]) for k in (3, 4, 5)]
    out += [_floats(state[6], "b_vals", WINDOW), b_i]
    out += [_float(state[k], STATE_FIELDS[k]) for k in range(8, 17)]
    out += [last_ts, n]
    return tuple(out)
