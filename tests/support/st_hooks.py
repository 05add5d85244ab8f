"""schemathesis hooks: msgpack request bodies and responses (``SCHEMATHESIS_HOOKS=tests.support.st_hooks``)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import schemathesis

MSGPACK = "application/msgpack"
_INT_RANGE = (-(2**63), 2**64 - 1)


def _packable(value: Any) -> Any:
    """msgpack carries 64-bit integers only: a larger generated integer goes as the float nearest to it (inf
    beyond), the same number in the only form msgpack has, as a JSON client would send it."""
    if isinstance(value, dict):
        return {_packable(k): _packable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_packable(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
        try:
            return float(value)
        except OverflowError:
            return math.copysign(math.inf, value)
    return value


@schemathesis.serializer(MSGPACK)
def to_msgpack(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    packed: bytes = msgpack.packb(_packable(value), use_bin_type=True)
    return packed


@schemathesis.deserializer(MSGPACK)
def from_msgpack(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return msgpack.unpackb(response.content, raw=False, strict_map_key=False)
