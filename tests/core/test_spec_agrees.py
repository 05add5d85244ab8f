"""The published MarketSnapshot schema (AsyncAPI, OpenAPI, micro metadata) agrees with what the workers accept:
over arbitrary snapshot-shaped data, the JSON Schema and :func:`spark_ml.core.codec.snapshot_from_mapping` (the
reference of the stream's decode path) accept and refuse the same inputs.

Left out, as no JSON document can carry them: NaN and infinities (msgpack can; the workers refuse them, and the
schemas say "finite" in words) and integers past 1e300 (the workers take them as infinite). Symbols are drawn from
Latin-1, where the schema's pattern is exact (see ``SYMBOL_SCHEMA``).
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from spark_ml.core.contracts import MarketSnapshot
from tests.support.messages import snapshot_accepted

SCHEMA = Draft202012Validator(MarketSnapshot.model_json_schema(by_alias=True, mode="validation"))

_numbers = st.one_of(
    st.integers(min_value=-(10**20), max_value=2**60),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.0, -0.0, 2**53, 2**53 + 1, 100, 100.5, 5e-324]),
)
_latin1 = st.characters(max_codepoint=0xFF)
_values = st.one_of(
    _numbers, st.none(), st.booleans(), st.text(_latin1, max_size=3), st.lists(st.integers(), max_size=2)
)
_symbols = st.one_of(st.text(alphabet=_latin1, min_size=0, max_size=66), _values)
_snapshots = st.fixed_dictionaries(
    {},
    optional={
        "ts": _values,
        "mid": _values,
        "symbol": _symbols,
        "spreadBp": _values,
        "vol1m": _values,
        "rsi14": _values,
        "bid": _values,
        "ask": _values,
        "volume": _values,
        "extra": _values,
    },
)
_near_valid = st.builds(
    lambda base, extra: {**base, **extra},
    st.fixed_dictionaries({"ts": st.integers(min_value=-5, max_value=2**53 + 5), "mid": _numbers}),
    _snapshots,
)


@given(st.one_of(_snapshots, _near_valid))
def test_the_schema_accepts_what_the_workers_accept(data: dict[str, Any]) -> None:
    assert SCHEMA.is_valid(data) == snapshot_accepted(data), (data, [e.message for e in SCHEMA.iter_errors(data)])
