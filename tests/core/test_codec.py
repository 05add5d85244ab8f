"""The hot-path codec against its reference, the pydantic contract, plus round trips and error shapes."""

from __future__ import annotations

import json
import math
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from spark_ml.core.codec import Snapshot, SnapshotParser, decode, encode, prediction_wire, snapshot_from_mapping
from spark_ml.core.contracts import ErrorReply, MarketSnapshot, Prediction, PredictRequest
from spark_ml.core.errors import InvalidInput, PayloadTooLarge
from spark_ml.core.subjects import symbol_from_subject, symbol_from_token
from tests.support.messages import snapshot_accepted

SEED = {"ts": 1696723200000, "mid": 45000, "spreadBp": 2, "vol1m": 1000000, "rsi14": 55}

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
)
fields = st.fixed_dictionaries(
    {},
    optional={
        "ts": st.one_of(
            st.integers(min_value=-(2**60), max_value=2**60), st.floats(), st.booleans(), st.text(max_size=3)
        ),
        "mid": numbers,
        "spreadBp": numbers,
        "vol1m": numbers,
        "rsi14": numbers,
        "bid": numbers,
        "ask": numbers,
        "volume": numbers,
        "symbol": st.one_of(st.text(max_size=70), st.integers(), st.none()),
        "other": st.integers(),
    },
)


def _reference_accepts(d: dict[str, Any]) -> bool:
    try:
        MarketSnapshot.model_validate(d)
    except ValidationError:
        return False
    return True


@given(fields)
def test_fast_validator_agrees_with_pydantic_contract(d: dict[str, Any]) -> None:
    assert snapshot_accepted(d) == _reference_accepts(d), d


@given(fields)
def test_accepted_snapshots_match_contract_values(d: dict[str, Any]) -> None:
    if not _reference_accepts(d):
        return
    ref = MarketSnapshot.model_validate(d)
    snap = snapshot_from_mapping(d, subject_symbol="SUBJ")
    assert snap.ts == ref.ts and snap.mid == ref.mid
    assert snap.symbol == (ref.symbol or "SUBJ")
    assert snap.spread_bp == ref.spread_bp and snap.rsi14 == ref.rsi14
    assert snap.vol1m == (ref.vol1m if ref.vol1m is not None else ref.volume)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_invalid_input(raw: bytes) -> None:
    try:
        data, enc = decode(raw)
        snapshot_from_mapping(data, raw=raw, encoding=enc)
    except InvalidInput as exc:
        assert exc.raw == raw
        assert exc.code in ("decode", "schema")


def test_seed_example_in_both_encodings() -> None:
    for raw in (msgpack.packb(SEED), json.dumps(SEED).encode()):
        data, enc = decode(raw)
        snap = snapshot_from_mapping(data, raw=raw, encoding=enc)
        assert (snap.ts, snap.mid, snap.symbol, snap.spread_bp, snap.vol1m, snap.rsi14) == (
            1696723200000,
            45000.0,
            "_",
            2.0,
            1e6,
            55.0,
        )
        assert enc == ("json" if raw[:1] == b"{" else "msgpack")
    assert MarketSnapshot.model_validate(SEED).spread_bp == 2.0
    assert PredictRequest.model_validate({"snapshot": SEED}).snapshot.rsi14 == 55


def test_symbol_resolution_order() -> None:
    assert snapshot_from_mapping({**SEED, "symbol": "X"}, subject_symbol="Y").symbol == "X"
    assert snapshot_from_mapping(SEED, subject_symbol="Y").symbol == "Y"
    assert snapshot_from_mapping(SEED).symbol == "_"


def test_content_type_header_selects_json() -> None:
    assert decode(b'{"ts": 1, "mid": 2}', content_type="application/json")[1] == "json"
    with pytest.raises(InvalidInput) as err:
        decode(msgpack.packb(SEED), content_type="application/json")
    assert err.value.code == "decode"


def test_oversized_payload() -> None:
    raw = b"{" + b" " * 100
    with pytest.raises(PayloadTooLarge) as err:
        decode(raw, max_bytes=50)
    assert err.value.status == 413 and err.value.raw == raw


def test_deeply_nested_payload_is_invalid_not_a_crash() -> None:
    for raw in (b"[" * 5000 + b"]" * 5000, b"\x91" * 5000 + b"\x00"):
        try:
            data, _ = decode(raw, max_bytes=1 << 20)
        except InvalidInput:
            continue
        with pytest.raises(InvalidInput):
            snapshot_from_mapping(data)


@given(st.floats(min_value=0, max_value=1), st.sampled_from(["msgpack", "json"]))
def test_prediction_round_trip(score: float, encoding: str) -> None:
    snap = snapshot_from_mapping(SEED)
    wire = prediction_wire(snap, score, "hold", abs(score - 0.5) * 2, "baseline", ["a", "b"], [1.0, -2.5], 0.3)
    back, _ = decode(encode(wire, encoding))  # type: ignore[arg-type]
    pred = Prediction.model_validate(back)
    assert pred.score == score and pred.features == {"a": 1.0, "b": -2.5} and pred.model_version == "baseline"


def test_json_encoding_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode({"x": math.nan}, "json")


def test_error_reply_shape() -> None:
    assert ErrorReply.of("schema", "mid: must be finite").wire() == {
        "error": {"code": "schema", "message": "mid: must be finite"}
    }


def _outcome(fn: Any) -> tuple[Any, ...]:
    try:
        s = fn()
    except InvalidInput as exc:
        return ("error", exc.code, exc.message, exc.raw)
    return ("ok", s.ts, s.mid, s.symbol, s.spread_bp, s.vol1m, s.rsi14, s.encoding, s.raw, s.subject)


@given(
    fields,
    st.sampled_from(["msgpack", "json", "garbage"]),
    st.sampled_from(
        [
            "market.snapshot",
            "market.snapshot.EURUSD",
            "market.snapshot.x.BTC",
            "market.snapshot.\x01",
            "market.snapshot.x.",
        ]
    ),
    st.sampled_from([None, "application/json", "application/msgpack"]),
)
def test_one_step_parser_matches_decode_then_validate(
    d: dict[str, Any], how: str, subject: str, content_type: str | None
) -> None:
    try:
        raw = json.dumps(d).encode() if how == "json" else msgpack.packb(d)
    except (TypeError, ValueError, OverflowError):  # not representable in that encoding
        return
    if how == "garbage":
        raw = raw[1:] or b"\xc1"
    parser = SnapshotParser(max_bytes=4096)

    def reference() -> Snapshot:
        data, enc = decode(raw, content_type=content_type, max_bytes=4096)
        return snapshot_from_mapping(
            data, subject_symbol=symbol_from_subject(subject), raw=raw, encoding=enc, subject=subject
        )

    want = _outcome(reference)
    assert _outcome(lambda: parser.parse(raw, subject, content_type, 0.0)) == want
    # the second time goes through the symbol and subject caches
    assert _outcome(lambda: parser.parse(raw, subject, content_type, 0.0)) == want


def test_one_step_parser_refuses_what_decode_refuses() -> None:
    parser = SnapshotParser(max_bytes=64)
    for raw in (b"", b"x" * 65, b"\xc1", b"{", b"[1]"):
        with pytest.raises(InvalidInput) as exc:
            parser.parse(raw, "market.snapshot", None, 0.0)
        assert exc.value.raw == raw


@given(
    st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=80),
        st.text(st.sampled_from("A%2E7F0C"), max_size=12),  # escapes, canonical or not
    ).filter(lambda t: "." not in t)
)
def test_a_subject_token_passes_the_payload_symbol_rule(token: str) -> None:
    # Given a snapshot without a symbol, on market.snapshot.<token>
    raw = msgpack.packb({"ts": 1, "mid": 1.0})
    subject = f"market.snapshot.x.{token}"
    # When the contract judges the symbol the token stands for (%XX-unescaped) as a payload symbol
    symbol = symbol_from_token(token)
    try:
        MarketSnapshot.model_validate({"ts": 1, "mid": 1.0, "symbol": symbol})
        accepted = True
    except ValidationError:
        accepted = False
    # Then the parser and the reference take it as the symbol exactly when the contract would, else refuse it
    parser = SnapshotParser()
    for _ in range(2):  # the second time through the subject cache
        outcome = _outcome(lambda: parser.parse(raw, subject, None, 0.0))
        assert outcome[:4] == ("ok", 1, 1.0, symbol) if accepted else outcome[:2] == ("error", "schema"), outcome
    ref = _outcome(lambda: snapshot_from_mapping({"ts": 1, "mid": 1.0}, subject_symbol=symbol, raw=raw))
    assert ref[0] == ("ok" if accepted else "error")


@pytest.mark.parametrize("token", ["CTRL\x07", "A" * 300, "x.", "A\u2028B", "%07", "A%20B"])
def test_hostile_subject_tokens_are_schema_refusals_with_the_raw_payload(token: str) -> None:
    raw = msgpack.packb({"ts": 1, "mid": 1.0})
    parser = SnapshotParser()
    for _ in range(2):  # a refusal is never cached as a symbol
        with pytest.raises(InvalidInput) as exc:
            parser.parse(raw, f"market.snapshot.{token}", None, 0.0)
        assert exc.value.code == "schema" and exc.value.raw == raw and "subject" in exc.value.message
    assert parser.parse(raw, "market.snapshot.OK", None, 0.0).symbol == "OK"


def test_an_escaped_subject_token_is_read_as_the_symbol_it_stands_for() -> None:
    parser = SnapshotParser()
    raw = msgpack.packb({"ts": 1, "mid": 1.0})
    assert parser.parse(raw, "market.snapshot.BRK%2EB", None, 0.0).symbol == "BRK.B"
    assert (
        snapshot_from_mapping(
            {"ts": 1, "mid": 1.0}, subject_symbol=symbol_from_subject("market.snapshot.BRK%2EB")
        ).symbol
        == "BRK.B"
    )
