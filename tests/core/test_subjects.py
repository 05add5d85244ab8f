"""Symbols as subject tokens: every symbol the stream accepts maps to one valid, non-wildcard token."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spark_ml.core import subjects
from spark_ml.core.contracts import SYMBOL_MAX_LEN, valid_symbol

symbols = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=SYMBOL_MAX_LEN).filter(valid_symbol)
TOKEN = re.compile(r"[!-~]+")
"""A literal NATS token: printable ASCII, no space, and (checked apart) no dot and no wildcard."""


def assert_literal_token(token: str) -> None:
    assert TOKEN.fullmatch(token) and "." not in token and "*" not in token and ">" not in token, token


@given(symbols)
def test_every_accepted_symbol_is_one_valid_literal_token_and_comes_back(symbol: str) -> None:
    token = subjects.symbol_token(symbol)
    assert_literal_token(token)
    assert subjects.symbol_from_token(token) == symbol  # hence injective
    for subject in (subjects.analytics_pnl(symbol), subjects.snapshot_for(symbol)):
        assert subject.rsplit(".", 1) == [subject[: -len(token) - 1], token]
        assert subject.count(".") == 2
    assert subjects.symbol_from_subject(subjects.snapshot_for(symbol)) == symbol


@given(symbols, symbols)
def test_distinct_symbols_get_distinct_tokens(a: str, b: str) -> None:
    assert (subjects.symbol_token(a) == subjects.symbol_token(b)) == (a == b)


@pytest.mark.parametrize(
    ("symbol", "token"),
    [
        ("BTCUSD", "BTCUSD"),
        ("E1-S2_x", "E1-S2_x"),
        ("BRK.B", "BRK%2EB"),
        ("*", "%2A"),
        (">", "%3E"),
        ("a.*>", "a%2E%2A%3E"),
        ("100%", "100%25"),
        ("€", "%E2%82%AC"),
    ],
)
def test_plain_symbols_are_their_own_token_and_others_are_escaped(symbol: str, token: str) -> None:
    assert subjects.symbol_token(symbol) == token
    assert subjects.analytics_pnl(symbol) == f"analytics.pnl.{token}"


@pytest.mark.parametrize("token", ["A%B", "%41", "%2e", "%FF", "%", "x%2"])
def test_a_token_that_no_symbol_maps_to_stands_for_itself(token: str) -> None:
    assert subjects.symbol_from_token(token) == token
