"""A real nats-server puts every symbol exactly where core/partition.py says: through a stream's subject
transform (jetstream mode), through the server config's mapping (core mode), and through both at once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig, SubjectTransform

from spark_ml.core import subjects
from spark_ml.core.partition import (
    DEFAULT_PARTITIONS,
    PART_PREFIX,
    part_subject,
    partition_of,
    server_mappings,
    stream_transform,
)
from spark_ml.worker.natsserver import NatsServer
from tests.support.connections import connected

# Plain tickers and symbols that need escapes (dots, wildcards, %, non-ASCII): the server hashes the token.
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_/:=.*>%éü€"


def _symbols(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < count:
        out.add("".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 12))))
    return sorted(out)


async def _stored_subjects(nc: Client, partitions: int, stream: str, symbols: list[str]) -> dict[str, str]:
    """Create ``stream`` with the partition transform, publish one snapshot per symbol, read back where each went."""
    js = nc.jetstream()
    info = await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[subjects.SNAPSHOT_WILDCARD],
            subject_transform=SubjectTransform(**stream_transform(partitions)),
        )
    )
    # An old server would ignore the field silently: the echoed config says it took it.
    assert info.config.subject_transform is not None
    assert info.config.subject_transform.dest == stream_transform(partitions)["dest"]
    stored: dict[str, str] = {}
    for symbol in symbols:
        ack = await js.publish(subjects.snapshot_for(symbol), symbol.encode())
        msg = await js.get_msg(stream, ack.seq)
        assert msg.data == symbol.encode()
        stored[symbol] = msg.subject or ""
    return stored


@pytest.mark.parametrize("partitions", [DEFAULT_PARTITIONS, 7])
async def test_a_streams_subject_transform_stores_each_symbol_in_its_partition(tmp_path: Path, partitions: int) -> None:
    symbols = _symbols(200, partitions)
    # A server without the mapping: only the stream partitions
    with NatsServer(store_dir=tmp_path / "nats") as server:
        async with connected(server.url) as nc:
            stored = await _stored_subjects(nc, partitions, "PART_T", symbols)
    assert stored == {s: part_subject(partition_of(s, partitions), s) for s in symbols}
    assert len({partition_of(s, partitions) for s in symbols}) == partitions  # every partition was hit


async def _routed(nc: Client, symbols: list[str], *, bare: bool = False) -> dict[str, str]:
    got: dict[str, str] = {}
    done = asyncio.Event()

    async def on(msg: Msg) -> None:
        got[msg.data.decode()] = msg.subject
        if len(got) == len(symbols) + bare:
            done.set()

    await nc.subscribe(subjects.SNAPSHOT_WILDCARD, cb=on)
    await nc.subscribe(subjects.SNAPSHOT, cb=on)
    for symbol in symbols:
        await nc.publish(subjects.snapshot_for(symbol), symbol.encode())
    if bare:
        await nc.publish(subjects.SNAPSHOT, b"<bare>")
    await asyncio.wait_for(done.wait(), 10)
    return dict(got)


async def test_the_server_mapping_routes_each_symbol_to_its_partition(tmp_path: Path) -> None:
    partitions = 5
    symbols = _symbols(200, 11)
    with NatsServer(store_dir=tmp_path / "nats", jetstream=False, mappings=server_mappings(partitions)) as server:
        async with connected(server.url) as nc:
            got = await _routed(nc, symbols, bare=True)
            # Nobody receives the unmapped subject: publishes to market.snapshot.<X> are delivered mapped only
            direct = await nc.subscribe(subjects.snapshot_for(symbols[0]))
            await nc.publish(subjects.snapshot_for(symbols[0]), b"again")
            await nc.flush()
            with pytest.raises(asyncio.TimeoutError):
                await direct.next_msg(timeout=0.3)
    assert got.pop("<bare>") == subjects.SNAPSHOT  # the bare subject is left alone (a worker forwards it)
    assert got == {s: part_subject(partition_of(s, partitions), s) for s in symbols}


async def test_the_test_server_maps_the_default_partitions(nc: Client, nats_server: NatsServer | None) -> None:
    if nats_server is None:
        pytest.skip("an external server (SPARK_ML_NATS_URL) has its own config")
    symbols = _symbols(200, 3)
    got = await _routed(nc, symbols)
    assert got == {s: part_subject(partition_of(s, DEFAULT_PARTITIONS), s) for s in symbols}
    # With the mapping on, the stream's transform no longer matches (the subject already has 5 tokens) and the
    # stream stores what the mapping made: the same subject, so both modes agree when P does.
    stored = await _stored_subjects(nc, DEFAULT_PARTITIONS, "PART_M", symbols[:50])
    assert stored == {s: part_subject(partition_of(s, DEFAULT_PARTITIONS), s) for s in symbols[:50]}
    assert all(v.startswith(PART_PREFIX + ".") for v in stored.values())
