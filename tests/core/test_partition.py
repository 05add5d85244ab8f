"""core/partition.py: the server's own partition hash, and the assignment of units to workers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_ml.core.partition import (
    assign,
    fnv1a32,
    owner_map,
    part_filter,
    part_subject,
    partition_of,
    partition_of_subject,
    predict_part,
    published_subject,
    server_mappings,
    stream_transform,
    units,
)


def test_the_servers_own_vectors() -> None:
    # nats-server's subject_transform_test.go: partition(10, 1) of foo, baz, qux; partition(10) of foo.bar
    assert [partition_of(s, 10) for s in ("foo", "baz", "qux")] == [3, 0, 9]
    assert partition_of_subject("foo.bar", 10) == 6
    # FNV-1a 32 reference values (offset basis for nothing, then "a")
    assert fnv1a32(b"") == 0x811C9DC5
    assert fnv1a32(b"a") == 0xE40C292C
    # What a real 2.15 server stored for these (research notes, N=8)
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "AAPL", "MSFT", "EURUSD", "X", "BNB-USDT"]
    assert [partition_of(s, 8) for s in symbols] == [4, 0, 5, 3, 3, 1, 7, 0]


def test_a_symbol_is_hashed_as_its_subject_token() -> None:
    # BRK.B travels as the token BRK%2EB: that token is what the server hashes
    assert partition_of("BRK.B", 16) == fnv1a32(b"BRK%2EB") % 16
    assert (
        part_subject(partition_of("BRK.B", 16), "BRK.B") == f"market.snapshot.part.{partition_of('BRK.B', 16)}.BRK%2EB"
    )
    with pytest.raises(ValueError):
        partition_of("X", 0)


def test_subjects_and_mappings() -> None:
    assert units(16) == 17
    assert part_filter(3) == "market.snapshot.part.3.*"
    assert predict_part(12) == "ml.predict.part.12"
    assert server_mappings(16) == {
        "market.snapshot.*": "market.snapshot.part.{{partition(16,1)}}.{{wildcard(1)}}",
    }
    assert stream_transform(4) == {
        "src": "market.snapshot.*",
        "dest": "market.snapshot.part.{{partition(4,1)}}.{{wildcard(1)}}",
    }
    assert published_subject("market.snapshot.part.3.BTCUSD") == "market.snapshot.BTCUSD"
    for other in ("market.snapshot", "market.snapshot.X", "market.snapshot.part.x.Y", "market.snapshot.part.3", "a.b"):
        assert published_subject(other) == other


_members = st.lists(st.text(min_size=1, max_size=8), max_size=24)


@settings(max_examples=300, deadline=None)
@given(members=_members, n_units=st.integers(0, 70), seed=st.integers(0, 2**32))
def test_every_unit_has_exactly_one_owner_and_counts_differ_by_at_most_one(
    members: list[str], n_units: int, seed: int
) -> None:
    got = assign(members, n_units)
    if not members:
        assert got == {}
        return
    assert set(got) == set(members)
    owned = [u for us in got.values() for u in us]
    assert sorted(owned) == list(range(n_units))
    counts = [len(us) for us in got.values()]
    assert max(counts) - min(counts) <= 1
    assert all(us == sorted(us) for us in got.values())
    # Deterministic and independent of order and duplicates: every worker computes the same map
    shuffled = members + members[: len(members) // 2]
    random.Random(seed).shuffle(shuffled)
    assert assign(shuffled, n_units) == got
    assert owner_map(got) == {u: m for m in got for u in got[m]}


def _moved(before: dict[str, list[int]], after: dict[str, list[int]], n_units: int) -> int:
    a, b = owner_map(before), owner_map(after)
    return sum(a[u] != b[u] for u in range(n_units))


@settings(max_examples=300, deadline=None)
@given(
    members=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=24, unique=True), n_units=st.integers(1, 70)
)
def test_a_member_joining_or_leaving_moves_little_beyond_its_share(members: list[str], n_units: int) -> None:
    # The joiner must take its share; besides it, a few units change hands (cascades of the capacity changes),
    # never a reshuffle of everything. Measured over 60,000 random cases: at most a quarter of the units more,
    # plus 3. (A member leaving is the same pair of maps read backwards.)
    *old, joiner = members
    if not old:
        return
    before, after = assign(old, n_units), assign(members, n_units)
    must = len(after[joiner])
    assert must <= _moved(before, after, n_units) <= must + (n_units + 3) // 4 + 4


def test_on_average_a_join_moves_half_again_its_share_where_orbits_split_moves_four_times() -> None:
    # orbit.go's contiguous runs over the sorted members shift when a name sorts in between.
    def orbit(members: list[str], n_units: int) -> dict[int, str]:
        ms = sorted(set(members))[:n_units]
        per = n_units // len(ms)
        b = len(ms) * per
        return {i: ms[(i // per) % len(ms) if i < b else (i - b) % len(ms)] for i in range(n_units)}

    rng = random.Random(7)
    ours = theirs = minimum = 0
    for _ in range(600):
        n_units = rng.choice([9, 17, 33, 65])
        names = [f"worker-{rng.randrange(10**9)}" for _ in range(rng.randint(2, 12))]
        *old, joiner = names
        after = assign(names, n_units)
        minimum += len(after[joiner])
        ours += _moved(assign(old, n_units), after, n_units)
        o1, o2 = orbit(old, n_units), orbit(names, n_units)
        theirs += sum(o1[u] != o2[u] for u in range(n_units))
    assert ours <= 1.75 * minimum
    assert theirs >= 2 * ours


def test_more_members_than_units() -> None:
    got = assign([f"w{i}" for i in range(10)], 3)
    assert sorted(u for us in got.values() for u in us) == [0, 1, 2]
    assert sorted(len(us) for us in got.values()) == [0] * 7 + [1] * 3
    assert assign(["a", "b"], 0) == {"a": [], "b": []}
