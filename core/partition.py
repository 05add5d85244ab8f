"""Symbol partitions: NATS's own partition hash, the assignment of partitions to workers, their subjects.

A symbol's partition is what the server's subject mapping ``{{partition(P,1)}}`` computes for the symbol's
subject token (FNV-1a 32-bit of the token's UTF-8 bytes, modulo P), so publishers, the server, the stream's
subject transform and every worker agree on where a symbol lives (docs/SCALEOUT.md). Units are the P symbol
partitions plus one more, the forwarder of snapshots published on bare ``market.snapshot`` (unit P).

Pure: no I/O, no clock; every worker computes the same answers from the same inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from spark_ml.core.subjects import PREDICT, SNAPSHOT, symbol_token

__all__ = [
    "DEFAULT_PARTITIONS",
    "PART_PREFIX",
    "PREDICT_PART_PREFIX",
    "assign",
    "fnv1a32",
    "owner_map",
    "part_filter",
    "part_subject",
    "partition_of",
    "partition_of_subject",
    "predict_part",
    "published_subject",
    "server_mappings",
    "stream_transform",
    "units",
]

DEFAULT_PARTITIONS = 16
PART_PREFIX = f"{SNAPSHOT}.part"
"""Partitioned snapshots live on ``market.snapshot.part.<n>.<SYMBOL>``."""
PREDICT_PART_PREFIX = f"{PREDICT}.part"
"""The owner of partition n answers ``ml.predict.part.<n>``."""

_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1a32(data: bytes) -> int:
    """FNV-1a 32-bit of ``data``: Go's ``hash/fnv`` New32a, the hash behind the server's ``partition()``."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & 0xFFFFFFFF
    return h


def partition_of(symbol: str, partitions: int) -> int:
    """The partition of ``symbol``: the server's ``{{partition(P,1)}}`` of ``market.snapshot.<token>``.

    The hash covers the symbol's subject token (:func:`symbol_token`, so ``BRK.B`` hashes ``BRK%2EB``), since
    that token is what the server sees. ``partitions`` must be >= 1.
    """
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return fnv1a32(symbol_token(symbol).encode()) % partitions


def partition_of_subject(subject: str, partitions: int) -> int:
    """The server's ``{{partition(P)}}`` without wildcard indexes: the hash of the whole subject (tests, tooling)."""
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    return fnv1a32(subject.encode()) % partitions


def units(partitions: int) -> int:
    """The number of owned units: the P symbol partitions and the forwarder (unit index P)."""
    return partitions + 1


def part_subject(n: int, symbol: str) -> str:
    """Where partition ``n`` carries ``symbol``'s snapshots: ``market.snapshot.part.<n>.<token>``."""
    return f"{PART_PREFIX}.{n}.{symbol_token(symbol)}"


def part_filter(n: int) -> str:
    """The subscription (or consumer filter) of partition ``n``: ``market.snapshot.part.<n>.*``."""
    return f"{PART_PREFIX}.{n}.*"


def predict_part(n: int) -> str:
    """The request subject the owner of partition ``n`` answers: ``ml.predict.part.<n>``."""
    return f"{PREDICT_PART_PREFIX}.{n}"


def published_subject(subject: str) -> str:
    """The subject a snapshot was published on: ``market.snapshot.part.<n>.<X>`` -> ``market.snapshot.<X>``.

    The server's mapping (or the stream's transform) puts the partition in the subject; what a publisher
    and an operator know is the subject before it, so dead letters report that one. Others are returned as is.
    """
    if subject.startswith(PART_PREFIX + "."):
        n, dot, token = subject[len(PART_PREFIX) + 1 :].partition(".")
        if dot and n.isdigit() and token and "." not in token:
            return f"{SNAPSHOT}.{token}"
    return subject


def _dest(partitions: int) -> str:
    return f"{PART_PREFIX}.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}"


def server_mappings(partitions: int) -> dict[str, str]:
    """The server (or account) config ``mappings`` that partitions core-mode snapshots.

    ``market.snapshot.<X>`` is delivered on ``market.snapshot.part.<partition_of(X)>.<X>``; bare
    ``market.snapshot`` and subjects of other lengths are untouched (``*`` matches one token only).
    """
    return {f"{SNAPSHOT}.*": _dest(partitions)}


def stream_transform(partitions: int) -> dict[str, str]:
    """The stream ``subject_transform`` (``{"src", "dest"}``) doing the same as :func:`server_mappings`."""
    return {"src": f"{SNAPSHOT}.*", "dest": _dest(partitions)}


def _score(member: str, unit: int) -> bytes:
    return hashlib.blake2b(f"{unit}\x00{member}".encode(), digest_size=8).digest()


def _rank(member: str) -> bytes:
    return hashlib.blake2b(member.encode(), digest_size=8, person=b"spark-ml-rank").digest()


def assign(members: Iterable[str], units: int) -> dict[str, list[int]]:
    """Which units (``0 .. units-1``) each member owns: every unit exactly one owner, counts within 1.

    A pure function of the member *set* (order and duplicates do not matter), so every worker computes the
    same map. Rendezvous hashing with bounded loads: the (member, unit) pairs are taken in order of a hash
    score and a unit goes to the first member that still has room; ``units % n`` members (picked by a hash of
    their name) have room for one unit more than the others. Unlike orbit.go's contiguous split of the sorted
    members (which can move every unit when one member joins, since names shift the runs), a joining member
    takes about its share and only a few other units change hands (tests/core/test_partition.py measures it),
    so a join or a death moves little state. Members beyond ``units`` own nothing (an empty list).
    """
    ms = sorted(set(members))
    if not ms:
        return {}
    per, extra = divmod(units, len(ms))
    room = dict.fromkeys(ms, per)
    for m in sorted(ms, key=lambda m: (_rank(m), m))[:extra]:
        room[m] += 1
    pairs = sorted(((_score(m, u), m, u) for m in ms for u in range(units)), reverse=True)
    owned: dict[str, list[int]] = {m: [] for m in ms}
    taken: set[int] = set()
    for _, m, u in pairs:
        if u not in taken and room[m]:
            taken.add(u)
            room[m] -= 1
            owned[m].append(u)
    for us in owned.values():
        us.sort()
    return owned


def owner_map(assignment: dict[str, list[int]]) -> dict[int, str]:
    """The inverse of :func:`assign`: unit -> member."""
    return {u: m for m, us in assignment.items() for u in us}
